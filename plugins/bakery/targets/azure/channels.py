"""Channels on Azure (``bakery.channels``): a version's channel is its tag ``channel`` and its place in
``latest`` is ``publishingProfile.excludeFromLatest`` (Azure's ``latest``: the highest version not
excluded). A change is written to the version (GET, then PUT of the same version with the new tags and
flag, as ``az sig image-version update`` does) and its last change is in its ``channel_*`` tags; with
the catalogue's ``azure.sbom`` block every change is also appended to ``<image>/channels.jsonl`` in that
container (the full history, also of versions pruned since)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from bakery.catalogue import normalize_region
from bakery.channels import Change, VersionState, latest_of, stable_of
from bakery.targets.azure.common import (
    CHANNEL_TAGS,
    TAG_CHANNEL,
    TAG_VALUE_MAX,
    AzureBase,
    AzureTargetError,
    error_text,
    is_not_found,
    storage_error,
    tags_of,
    text,
)
from bakery.targets.base import Log

HISTORY_BLOB = "channels.jsonl"


def channel_tags(change: Change) -> dict[str, str]:
    """The tags that record ``change`` on its version."""
    data = change.to_dict()
    tags = {TAG_CHANNEL: change.channel, **{tag: str(data[key]) for key, tag in CHANNEL_TAGS.items()}}
    return {k: v[:TAG_VALUE_MAX] for k, v in tags.items()}


def change_from_tags(version: str, tags: dict[str, str], exclude_from_latest: bool) -> dict[str, Any] | None:
    """The last change a version's tags record (``Change.to_dict()``), or None."""
    if not tags.get(TAG_CHANNEL):
        return None
    return {"version": version, "channel": tags[TAG_CHANNEL], "exclude_from_latest": exclude_from_latest,
            **{key: tags.get(tag, "") for key, tag in CHANNEL_TAGS.items()}}


