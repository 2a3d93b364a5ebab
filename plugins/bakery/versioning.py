"""Image version naming: deterministic from the DAG run, valid for Azure Compute Gallery.

Scheme (documented in the README): ``YEAR.MMDD.HHMMSSK`` written as three plain integers
(no leading zeros), which is what Azure accepts (``Major.Minor.Patch``, each a 32-bit int):

* scheduled and backfill runs use their **logical date** (UTC), K = 0: a backfill of a past
  date therefore produces exactly the version that date's nightly run would have produced;
* manual runs use their logical date when they have one, else their **run_after** time (Airflow
  3 manual runs may have no logical date), K = 1, so a manual run never collides with a scheduled
  run of the same second.

Versions order by time because each field is monotonic in the timestamp:
``2026.1128.200000`` (02:00:00 nightly) < ``2026.1128.1030001`` (10:30:00 manual).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

_MAX_INT32 = 2**31 - 1
_VERSION_RE = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")

SCHEDULED_KINDS = frozenset({"scheduled", "backfill"})


class VersionError(ValueError):
    pass


def version_for_run(
    *, run_type: str, logical_date: datetime | None, run_after: datetime | None
) -> str:
    """Version for a DAG run. ``run_type`` is Airflow's DagRunType value (str)."""
    kind = 0 if run_type in SCHEDULED_KINDS else 1
    when = logical_date if logical_date is not None else run_after
    if when is None:
        raise VersionError(
            f"cannot derive an image version: run of type {run_type!r} has neither a logical "
            "date nor a run_after time"
        )
    if kind == 0 and logical_date is None:
        raise VersionError(f"a {run_type} run must have a logical date to name its version")
    if when.tzinfo is None:
        raise VersionError(f"run time {when.isoformat()} has no time zone; expected UTC-aware")
    when = when.astimezone(timezone.utc)
    patch = (when.hour * 10000 + when.minute * 100 + when.second) * 10 + kind
    return f"{when.year}.{when.month * 100 + when.day}.{patch}"


def parse_version(version: str) -> tuple[int, int, int]:
    """Parse ``Major.Minor.Patch`` as Azure Compute Gallery accepts it; raise a clear error."""
    m = _VERSION_RE.match(version)
    if not m:
        raise VersionError(
            f"image version {version!r} is not of the form Major.Minor.Patch with plain "
            "non-negative integers (no leading zeros, no suffix), as Azure Compute Gallery requires"
        )
    parts = tuple(int(p) for p in m.groups())
    for p in parts:
        if p > _MAX_INT32:
            raise VersionError(
                f"image version {version!r}: component {p} exceeds 2147483647 (32-bit int)"
            )
    return parts  # type: ignore[return-value]


def version_key(version: str) -> tuple[int, int, int]:
    """Sort key: numeric, component by component (what Azure's `latest` uses)."""
    return parse_version(version)
