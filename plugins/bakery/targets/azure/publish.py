"""Publishing an Azure bake: the gallery image version, its replication, its SBOM and package manifest.

A gallery image version ``<version>`` from the bake's managed image, with the catalogue's target
regions / replicas / storage type / end of life / exclude-from-latest and provenance tags
(:meth:`PublishSteps.version_tags`: run ids, template / base / variables / package manifest digests,
where the packages came from, ``rebuilt_at`` for a backfill); replication progress per region is
logged while the operation runs. With the catalogue's ``azure.sbom`` block, the version's CycloneDX SBOM
and package manifest go to that blob container first (``<image>/<version>/sbom.cdx.json``,
``<image>/<version>/packages.json``, overwritten on a retry), and the package diff to the previous
version (its ``packages.json``) is logged. Idempotent: a version from the same run (same ``dag_run_id``
and ``packer_run_uuid`` tags) is adopted. Also what the gallery says of published versions
(``published``, ``manifest``, ``list_versions``).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, timedelta
from typing import Any

from azure.core.exceptions import AzureError

from bakery.packages.manifest import MANIFEST_NAME, SBOM_NAME, Manifest, ManifestError, diff, format_diff
from bakery.record import BakeRecord
from bakery.targets.azure.common import (
    IMAGE_ID,
    IN_PROGRESS,
    MANAGED_BY,
    TAG_BASE,
    TAG_DIGEST,
    TAG_INPUTS,
    TAG_MANIFEST,
    TAG_PACKER,
    TAG_REBUILT,
    TAG_RUN,
    TAG_SMOKE,
    TAG_VALUE_MAX,
    TAG_VARIABLES,
    AzureBase,
    AzureTargetError,
    aware,
    error_text,
    is_not_found,
    storage_error,
    tags_of,
    text,
)
from bakery.targets.base import Log, PublishedVersion
from bakery.versioning import parse_version, version_key

DIFF_LOOKBACK = 10  # how many lower versions publish tries for a package manifest to diff with


def blob_names(image: str, version: str) -> tuple[str, str]:
    """(SBOM, package manifest) blob names of a version in the catalogue's ``azure.sbom`` container."""
    return f"{image}/{version}/{SBOM_NAME}", f"{image}/{version}/{MANIFEST_NAME}"


