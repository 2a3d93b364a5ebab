"""Where a bake's packages come from, decided from the run before anything is built.

One rule, in this order:

1. **pool@<version>**: the bakery baked this very version before and still keeps its pool index
   (the version is published, or was pruned less than ``retention_days`` ago): install exactly
   that package set again, from the pool, on the base image it was built on.
2. A **backfill** run of a date the pool does not know: **snapshot@<timestamp>**, the public
   date-addressed archive of every mirror (catalogue ``snapshot`` URL templates) as of the run's
   logical date; without one, the run fails here with a message saying what to do, unless the
   user asked for ``allow_current_inputs``: then **current@<time>**, said so in the metadata.
3. Every other run (scheduled, manual): **current@<time>**, the live mirrors now.

:func:`guest_apt_config` turns the decision into the guest's ``sources.list`` (pointing at the
package server of the build, :mod:`bakery.packages.server`) and apt options. No Airflow import.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # only annotations here: the catalogue (read at DAG parse) imports this module for Mirror
    from bakery.packages.pool import PackagePool, PoolIndex

SNAPSHOT_TIME_FORMAT = "%Y%m%dT%H%M%SZ"


class InputsError(RuntimeError):
    """No way to get the inputs a run asks for (raised before any build)."""


@dataclass(frozen=True)
class Mirror:
    url: str
    suites: tuple[str, ...]
    components: tuple[str, ...] = ("main",)
    snapshot: str | None = None  # URL template with {timestamp}
    trusted: bool = False  # unsigned archive (test mirrors): apt's [trusted=yes]
    signed_by: str | None = None  # the guest's keyring for this archive: apt's [signed-by=...]

    def snapshot_url(self, when: datetime) -> str:
        if not self.snapshot:
            raise InputsError(f"mirror {self.url} has no snapshot URL")
        return self.snapshot.format(timestamp=when.astimezone(timezone.utc).strftime(SNAPSHOT_TIME_FORMAT)).rstrip("/")


@dataclass(frozen=True)
class Inputs:
    kind: str  # pool | snapshot | current
    ref: str  # the version (pool), the timestamp (snapshot, current)
    base_digest: str | None = None  # pool: the base image the version was built on
    mirror_urls: tuple[str, ...] = ()  # record mode: where the package server fetches from

    @property
    def label(self) -> str:
        return f"{self.kind}@{self.ref}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mirror_urls": list(self.mirror_urls), "label": self.label}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inputs:
        return cls(kind=data["kind"], ref=data["ref"], base_digest=data.get("base_digest"),
                   mirror_urls=tuple(data.get("mirror_urls") or ()))


def _stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime(SNAPSHOT_TIME_FORMAT)


def resolve_inputs(
    *,
    image: str,
    version: str,
    run_type: str,
    logical_date: datetime | None,
    now: datetime,
    mirrors: Sequence[Mirror],
    pool: PackagePool,
    retention_days: float,
    allow_current_inputs: bool = False,
) -> Inputs:
    index = pool.index(image, version)
    if index is not None and index.usable(retention_days, now):
        return Inputs("pool", version, base_digest=index.base_digest)
    if run_type == "backfill":
        when = logical_date or now
        if mirrors and all(m.snapshot for m in mirrors):
            return Inputs("snapshot", _stamp(when), mirror_urls=tuple(m.snapshot_url(when) for m in mirrors))
        if not allow_current_inputs:
            raise InputsError(_no_inputs_message(image, version, when, index, retention_days, mirrors))
    return Inputs("current", _stamp(now), mirror_urls=tuple(m.url.rstrip("/") for m in mirrors))


def _no_inputs_message(image: str, version: str, when: datetime, index: PoolIndex | None,
                       retention_days: float, mirrors: Sequence[Mirror]) -> str:
    why = (f"its pool index expired on {index.expires(retention_days):%Y-%m-%d} ({retention_days:g} days after "
           f"the version was pruned)" if index is not None else "the bakery never baked it (no pool index)")
    no_snap = [m.url for m in mirrors if not m.snapshot] or ["(no package mirrors in the catalogue)"]
    return (
        f"cannot rebuild {image} {version} as of {when:%Y-%m-%d %H:%M} UTC: {why}, and no public snapshot "
        f"archive is configured for {', '.join(no_snap)} (catalogue: packages.mirrors[].snapshot). Nothing was "
        "built. To proceed: add a snapshot URL template for every mirror, or trigger the backfill again with "
        "the Param allow_current_inputs=true to bake today's packages under that date's version (its metadata "
        "then says inputs: current@<time>)."
    )


def guest_apt_config(inputs: Inputs, mirrors: Sequence[Mirror], server_url: str) -> tuple[str, str]:
    """(sources.list, apt.conf) for the build guest, both pointing at the package server."""
    if inputs.kind == "pool":
        sources = f"deb [trusted=yes] {server_url}/r/ ./\n"
        conf = 'Acquire::Languages "none";\n'
        return sources, conf
    lines = []
    for n, m in enumerate(mirrors):
        # signed-by: apt checks the archive against that one keyring, not every key of trusted.gpg.d through
        # apt-key (benchmarks/package_cache.py, under TCG: a warm apt-get update of 3 indices 0.82 of the time)
        opts = " [trusted=yes]" if m.trusted else f" [signed-by={m.signed_by}]" if m.signed_by else ""
        for suite in m.suites:
            lines.append(f"deb{opts} {server_url}/u/{n}/ {suite} {' '.join(m.components)}")
    conf = 'Acquire::Languages "none";\n'
    if inputs.kind == "snapshot":
        conf += 'Acquire::Check-Valid-Until "false";\n'  # an archived Release is past its Valid-Until
    return "\n".join(lines) + "\n", conf


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
