"""The janitor's Azure sweeper: what dead bakes left in Azure (see ``bakery.janitor``).

The Azure sweeper (``AzureSweeper``, one per connection and subscription of the catalogue's azure
images) finds what carries the bakery's tags (``managed_by=image-bakery``) and is older than the TTL
by its ``created_at`` tag (else ARM's ``createdTime``; of unknown age: kept and reported):

==================  ==========================================================================
``smoke-test``      a smoke-test VM and its NIC, public IP, NSG and OS disk (tags ``purpose=smoke-test``,
                    ``smoke_id``) in the images' smoke resource groups: deleted together, VM first,
                    like the teardown does (``AzureTarget.delete_smoke_group``)
``managed-image``   managed images in the images' ``managed_image_resource_group`` that are the source of
                    no gallery image version of the catalogue's galleries (an unpublished bake); never
                    one tagged ``pinned=true`` or of an image with ``keep_failed_image``; checked again
                    right before the delete
``packer-group``    Packer's temporary resource groups ``pkr-Resource-Group-*`` of the catalogue's images
                    (tags ``managed_by``, ``image``; age from ``created_at`` or the resources in it)
==================  ==========================================================================

Whatever the TTL, nothing younger than the longest a bake of those images may still use it (build
timeout + smoke-test timeout + 1 h) is removed: a short TTL cannot pull a build's group from under it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from bakery.janitor.policy import Finding, Log


PACKER_GROUP_PREFIX = "pkr-resource-group-"


def _epoch(value: Any) -> float | None:
    """An ISO-8601 time (a ``created_at`` tag, ARM's ``createdTime``) or datetime as epoch seconds."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _tags(obj: Any) -> dict[str, str]:
    return dict(getattr(obj, "tags", None) or {})


def _bake_of(tags: dict[str, str]) -> str:
    """``rhel9-nginx 2026.1128.200000 (DAG run ...)`` from a resource's tags, as far as they say."""
    what = " ".join(t for t in (tags.get("image"), tags.get("version")) if t) or "an unknown bake"
    return what + (f" (DAG run {tags['dag_run_id']})" if tags.get("dag_run_id") else "")


class AzureSweeper:
    """Azure leftovers of dead bakes of the catalogue images ``specs`` (one connection, one subscription).

    ``clients``: ``bakery.azure_clients.AzureClients`` or a zero-argument factory of them. Only what
    carries ``managed_by=image-bakery`` is ever considered; see the module doc for what and how.
    """

    def __init__(self, specs: Sequence[Any], clients: Any, *, name: str = "azure",
                 now: Callable[[], float] = time.time, log: Log = lambda m: None) -> None:
        from bakery.targets.azure import AzureTarget

        self.specs = [s for s in specs if getattr(s, "azure", None) is not None]
        if not self.specs:
            raise ValueError("the Azure sweeper needs at least one azure image of the catalogue")
        self.name = name
        self.now = now
        self.log = log
        # whatever the TTL: nothing younger than the longest a bake of these images may still use it
        # (its build timeout, its smoke test's timeout, an hour for the rest)
        self.floor_seconds = max(s.build_timeout_minutes * 60 + s.smoke_test.timeout_seconds for s in self.specs) + 3600
        self._target = AzureTarget(self.specs[0], clients)
        self._target_of = AzureTarget

    @property
    def az(self) -> Any:
        return self._target.az

    def _maybe_running(self, age: float | None) -> Callable[[], str | None]:
        def in_use() -> str | None:
            if age is not None and age < self.floor_seconds:
                return (f"a bake may still be using it: {age:.0f}s old, and a bake of these images may run "
                        f"{self.floor_seconds:.0f}s (build timeout + smoke-test timeout + 1 h)")
            return None

        return in_use

    def close(self) -> None:
        self._target.close()

    def find(self) -> Iterable[Finding]:
        now = self.now()
        yield from self._smoke_groups(now)
        yield from self._managed_images(now)
        yield from self._packer_groups(now)

    # --- smoke tests -------------------------------------------------------------------------------
    def _listed(self, rg: str, **kwargs: Any) -> list[Any]:
        from bakery.targets.azure import _is_not_found

        try:
            return list(self.az.resource.resources.list_by_resource_group(rg, **kwargs))
        except Exception as exc:
            if _is_not_found(exc):
                return []  # the resource group is not there: nothing of ours in it either
            raise

    def _smoke_groups(self, now: float) -> Iterable[Finding]:
        from bakery.targets.azure import MANAGED_BY

        for rg in sorted({s.azure.smoke_test.resource_group for s in self.specs}):
            groups: dict[str, list[Any]] = {}
            # listed whole and matched here: ARM leaves the tags out of a list filtered by tag name and
            # value, so reading the tags of such a list finds nothing, and leaked VMs would stay forever
            for res in self._listed(rg):
                tags = _tags(res)
                if tags.get("managed_by") == MANAGED_BY and tags.get("purpose") == "smoke-test" and tags.get("smoke_id"):
                    groups.setdefault(tags["smoke_id"], []).append(res)
            for smoke_id, members in sorted(groups.items()):
                born = [t for t in (_epoch(_tags(r).get("created_at")) for r in members) if t is not None]
                tags = _tags(members[0])
                what = ", ".join(sorted(f"{str(r.type).split('/')[-1]}/{r.name}" for r in members))
                age = now - min(born) if born else None
                yield Finding(
                    self.name, "smoke-test", f"{rg}/{smoke_id}", age,
                    f"smoke test of {_bake_of(tags)}: {what} (and its OS disk)",
                    in_use=self._maybe_running(age),
                    remove=lambda rg=rg, smoke_id=smoke_id: self._remove_smoke(rg, smoke_id),
                )

    def _remove_smoke(self, rg: str, smoke_id: str) -> str:
        deleted = self._target.delete_smoke_group(rg, smoke_id, self.log)
        return f"deleted {', '.join(deleted)}" if deleted else "already gone"

    # --- managed images ----------------------------------------------------------------------------
    def _gallery_sources(self) -> set[str]:
        """Source image ids (lower case) of every version of the catalogue's gallery image definitions."""
        sources: set[str] = set()
        seen: set[tuple[str, str, str]] = set()
        for spec in self.specs:
            g = spec.azure.gallery
            key = (g.resource_group.lower(), g.name.lower(), g.image_definition.lower())
            if key in seen:
                continue
            seen.add(key)
            target = self._target_of(spec, self.az)
            sources.update(f.source_id.lower() for f in target._facts() if f.source_id)
        return sources

    def _managed_images(self, now: float) -> Iterable[Finding]:
        from bakery.targets.azure import MANAGED_BY, TAG_PINNED

        sources = self._gallery_sources()  # a failure here fails the sweeper: never guess "unpublished"
        keep_failed = {s.name for s in self.specs if s.azure.keep_failed_image}
        for rg in sorted({s.azure.managed_image_resource_group for s in self.specs}):
            for res in self._listed(rg, filter="resourceType eq 'Microsoft.Compute/images'", expand="createdTime"):
                tags = _tags(res)
                if tags.get("managed_by") != MANAGED_BY or str(res.id).lower() in sources:
                    continue
                born = _epoch(tags.get("created_at")) or _epoch(getattr(res, "created_time", None))
                age = None if born is None else now - born
                yield Finding(
                    self.name, "managed-image", str(res.id), age,
                    f"managed image {rg}/{res.name} of {_bake_of(tags)}: the source of no gallery image version",
                    in_use=self._image_in_use(res, tags, keep_failed, TAG_PINNED, sources, self._maybe_running(age)),
                    remove=lambda rg=rg, name=res.name: self._remove_image(rg, name),
                )

    def _image_in_use(self, res: Any, tags: dict[str, str], keep_failed: set[str], pinned_tag: str,
                      sources: set[str], running: Callable[[], str | None]) -> Callable[[], str | None]:
        """Why the image must stay; asked when found (against ``sources``) and again right before its
        delete (against the galleries as they are then: a publish may have started meanwhile)."""
        asked = []

        def in_use() -> str | None:
            if tags.get(pinned_tag, "").strip().lower() == "true":
                return f"tagged {pinned_tag}=true"
            if tags.get("image") in keep_failed:
                return f"image {tags.get('image')} has azure.keep_failed_image in the catalogue"
            if why := running():
                return why
            current = sources if not asked else self._gallery_sources()
            asked.append(True)
            if str(res.id).lower() in current:
                return "the source of a gallery image version (published meanwhile)"
            return None

        return in_use

    def _remove_image(self, rg: str, name: str) -> str | None:
        from bakery.targets.azure import delete_found

        # ARM answers 204 to the DELETE of an image that is not there: only a 200/202 removed one
        return None if delete_found(self.az.compute.images.begin_delete, rg, name) else "already gone"

    # --- Packer's temporary resource groups --------------------------------------------------------
    def _packer_groups(self, now: float) -> Iterable[Finding]:
        from bakery.targets.azure import MANAGED_BY

        images = {s.name for s in self.specs}
        for group in self.az.resource.resource_groups.list():
            tags = _tags(group)
            if not str(group.name).lower().startswith(PACKER_GROUP_PREFIX) or tags.get("managed_by") != MANAGED_BY:
                continue
            if tags.get("image") not in images:
                continue  # another connection's (or a removed image's) build: not this sweeper's to judge
            born = _epoch(tags.get("created_at"))
            if born is None:  # a Packer of an older template: the oldest resource in it dates the group
                times = [_epoch(getattr(r, "created_time", None)) for r in self._listed(group.name, expand="createdTime")]
                born = min((t for t in times if t is not None), default=None)
            age = None if born is None else now - born
            yield Finding(
                self.name, "packer-group", str(group.name), age,
                f"Packer's temporary resource group of {_bake_of(tags)}",
                in_use=self._maybe_running(age),
                remove=lambda name=group.name: self._remove_group(name),
            )

    def _remove_group(self, name: str) -> str | None:
        from bakery.targets.azure import delete_found

        return None if delete_found(self.az.resource.resource_groups.begin_delete, name) else "already gone"


def azure_sweepers(specs: Sequence[Any], clients: Any, *, name: str = "azure", log: Log = lambda m: None) -> list[Any]:
    """The Azure sweepers for the catalogue images ``specs`` reached through ``clients`` (one list: one
    connection and subscription)."""
    return [AzureSweeper(specs, clients, name=name, log=log)]
