"""Fixtures of the failure-guarantee tests (helpers: faultkit.py)."""

from __future__ import annotations

import pytest
from faultkit import Reaper


@pytest.fixture
def reaper():
    """Kills, at the end of the test, whatever it tracked that is still running."""
    r = Reaper()
    yield r
    r.cleanup()
