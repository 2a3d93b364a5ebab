"""Where the bakery keeps its state on this machine (local target, work folders, base images)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def bakery_home() -> Path:
    """``$BAKERY_HOME``, default ``<repo>/var``."""
    return Path(os.environ.get("BAKERY_HOME") or REPO_ROOT / "var").resolve()


def gallery_root() -> Path:
    return Path(os.environ.get("BAKERY_GALLERY") or bakery_home() / "gallery").resolve()


def work_root() -> Path:
    return bakery_home() / "work"
