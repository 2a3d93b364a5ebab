"""Pruning an Azure image: the policy (pure) and its application to the gallery and managed images.

Keeps the N newest versions and every protected one (see :func:`plan_prune`), deletes the rest with
bounded concurrency, then the intermediate managed images whose gallery version is published
(``Succeeded``) or was just deleted - only those that still exist, so a kept version's image is
deleted once, not again on every run: the gallery holds its own copy of the image. SBOM blobs stay (an
audit trail; expire them with a lifecycle rule on the container if wanted).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bakery.channels import VersionState, pinned_by_channels
from bakery.targets.azure.common import (
    IMAGE_ID,
    IN_PROGRESS,
    TAG_REBUILT,
    AzureBase,
    AzureTargetError,
    VersionFacts,
    aware,
    delete_found,
    error_text,
    is_not_found,
)
from bakery.targets.base import Log
from bakery.versioning import version_key

PRUNE_CONCURRENCY = 4  # managed image deletes in flight at once (versions: the catalogue's azure.prune.concurrency)


@dataclass
class PrunePlan:
    delete: list[VersionFacts] = field(default_factory=list)
    keep: dict[str, str] = field(default_factory=dict)  # version -> why it stays


def latest_of(versions: Iterable[VersionFacts]) -> str | None:
    """The version Azure's ``latest`` resolves to (a VM created from the image definition's id without a
    version): the highest one not excluded from latest (``publishingProfile.excludeFromLatest``) and not
    Failed. None when every version is excluded."""
    candidates = [v for v in versions if not v.exclude_from_latest and v.state.lower() != "failed"]
    return max(candidates, key=lambda v: version_key(v.name)).name if candidates else None


def plan_prune(
    versions: Iterable[VersionFacts], keep: int, *, protect: Iterable[str] = (), min_age_hours: float = 0.0,
    now: datetime | None = None, backfill_protect_days: float = 0.0,
) -> PrunePlan:
    """Which versions to delete: all but the ``keep`` newest (numerically), except protected ones.

    Never deleted: the highest version; one in ``protect`` (the one just published); one a channel points
    at (``bakery.channels.pinned_by_channels``: stable, a candidate waiting for promotion); the one Azure's
    ``latest`` resolves to (the highest not excluded from latest: when newer versions are
    ``excludeFromLatest``, it is not among the newest); one tagged ``pinned=true``; one a backfill
    rebuilt less than ``backfill_protect_days`` ago (tag ``rebuilt_at``; its number is old, so
    keep-N-newest alone would delete it at once; a tag that is not an ISO time keeps the version too);
    one still being created/updated/deleted; one younger than ``min_age_hours`` (or of unknown age);
    one Azure would refuse to delete (safetyProfile: deletion of replicated locations not allowed and
    more than one region, or deletion blocked before its end of life).
    """
    if keep < 1:
        raise ValueError(f"prune: keep must be at least 1, got {keep}")
    now = now or datetime.now(UTC)
    ordered = sorted(versions, key=lambda v: version_key(v.name))
    protect = set(protect)
    newest = {v.name for v in ordered[-keep:]}
    latest = latest_of(ordered)
    channels = pinned_by_channels([VersionState(v.name, v.channel, v.exclude_from_latest, v.published,
                                                usable=v.state.lower() != "failed") for v in ordered])
    plan = PrunePlan()
    for i, v in enumerate(ordered):
        reason = None
        if v.name in protect:
            reason = "published by this run"
        elif i == len(ordered) - 1:
            reason = "the highest version"
        elif v.name in newest:
            reason = f"one of the {keep} newest"
        elif v.channel and v.name in channels:
            reason = channels[v.name]
        elif v.name == latest:
            excluded = [o.name for o in ordered[i + 1:] if o.exclude_from_latest]
            reason = (f"Azure's `latest` resolves to it: the highest version not excluded from latest "
                      f"({', '.join(excluded)} {'is' if len(excluded) == 1 else 'are'} excludeFromLatest)")
        elif v.pinned:
            reason = "pinned (tag pinned=true)"
        elif v.rebuilt_at and backfill_protect_days > 0 and (why := _rebuilt_reason(v.rebuilt_at, now,
                                                                                   backfill_protect_days)):
            reason = why
        elif v.state.lower() in IN_PROGRESS:
            reason = f"provisioning state {v.state}: an operation is still running on it"
        elif v.published is None:
            reason = "its publish date is unknown"
        elif now - v.published < timedelta(hours=min_age_hours):
            reason = f"younger than {min_age_hours:g} h (published {v.published.isoformat(timespec='seconds')})"
        elif v.allow_deletion_of_replicated_locations is False and v.regions > 1:
            reason = (f"safetyProfile.allowDeletionOfReplicatedLocations is false and it is replicated to "
                      f"{v.regions} regions: Azure refuses to delete it (remove its extra regions, or allow "
                      "their deletion, first)")
        elif v.block_deletion_before_end_of_life and v.end_of_life is not None and v.end_of_life > now:
            reason = (f"safetyProfile.blockDeletionBeforeEndOfLife until its end of life "
                      f"{v.end_of_life.isoformat(timespec='seconds')}")
        if reason is None:
            plan.delete.append(v)
        else:
            plan.keep[v.name] = reason
    return plan


def _rebuilt_reason(tag: str, now: datetime, days: float) -> str | None:
    """Why a version rebuilt by a backfill (tag ``rebuilt_at``) is kept, or None once protection ended."""
    try:
        rebuilt = aware(tag)
    except (TypeError, ValueError):
        return (f"its tag {TAG_REBUILT}={tag!r} is not an ISO time: kept, as it may be a backfill's rebuild "
                f"younger than {days:g} days (fix or remove the tag)")
    if rebuilt is not None and now - rebuilt < timedelta(days=days):
        return (f"rebuilt by a backfill at {rebuilt.isoformat(timespec='seconds')}: protected for {days:g} days "
                f"after the rebuild (catalogue backfill.protect_days), until "
                f"{(rebuilt + timedelta(days=days)).isoformat(timespec='seconds')}")
    return None


class PruneSteps(AzureBase):
    """``prune``: versions by :func:`plan_prune`, then the intermediate managed images."""

    def _own_image(self, image: str, source_id: str | None) -> tuple[str, str] | None:
        """(resource group, name) of a managed image this bakery made for ``image``, else None."""
        m = IMAGE_ID.match(source_id or "")
        if not m or m["rg"].lower() != self.cfg.managed_image_resource_group.lower():
            return None
        if not re.fullmatch(re.escape(image) + r"-\d+-\d+-\d+", m["name"]):
            return None
        return m["rg"], m["name"]

    def _existing_images(self) -> set[str]:
        """``<resource group>/<name>`` (lower case) of the managed images in ``managed_image_resource_group``."""
        rg = self.cfg.managed_image_resource_group
        try:
            return {f"{rg}/{i.name}".lower() for i in self.az.compute.images.list_by_resource_group(rg)}
        except Exception as exc:
            if is_not_found(exc):
                return set()
            raise

    def prune(self, image: str, keep: int, *, protect: set[str], dry_run: bool, log: Log,
              backfill_protect_days: float = 7.0) -> list[str]:
        facts = self._facts()
        if not facts:
            log(f"prune {image}: no gallery image versions")
            return []
        min_age = float(self.cfg.prune_min_age_hours)
        plan = plan_prune(facts, keep, protect=protect, min_age_hours=min_age, now=self.now(),
                          backfill_protect_days=backfill_protect_days)
        for name, why in plan.keep.items():
            log(f"prune {image}: keeping {name}: {why}")
        doomed = plan.delete
        kept = [f for f in facts if f.name in plan.keep]
        existing = self._existing_images()
        images: dict[str, tuple[str, str]] = {}
        for f in doomed + [k for k in kept if k.state.lower() == "succeeded"]:
            own = self._own_image(image, f.source_id)
            if own is not None and f"{own[0]}/{own[1]}".lower() in existing:
                images[f"{own[0]}/{own[1]}".lower()] = own
        if dry_run:
            for f in doomed:
                log(f"prune {image}: would delete version {f.name} (dry run)")
            for rg, name in images.values():
                log(f"prune {image}: would delete managed image {rg}/{name} (dry run)")
            return [f.name for f in doomed]

        failures: list[str] = []
        deleted: list[str] = []

        def delete_version(f: VersionFacts) -> str:
            self._delete_version(f.name)
            return f.name

        workers = int(getattr(self.cfg, "prune_concurrency", PRUNE_CONCURRENCY))
        if doomed:
            log(f"prune {image}: deleting {len(doomed)} version(s), at most {min(workers, len(doomed))} at a time")
        for name, error in self._bounded(delete_version, doomed, workers):
            if error is None:
                deleted.append(name)
                log(f"prune {image}: deleted version {name}")
            else:
                failures.append(f"version {name}: {error}")

        def delete_image(own: tuple[str, str]) -> str:
            label = f"{own[0]}/{own[1]}"
            return label if delete_found(self.az.compute.images.begin_delete, own[0], own[1]) else f"-{label}"

        for label, error in self._bounded(delete_image, list(images.values())):
            if error is not None:
                failures.append(f"managed image {label}: {error}")
            elif label.startswith("-"):
                log(f"prune {image}: managed image {label[1:]} was already gone")
            else:
                log(f"prune {image}: deleted intermediate managed image {label} (its gallery version holds the copy)")
        kept_names = [f.name for f in facts if f.name not in set(deleted)]
        log(f"prune {image}: kept {len(kept_names)} version(s): {', '.join(kept_names)}")
        if failures:
            raise AzureTargetError(f"prune {image}: some deletions failed:\n  - " + "\n  - ".join(failures))
        return deleted

    def _bounded(self, fn: Callable[[Any], str], items: list[Any],
                 workers: int = PRUNE_CONCURRENCY) -> list[tuple[str, str | None]]:
        """Run ``fn`` on every item, at most ``workers`` at a time: [(label, error or None)]."""
        if not items:
            return []
        results: list[tuple[str, str | None]] = []
        with ThreadPoolExecutor(max_workers=min(workers, len(items)),
                                thread_name_prefix="bakery-prune") as pool:
            futures = [(item, pool.submit(fn, item)) for item in items]
            for item, fut in futures:
                label = getattr(item, "name", None) or (f"{item[0]}/{item[1]}" if isinstance(item, tuple) else str(item))
                try:
                    results.append((fut.result(), None))
                except Exception as exc:  # noqa: BLE001 - collected, raised together after all ran
                    results.append((label, error_text(exc)))
        return results