class ChannelSteps(AzureBase):
    """``channel_states``, ``change_channels``, ``channel_history`` and ``check_promotable``."""

    def channel_states(self, image: str) -> list[VersionState]:
        return [VersionState(f.name, f.channel, f.exclude_from_latest, f.published, f.smoke_passed,
                             usable=f.state.lower() != "failed") for f in self._facts()]

    def change_channels(self, image: str, plan, log: Log) -> list[Change]:
        """Apply ``plan(states)``'s changes: first those that put a version into ``latest``, then those
        that take one out (so that ``latest`` never resolves to nothing in between), each waited for."""
        changes, summary = plan(self.channel_states(image))
        log(f"{image}: {summary}")
        g_rg, g_name, g_def = self._gallery()
        for c in sorted(changes, key=lambda c: c.exclude_from_latest):
            v = self._get_version(c.version)
            if v is None:
                raise AzureTargetError(f"{g_name}/{g_def}/{c.version} disappeared before its channel change "
                                       f"({c.channel}) was written (pruned meanwhile?)")
            v.tags = {**tags_of(v), **channel_tags(c)}
            v.publishing_profile.exclude_from_latest = c.exclude_from_latest
            try:
                self.az.compute.gallery_image_versions.begin_create_or_update(g_rg, g_name, g_def, c.version, v).result()
            except Exception as exc:
                raise AzureTargetError(f"could not write the channel of {g_name}/{g_def}/{c.version} "
                                       f"({c.channel}, excludeFromLatest={c.exclude_from_latest}): {error_text(exc)}. "
                                       "Changes written before it stay; run the DAG again") from exc
            log(f"{image} {c.line()}")
        if changes:
            self._append_history(image, changes, log)
            states = self.channel_states(image)
            log(f"{image}: stable -> {stable_of(states) or '(none)'}, latest -> {latest_of(states) or '(none)'}")
        return changes

    def record_publish(self, image: str, change: Change | None, log: Log) -> None:
        """The history entry of a version published into a channel (its tags carry it already)."""
        if change is not None:
            self._append_history(image, [change], log)

    def _append_history(self, image: str, changes: list[Change], log: Log) -> None:
        container = self.blob_container()
        if container is None:
            return
        from azure.core import MatchConditions

        name = f"{image}/{HISTORY_BLOB}"
        lines = "".join(json.dumps(c.to_dict(), sort_keys=True) + "\n" for c in changes)
        for _ in range(5):  # read, append, write only if nobody wrote meanwhile (ETag)
            try:
                blob = container.download_blob(name)
                old, condition = blob.readall().decode(), {"etag": blob.properties.etag,
                                                           "match_condition": MatchConditions.IfNotModified}
            except Exception as exc:
                if not is_not_found(exc):
                    raise AzureTargetError(f"cannot read {name} from {self._blob_where()}: {storage_error(exc)}") from exc
                old, condition = "", {"match_condition": MatchConditions.IfMissing}
            try:
                container.upload_blob(name, (old + lines).encode(), overwrite=True, **condition)
                return
            except Exception as exc:
                if getattr(exc, "status_code", None) not in (409, 412):
                    raise AzureTargetError(f"cannot write {name} to {self._blob_where()}: {storage_error(exc)}") from exc
        raise AzureTargetError(f"cannot append to {name} in {self._blob_where()}: it kept changing under us")

    def channel_history(self, image: str) -> list[dict[str, Any]]:
        """With ``azure.sbom``: every change from ``<image>/channels.jsonl``; without: the last change of
        each version still in the gallery (its tags), oldest first."""
        container = self.blob_container()
        if container is not None:
            try:
                data = container.download_blob(f"{image}/{HISTORY_BLOB}").readall().decode()
                return [json.loads(line) for line in data.splitlines() if line.strip()]
            except Exception as exc:
                if not is_not_found(exc):
                    raise AzureTargetError(f"cannot read {image}/{HISTORY_BLOB} from {self._blob_where()}: "
                                           f"{storage_error(exc)}") from exc
        g_rg, g_name, g_def = self._gallery()
        out = [c for v in self.az.compute.gallery_image_versions.list_by_gallery_image(g_rg, g_name, g_def)
               if (c := change_from_tags(v.name, tags_of(v), bool(getattr(v.publishing_profile, "exclude_from_latest",
                                                                             False))))]
        return sorted(out, key=lambda c: datetime.fromisoformat(c["at"]) if c["at"] else datetime.min.replace(tzinfo=UTC))

    def check_promotable(self, image: str, version: str, log: Log) -> list[str]:
        """The version is Succeeded, replicated to every target region (Completed), not past its end of
        life, and its smoke test passed (tag)."""
        from bakery.targets.azure.replication import EXPAND, Reading

        v = self._get_version(version, expand=EXPAND)
        if v is None:
            return [f"no gallery image version {version}"]
        reading = Reading.of(v)
        problems = []
        if reading.state.lower() != "succeeded":
            problems.append(f"provisioning state {reading.state}")
        wanted = {normalize_region(r.name) for r in self.cfg.regions()}
        done = {normalize_region(r.region) for r in reading.regions if r.state.lower() == "completed"}
        if wanted - done:
            states = ", ".join(f"{r.region}: {r.state} {r.progress}%" for r in reading.regions) or "no status"
            problems.append(f"not replicated to {', '.join(sorted(wanted - done))} ({states})")
        eol = getattr(v.publishing_profile, "end_of_life_date", None)
        if eol is not None and eol <= self.now():
            problems.append(f"past its end of life ({eol.isoformat()})")
        if tags_of(v).get("smoke_test") != "passed":
            problems.append(f"its smoke test tag is {tags_of(v).get('smoke_test')!r}, not 'passed'")
        if not problems:
            log(f"{image} {version}: {text(v.provisioning_state)}, replicated to {', '.join(sorted(done))}")
        return problems
