"""Following a gallery image version while Azure creates and replicates it (no Airflow import).

One reading of the version (``GET ... ?$expand=ReplicationStatus``: its ``provisioningState`` and
the state and progress per target region) becomes a :class:`Reading`; :func:`outcome_of` says
whether the wait is over. The same two are used by the synchronous wait of
``PublishSteps.publish`` (in the worker) and by :func:`follow_replication`, the asynchronous wait
the Airflow trigger (``bakery.triggers.replication``) runs in the triggerer with the SDK's ``aio``
client. The outcome is a small JSON-able dict (a trigger event's payload):

    {"status": "succeeded" | "failed" | "deadline" | "error", "version": ..., "state": <provisioningState>,
     "regions": [{"region", "state", "progress", "details"}], "message": ..., "seconds": <waited>,
     "id": <the version's resource id, when succeeded>}
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bakery.targets.azure.common import IN_PROGRESS, error_text, is_not_found, text

EXPAND = "ReplicationStatus"
Log = Callable[[str], None]


@dataclass(frozen=True)
class RegionStatus:
    region: str
    state: str
    progress: int
    details: str = ""

    def line(self) -> str:
        return (f"publish: replication to {self.region}: {self.state} {self.progress}%"
                + (f": {self.details}" if self.details else ""))


@dataclass(frozen=True)
class Reading:
    """What one GET of the version (with ``$expand=ReplicationStatus``) says; ``state`` is "" when
    the version does not exist."""

    state: str
    regions: tuple[RegionStatus, ...] = ()
    id: str = ""

    @classmethod
    def of(cls, version: Any) -> Reading:
        """From an SDK ``GalleryImageVersion`` (sync and aio models are the same), or None (404)."""
        if version is None:
            return cls(state="")
        status = getattr(version, "replication_status", None)
        regions = tuple(RegionStatus(region=str(s.region), state=text(s.state), progress=int(s.progress or 0),
                                     details=str(getattr(s, "details", None) or ""))
                        for s in getattr(status, "summary", None) or [])
        return cls(state=text(version.provisioning_state) or "Succeeded", regions=regions, id=str(version.id or ""))


def outcome_of(reading: Reading, version: str) -> dict[str, Any] | None:
    """The end of the wait (a dict, see the module doc), or None while the version is being made."""
    if reading.state.lower() in IN_PROGRESS - {"deleting"}:
        return None
    regions = [asdict(r) for r in reading.regions]
    if reading.state.lower() == "succeeded":
        return {"status": "succeeded", "version": version, "state": reading.state, "regions": regions, "message": "",
                "id": reading.id}
    if not reading.state:
        message = f"gallery image version {version} disappeared while it was being published (deleted by someone?)"
    else:
        failed = [f"{r.region}: {r.state}{f' ({r.details})' if r.details else ''}"
                  for r in reading.regions if r.state.lower() != "completed"]
        message = (f"gallery image version {version} ended {reading.state}"
                   + (f"; replication: {'; '.join(failed)}" if failed else ""))
    return {"status": "failed", "version": version, "state": reading.state, "regions": regions, "message": message}


def deadline_outcome(reading: Reading | None, version: str, timeout: float) -> dict[str, Any]:
    return {"status": "deadline", "version": version, "state": reading.state if reading else "",
            "regions": [asdict(r) for r in (reading.regions if reading else ())],
            "message": (f"gallery image version {version} is still replicating after {timeout:.0f}s (the publish "
                        "deadline). Azure goes on replicating it: a retry of this task adopts the version once it "
                        "is done and creates no second one")}


class ProgressLog:
    """Logs a region's line only when its state or progress changed since the last reading."""

    def __init__(self, version: str, log: Log) -> None:
        self.version = version
        self.log = log
        self.seen: dict[str, tuple[str, int]] = {}

    def __call__(self, reading: Reading) -> None:
        for r in reading.regions:
            if self.seen.get(r.region) != (r.state, r.progress):
                self.seen[r.region] = (r.state, r.progress)
                self.log(r.line())


async def read_async(compute: Any, gallery: tuple[str, str, str], version: str) -> Reading:
    """One reading with an ``azure.mgmt.compute.aio.ComputeManagementClient``."""
    try:
        v = await compute.gallery_image_versions.get(*gallery, version, expand=EXPAND)
    except Exception as exc:
        if is_not_found(exc):
            return Reading(state="")
        raise
    return Reading.of(v)


async def follow_replication(compute: Any, gallery: tuple[str, str, str], version: str, *, deadline: float,
                             timeout: float, interval: float, log: Log) -> dict[str, Any]:
    """Read the version every ``interval`` seconds until it is done, failed, or ``deadline`` (a
    ``time.time()``) has passed; return the outcome. A reading that fails (after the SDK's own
    retries) is logged and tried again at the next interval; ``timeout`` only words the message."""
    from azure.core.exceptions import AzureError

    started = time.monotonic()
    progress = ProgressLog(version, log)
    reading: Reading | None = None
    while True:
        try:
            reading = await read_async(compute, gallery, version)
        except AzureError as exc:
            log(f"publish: could not read the replication status of {version} ({error_text(exc)}); trying again")
        else:
            progress(reading)
            outcome = outcome_of(reading, version)
            if outcome is not None:
                return {**outcome, "seconds": round(time.monotonic() - started, 1)}
        if time.time() >= deadline:
            return {**deadline_outcome(reading, version, timeout), "seconds": round(time.monotonic() - started, 1)}
        await asyncio.sleep(max(0.0, min(interval, deadline - time.time())))