class PublishSteps(AzureBase):
    """``publish`` and what the gallery records of published versions."""

    def version_tags(self, record: BakeRecord) -> dict[str, str]:
        """The gallery image version's tags: provenance, and what ``bake.check_changes`` compares
        (``template_digest``, ``base_digest``, ``variables_digest``) plus ``manifest_digest`` (its package
        set), ``inputs`` (where the packages came from) and, for a backfill, ``rebuilt_at``. The optional
        ones only when the record has them. Every value fits Azure's 256 characters (digests are 71)."""
        smoke = record.smoke or {}
        tags = {
            "image": record.image, "version": record.version, "managed_by": MANAGED_BY,
            TAG_RUN: record.dag_run_id or "", TAG_PACKER: record.packer_run_uuid or "",
            TAG_DIGEST: record.template_digest,
            TAG_SMOKE: "passed" if smoke.get("passed") else "failed",
            "smoke_test_seconds": f"{smoke.get('seconds', '')}",
        }
        optional = {
            TAG_BASE: record.base_digest,
            TAG_VARIABLES: record.variables_digest,
            TAG_MANIFEST: (record.packages or {}).get("digest"),
            TAG_INPUTS: (record.inputs or {}).get("label"),
        }
        tags.update({k: v for k, v in optional.items() if v})
        if record.run_type == "backfill":
            tags[TAG_REBUILT] = self.now().astimezone(UTC).isoformat(timespec="seconds")
        change = self.published_change(record)
        if change is not None:
            from bakery.targets.azure.channels import channel_tags

            tags.update(channel_tags(change))
        return {k: str(v)[:TAG_VALUE_MAX] for k, v in tags.items()}

    def published_change(self, record: BakeRecord):
        """The channel the record is published into (``bakery.channels.Change``; None: no channels)."""
        from bakery.channels import Actor, published_change

        actor = Actor(record.extra.get("triggered_by") or "scheduler", self.now().astimezone(UTC),
                      record.dag_run_id or "")
        return published_change(record.version, actor, channels=bool(record.extra.get("channel")))

    def version_body(self, record: BakeRecord) -> dict[str, Any]:
        cfg = self.cfg
        profile: dict[str, Any] = {
            "targetRegions": [{"name": r.name, "regionalReplicaCount": r.replicas,
                               "storageAccountType": r.storage_account_type} for r in cfg.regions()],
            "replicaCount": cfg.regions()[0].replicas,
            "storageAccountType": cfg.regions()[0].storage_account_type,
            # a candidate (bakery.channels) stays out of `latest` until it is promoted
            "excludeFromLatest": True if record.extra.get("channel") else cfg.exclude_from_latest,
        }
        if cfg.end_of_life_days:
            eol = self.now() + timedelta(days=cfg.end_of_life_days)
            profile["endOfLifeDate"] = eol.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "location": cfg.location,
            "tags": self.version_tags(record),
            "properties": {
                "publishingProfile": profile,
                "storageProfile": {"source": {"id": record.artifact_id}},
                "safetyProfile": {"allowDeletionOfReplicatedLocations": cfg.allow_deletion_of_replicated_locations},
            },
        }

    def publish(self, record: BakeRecord, log: Log, *, replace_existing: bool = False) -> str:
        """Publish and wait here, in this process, for the replication (``begin_publish``, then
        ``wait_replication``, then ``finish_publish``). The Airflow task does not wait in the worker: it
        defers the wait to a trigger (``bakery.triggers.replication``) between the first and the last step."""
        published_id = self.begin_publish(record, log, replace_existing=replace_existing)
        if published_id is not None:
            return published_id
        outcome = self.wait_replication(record.version, log)
        if outcome["status"] != "succeeded":
            raise AzureTargetError(f"publish: {outcome['message']}")
        return self.finish_publish(record, log, outcome)

    def begin_publish(self, record: BakeRecord, log: Log, *, replace_existing: bool = False) -> str | None:
        """Everything of ``publish`` up to the version's PUT, without waiting for it.

        Returns the published id when this run's version is already published (adopted: nothing to
        wait for), or None when the version is being created and replicated, by the PUT sent here or
        by an earlier try of this run (adopted as well: never a second PUT): then wait for it
        (``wait_replication`` or the trigger) and call ``finish_publish``."""
        parse_version(record.version)
        if not record.smoke or not record.smoke.get("passed"):
            raise AzureTargetError(f"refusing to publish {record.image} {record.version}: the smoke test did not pass")
        if not record.artifact_id or not IMAGE_ID.match(record.artifact_id):
            raise AzureTargetError(f"publish: the record has no managed image id (artifact_id={record.artifact_id!r})")
        g_rg, g_name, g_def = self._gallery()
        where = f"{g_name}/{g_def}/{record.version}"
        manifest = self._record_manifest(record)  # before anything is made: a bad manifest fails here
        existing = self._get_version(record.version)
        if existing is not None:
            tags = tags_of(existing)
            same = (tags.get(TAG_RUN) == (record.dag_run_id or "")
                    and tags.get(TAG_PACKER) == (record.packer_run_uuid or ""))
            state = text(existing.provisioning_state)
            if same and state.lower() in IN_PROGRESS - {"deleting"}:
                log(f"publish: {where} from this run is {state}: waiting for it")
                return None
            if same and state.lower() == "succeeded":
                self._store_packages(record, manifest, log)  # the earlier try may have stopped before it
                log(f"publish: {where} is already published by this run: nothing to do")
                return existing.id
            if same:
                log(f"publish: {where} from this run ended {state}: deleting it and publishing again")
                self._delete_version(record.version)
            elif not replace_existing:
                raise AzureTargetError(
                    f"gallery image version {where} already exists, published by DAG run "
                    f"{tags.get(TAG_RUN)!r} (packer run {tags.get(TAG_PACKER)!r}, state {state}). Published versions "
                    "are immutable: trigger the run with the param replace_existing=true to replace it, or bake "
                    "another version (another run)"
                )
            else:
                log(f"publish: replacing {where} of DAG run {tags.get(TAG_RUN)!r} (replace_existing=true)")
                self._delete_version(record.version)
        # the SBOM and manifest first: a version never exists without them (a retry overwrites them)
        self._store_packages(record, manifest, log)
        body = self.version_body(record)
        regions = ", ".join(f"{r['name']} x{r['regionalReplicaCount']} ({r['storageAccountType']})"
                            for r in body["properties"]["publishingProfile"]["targetRegions"])
        log(f"publish: creating {where} from {record.artifact_id} -> {regions}")
        # only the PUT: what follows is read from the version itself (its provisioningState and
        # replication status), by this process or by the trigger, and by a retry alike
        self.az.compute.gallery_image_versions.begin_create_or_update(g_rg, g_name, g_def, record.version, body,
                                                                      polling=False)
        return None

    def wait_replication(self, version: str, log: Log) -> dict[str, Any]:
        """Follow the version here (every ``progress_interval`` seconds, at most ``publish_timeout``);
        the outcome as :func:`bakery.targets.azure.replication.outcome_of` gives it."""
        from bakery.targets.azure.replication import EXPAND, ProgressLog, Reading, deadline_outcome, outcome_of

        started = time.monotonic()
        progress = ProgressLog(version, log)
        reading = None
        while True:
            try:
                reading = Reading.of(self._get_version(version, expand=EXPAND))
            except AzureError as exc:  # the SDK retried already; try again at the next interval
                log(f"publish: could not read the replication status of {version} ({error_text(exc)})")
            else:
                progress(reading)
                outcome = outcome_of(reading, version)
                if outcome is not None:
                    return {**outcome, "seconds": round(time.monotonic() - started, 1)}
            if time.monotonic() - started > self.publish_timeout:
                return deadline_outcome(reading, version, self.publish_timeout)
            time.sleep(self.progress_interval)

    def finish_publish(self, record: BakeRecord, log: Log, outcome: dict[str, Any] | None = None) -> str:
        """After the wait: the version is Succeeded (as the wait's ``outcome`` read it; without one it is
        read here); log it and the package diff to the previous version; return its id."""
        g_rg, g_name, g_def = self._gallery()
        where = f"{g_name}/{g_def}/{record.version}"
        if outcome and outcome.get("status") == "succeeded" and outcome.get("id"):
            version_id = outcome["id"]  # no second reading (nor SDK clients) needed
        else:
            v = self._get_version(record.version)
            state = text(getattr(v, "provisioning_state", None)) if v is not None else "missing"
            if v is None or state.lower() != "succeeded":
                raise AzureTargetError(f"publish: {where} is {state}, not Succeeded, after its replication ended")
            version_id = v.id
        waited = f" after {outcome['seconds']:.1f}s of replication" if outcome and "seconds" in outcome else ""
        log(f"publish: {where} published{waited}: {version_id} (packages from "
            f"{(record.inputs or {}).get('label', 'unrecorded inputs')}"
            f"{', rebuilt by a backfill' if record.run_type == 'backfill' else ''})")
        manifest = self._record_manifest(record)
        if manifest is not None:
            self._log_diff(record.image, record.version, manifest, log)
        change = self.published_change(record)
        if change is not None:
            self.record_publish(record.image, change, log)
            log(f"publish: {record.version} is a candidate (excludeFromLatest): `latest` moves when promote_"
                f"{record.image.replace('-', '_')} promotes it")
        return version_id

    # --- package manifest and SBOM (Blob Storage) ---------------------------------------------------
    @staticmethod
    def _record_manifest(record: BakeRecord) -> Manifest | None:
        """The package manifest the build captured (None: the record has none), checked against
        the digest the build recorded."""
        packages = record.packages or {}
        path = packages.get("manifest")
        if not path:
            return None
        try:
            manifest = Manifest.load(path)
        except (OSError, ManifestError, ValueError) as exc:
            raise AzureTargetError(
                f"publish: cannot read the package manifest {path} of {record.image} {record.version} ({exc}). "
                "The build task writes it into the bakery's work folder ($BAKERY_HOME/work): the build and "
                "publish tasks of one run must see the same work folder (one worker, or a shared volume)"
            ) from None
        if packages.get("digest") and manifest.digest != packages["digest"]:
            raise AzureTargetError(f"publish: the package manifest {path} changed since the build "
                                   f"({packages['digest']} -> {manifest.digest})")
        return manifest

    def _sbom(self, record: BakeRecord, manifest: Manifest) -> str:
        from bakery.packages.sbom import build_sbom, validate_sbom

        props = {"bakery:inputs": (record.inputs or {}).get("label", ""), "bakery:manifest-digest": manifest.digest,
                 "bakery:template-digest": record.template_digest, "bakery:base-digest": record.base_digest or "",
                 "bakery:dag-run-id": record.dag_run_id or "", "bakery:target": "azure"}
        text = build_sbom(manifest, image=record.image, version=record.version, created=self.now(), properties=props)
        validate_sbom(text)  # never store a document that is not CycloneDX
        return text

    def _store_packages(self, record: BakeRecord, manifest: Manifest | None, log: Log) -> None:
        """Upload the version's SBOM, then its package manifest (so a manifest blob implies the SBOM)
        to the ``azure.sbom`` container; overwrite: a retry of the same run writes the same package set.
        Without an ``azure.sbom`` block or without a manifest: log why nothing is stored."""
        container = self.blob_container()
        if manifest is None:
            log(f"publish: the record of {record.image} {record.version} has no package manifest: no SBOM stored")
            return
        if container is None:
            log(f"publish: no azure.sbom block in the catalogue: the SBOM and package manifest of {record.version} "
                f"are not stored ({len(manifest)} packages; tag {TAG_MANIFEST}={manifest.digest} names the set)")
            return
        sbom_blob, manifest_blob = blob_names(record.image, record.version)
        stored = self.manifest(record.image, record.version)
        if stored is not None and stored.digest == manifest.digest:
            log(f"publish: the SBOM and package manifest of {record.version} are already in {self._blob_where()}")
            return
        from azure.storage.blob import ContentSettings

        metadata = {"image": record.image, "version": record.version, "manifest_digest": manifest.digest,
                    "dag_run_id": record.dag_run_id or ""}
        for name, content in ((sbom_blob, self._sbom(record, manifest)), (manifest_blob, manifest.to_json())):
            try:
                container.upload_blob(name, content.encode(), overwrite=True, metadata=metadata,
                                      content_settings=ContentSettings(content_type="application/json"))
            except Exception as exc:
                why = storage_error(exc)
                hint = ("create the container (docs/azure.md, SBOM)" if why.startswith("ContainerNotFound")
                        else "check the wasb connection's credentials and the account's network rules")
                raise AzureTargetError(f"publish: could not upload {name} to {self._blob_where()}: {why}; {hint}. "
                                       "The version is not published yet: a retry uploads again") from exc
        log(f"publish: SBOM (CycloneDX, {len(manifest)} packages) and package manifest stored in "
            f"{self._blob_where()}: {sbom_blob}, {manifest_blob}")

    def _log_diff(self, image: str, version: str, manifest: Manifest, log: Log) -> None:
        """The package diff to the previous version (the next lower one with a manifest, as for the
        local target: for a backfill, the version before its date)."""
        if self.blob_container() is None:
            log(f"packages of {version}: {len(manifest)} (no azure.sbom block: no earlier manifest to compare with)")
            return
        lower = [f.name for f in self._facts() if version_key(f.name) < version_key(version)]
        for prev in reversed(lower[-DIFF_LOOKBACK:]):
            try:
                old = self.manifest(image, prev)
                if old is not None:
                    log(format_diff(diff(old, manifest), prev, version, limit=200))
                    return
            except (AzureTargetError, ManifestError) as exc:
                log(f"packages: cannot compare with {prev}: {exc}")
        log(f"packages of {version}: {len(manifest)} (no earlier version with a package manifest in "
            f"{self._blob_where()} to compare with)")

    def published(self, image: str, version: str) -> dict[str, Any] | None:
        """What the gallery image version records, shaped like the local target's metadata: its tags,
        with the digests (``template_digest``, ``base_digest``, ``variables_digest``,
        ``manifest_digest``) and ``rebuilt_at`` None when absent, ``inputs`` as ``{"label": ...}``,
        ``created`` (its publish date), ``published_id`` and ``provisioning_state``. None: no such
        version, or one whose creation Failed (nothing usable is published under that number)."""
        v = self._get_version(version)
        if v is None:
            return None
        state = text(getattr(v, "provisioning_state", None)) or "Succeeded"
        if state.lower() == "failed":
            return None
        tags = tags_of(v)
        meta: dict[str, Any] = dict(tags)
        for key in (TAG_DIGEST, TAG_BASE, TAG_VARIABLES, TAG_MANIFEST, TAG_REBUILT):
            meta[key] = tags.get(key) or None
        meta["inputs"] = {"label": tags[TAG_INPUTS]} if tags.get(TAG_INPUTS) else None
        when = aware(getattr(getattr(v, "publishing_profile", None), "published_date", None))
        meta["created"] = when.isoformat(timespec="seconds") if when else ""
        meta["published_id"] = v.id
        meta["provisioning_state"] = state
        return meta

    def manifest(self, image: str, version: str) -> Manifest | None:
        """The version's package manifest from the ``azure.sbom`` container (``<image>/<version>/
        packages.json``); None without an ``azure.sbom`` block or when the blob does not exist."""
        container = self.blob_container()
        if container is None:
            return None
        _, name = blob_names(image, version)
        try:
            data = container.download_blob(name).readall()
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise AzureTargetError(f"cannot read {name} from {self._blob_where()}: {storage_error(exc)}") from exc
        try:
            return Manifest.from_dict(json.loads(data))
        except (ValueError, ManifestError) as exc:
            raise AzureTargetError(f"{name} in {self._blob_where()} is not a bakery package manifest: {exc}") from None

    def list_versions(self, image: str) -> list[PublishedVersion]:
        return [PublishedVersion(image=image, version=f.name,
                                 created=f.published.isoformat(timespec="seconds") if f.published else "",
                                 pinned=f.pinned, published_id=f.id) for f in self._facts()]
