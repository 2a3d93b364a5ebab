"""Release channels of an image: candidate -> stable, and rollback. Pure policy, no I/O, no Airflow.

With a ``channels`` block in its catalogue entry, an image's new version is published as a
**candidate**: excluded from ``latest`` (Azure: ``publishingProfile.excludeFromLatest``; local: the
gallery's ``latest`` link follows the same rule), so what users get as ``latest`` does not move.

- **promote** makes a candidate **stable** and lets ``latest`` resolve to it: the newest candidate
  above the current stable that has soaked the catalogue's ``soak_hours`` (scheduled), or a version
  named by hand (any soak). Never a version below the current stable (that is a rollback).
- **rollback** makes an older version stable again: every version above it is excluded from
  ``latest`` and becomes **withdrawn**, so no scheduled promotion brings it back; the next
  promotion is of a version baked after the rollback, or one named by hand.

``latest`` is Azure's rule on both targets: the highest version not excluded from latest. Versions
published before the image had channels have no channel and are not excluded.

Every change is a :class:`Change` (who, when, from which run, why); the targets apply and record them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from bakery.versioning import parse_version, version_key

CANDIDATE, STABLE, WITHDRAWN = "candidate", "stable", "withdrawn"
SUPERSEDED = "superseded"  # a former stable after a promotion (still allowed to be what rollback names)


class ChannelError(ValueError):
    """A promotion or rollback that cannot be done (the message says what and why)."""


@dataclass(frozen=True)
class VersionState:
    """One published version as the channels see it."""

    version: str
    channel: str | None = None  # None: published before the image had channels
    exclude_from_latest: bool = False
    published: datetime | None = None  # when it was published (soak is counted from here)
    smoke_passed: bool | None = None
    usable: bool = True  # False: the target cannot serve it (Azure: provisioning Failed)


@dataclass(frozen=True)
class Change:
    """One channel change of one version, as recorded (who, when, from which run, why)."""

    version: str
    channel: str
    exclude_from_latest: bool
    action: str  # publish / promote / rollback
    by: str
    at: str  # ISO-8601 UTC
    run_id: str = ""
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """The change as the targets log it."""
        return (f"{self.version}: {self.channel}{' (excluded from latest)' if self.exclude_from_latest else ''}"
                f" - {self.reason} (by {self.by}, run {self.run_id or '-'})")


@dataclass(frozen=True)
class Actor:
    """Who changes channels: the user who triggered the run (``scheduler`` for scheduled runs)."""

    by: str
    at: datetime
    run_id: str = ""


def ordered(states: Iterable[VersionState]) -> list[VersionState]:
    return sorted(states, key=lambda s: version_key(s.version))


def latest_of(states: Iterable[VersionState]) -> str | None:
    """What ``latest`` resolves to: the highest usable version not excluded from latest (Azure's rule)."""
    eligible = [s for s in ordered(states) if s.usable and not s.exclude_from_latest]
    return eligible[-1].version if eligible else None


def stable_of(states: Iterable[VersionState]) -> str | None:
    """The version the ``stable`` channel points at (the highest one marked stable)."""
    stable = [s for s in ordered(states) if s.channel == STABLE]
    return stable[-1].version if stable else None


def pinned_by_channels(states: Iterable[VersionState]) -> dict[str, str]:
    """Versions prune must keep because a channel points at them -> why: ``stable``, what ``latest``
    resolves to, and every candidate above stable (waiting for its promotion)."""
    states = ordered(states)
    stable, latest = stable_of(states), latest_of(states)
    out: dict[str, str] = {}
    for s in states:
        if s.version == stable:
            out[s.version] = "the stable channel points at it"
        elif s.version == latest:
            out[s.version] = "`latest` resolves to it (the highest version not excluded from latest)"
        elif s.channel == CANDIDATE and (stable is None or version_key(s.version) > version_key(stable)):
            out[s.version] = "a candidate waiting for promotion"
    return out


def published_change(version: str, actor: Actor, *, channels: bool) -> Change | None:
    """The channel of a version being published (None: the image has no channels)."""
    if not channels:
        return None
    return Change(version, CANDIDATE, True, "publish", actor.by, _iso(actor.at), actor.run_id,
                  "published as a candidate: `latest` does not move until it is promoted")


def plan_promote(states: Iterable[VersionState], actor: Actor, *, soak_hours: float,
                 version: str | None = None) -> tuple[list[Change], str]:
    """The changes that promote ``version`` (or, without one, the newest candidate above stable that has
    soaked ``soak_hours``), and a sentence saying what happens. No changes: nothing to promote (the
    sentence says why). Raises :class:`ChannelError` for a version that cannot be promoted."""
    states = ordered(states)
    by_version = {s.version: s for s in states}
    stable = stable_of(states)
    if version:
        parse_version(version)
        chosen = by_version.get(version)
        if chosen is None:
            raise ChannelError(f"cannot promote {version}: no such published version "
                               f"(published: {', '.join(by_version) or 'none'})")
        if stable is not None and version_key(version) < version_key(stable):
            raise ChannelError(f"cannot promote {version}: it is below the stable version {stable}; "
                               "to make an older version stable, trigger the rollback DAG with it")
        if version == stable and not chosen.exclude_from_latest:
            return [], f"{version} is already stable: nothing to change"
        why = "named by the run"
    else:
        cutoff = actor.at - timedelta(hours=soak_hours)
        waiting = [s for s in states if s.channel == CANDIDATE
                   and (stable is None or version_key(s.version) > version_key(stable))]
        if not waiting:
            return [], f"no candidate above the stable version {stable or '(none yet)'}: nothing to promote"
        soaked = [s for s in waiting if s.published is not None and s.published <= cutoff]
        if not soaked:
            youngest = waiting[-1]
            return [], (f"no candidate has soaked {soak_hours:g} h yet (newest candidate {youngest.version}, "
                        f"published {_iso(youngest.published) if youngest.published else 'at an unknown time'}): "
                        "nothing to promote")
        chosen = soaked[-1]
        why = f"the newest candidate that has soaked {soak_hours:g} h"
    if not chosen.usable:
        raise ChannelError(f"cannot promote {chosen.version}: the target cannot serve it (creation failed)")
    if chosen.smoke_passed is False:
        raise ChannelError(f"cannot promote {chosen.version}: its smoke test did not pass")
    at = _iso(actor.at)
    changes = [Change(chosen.version, STABLE, False, "promote", actor.by, at, actor.run_id, why)]
    if stable is not None and stable != chosen.version:
        changes.append(Change(stable, SUPERSEDED, False, "promote", actor.by, at, actor.run_id,
                              f"superseded by {chosen.version}"))
    # a higher version that latest would resolve to instead (not excluded: e.g. published before the image
    # had channels) is excluded, so that latest is the promoted version
    for s in states:
        if version_key(s.version) > version_key(chosen.version) and not s.exclude_from_latest:
            changes.append(Change(s.version, s.channel or CANDIDATE, True, "promote", actor.by, at, actor.run_id,
                                  f"excluded from latest: {chosen.version} was promoted below it"))
    return changes, f"promote {chosen.version} to stable ({why})"


def plan_rollback(states: Iterable[VersionState], actor: Actor, *, version: str) -> tuple[list[Change], str]:
    """The changes that make ``version`` stable and what ``latest`` resolves to: every version above it
    is excluded from latest and withdrawn (kept so until a later promotion)."""
    parse_version(version)
    states = ordered(states)
    by_version = {s.version: s for s in states}
    chosen = by_version.get(version)
    if chosen is None:
        raise ChannelError(f"cannot roll back to {version}: no such published version "
                           f"(published: {', '.join(by_version) or 'none'})")
    if not chosen.usable:
        raise ChannelError(f"cannot roll back to {version}: the target cannot serve it (creation failed)")
    if chosen.smoke_passed is False:
        raise ChannelError(f"cannot roll back to {version}: its smoke test did not pass")
    at = _iso(actor.at)
    changes = []
    if chosen.channel != STABLE or chosen.exclude_from_latest:
        changes.append(Change(version, STABLE, False, "rollback", actor.by, at, actor.run_id, "rolled back to"))
    for s in states:
        if version_key(s.version) > version_key(version) and (s.channel != WITHDRAWN or not s.exclude_from_latest):
            changes.append(Change(s.version, WITHDRAWN, True, "rollback", actor.by, at, actor.run_id,
                                  f"withdrawn: rolled back to {version}"))
    for s in states:  # an older stable below the version (after an earlier rollback) is superseded
        if s.channel == STABLE and version_key(s.version) < version_key(version):
            changes.append(Change(s.version, SUPERSEDED, s.exclude_from_latest, "rollback", actor.by, at,
                                  actor.run_id, f"superseded by {version}"))
    if not changes:
        return [], f"{version} is already stable and nothing above it is in latest: nothing to change"
    return changes, f"roll back to {version}: {len(changes) - 1} version(s) above it withdrawn from latest"


def _iso(when: datetime | None) -> str:
    """Microseconds: the history is ordered by it, and one run makes several changes within a second."""
    return when.isoformat(timespec="microseconds") if when else ""


def with_channel_marks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of ``Target.describe_versions`` (each with ``version``, ``channel``, ``exclude_from_latest``)
    with ``is_latest`` and ``is_stable`` set by the channels' rules."""
    states = [VersionState(r["version"], r.get("channel"), bool(r.get("exclude_from_latest")),
                           usable=str(r.get("provisioning_state") or "Succeeded").lower() == "succeeded")
              for r in rows]
    latest, stable = latest_of(states), stable_of(states)
    return [{**r, "is_latest": r["version"] == latest, "is_stable": r["version"] == stable} for r in rows]
