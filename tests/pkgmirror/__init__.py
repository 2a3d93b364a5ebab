"""A controllable "live Debian mirror" on loopback, for end-to-end tests of the nightly patch-rebake.

* `debian_closure(["nginx"], cache_dir)`: the real bookworm .debs nginx needs (downloaded, cached);
* `make_deb("bakery-canary", "1.0", out_dir)`: a tiny real package whose version the test controls;
* `LoopbackMirror(root)`: serves exactly what the test `publish()`es, as a bookworm archive at
  `.url` and as dated snapshots at `.snapshot_template`, and records every request;
* `deb_cache_dir()`: where tests keep the downloaded .debs between runs.
"""

from __future__ import annotations

import os
from pathlib import Path

from .closure import ClosureError, debian_closure
from .debs import control_fields, make_deb
from .server import TIMESTAMP, LoopbackMirror, MirrorState

REPO = Path(__file__).resolve().parents[2]


def deb_cache_dir() -> Path:
    """The .deb cache shared by tests: `$BAKERY_TEST_CACHE/debs`, else `<repo>/var/test-cache/debs`."""
    return Path(os.environ.get("BAKERY_TEST_CACHE") or REPO / "var" / "test-cache") / "debs"


__all__ = [
    "TIMESTAMP", "ClosureError", "LoopbackMirror", "MirrorState", "control_fields", "debian_closure",
    "make_deb", "deb_cache_dir",
]
