"""Reading an Azure image's published versions for the gallery page: one listing of the gallery image
definition's versions (their tags and publishing profile) and one of the ``azure.sbom`` container, not a
round trip per version; the SBOM of one version from its blob. No Airflow import."""

from __future__ import annotations

from typing import Any

from bakery.channels import with_channel_marks
from bakery.packages.manifest import MANIFEST_NAME, SBOM_NAME
from bakery.targets.azure.common import (
    TAG_BASE,
    TAG_CHANNEL,
    TAG_DIGEST,
    TAG_INPUTS,
    TAG_MANIFEST,
    TAG_PINNED,
    TAG_REBUILT,
    TAG_VARIABLES,
    AzureBase,
    AzureTargetError,
    aware,
    is_not_found,
    storage_error,
    tags_of,
    text,
)
from bakery.versioning import VersionError, parse_version, version_key


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class GalleryReadSteps(AzureBase):
    """``describe_versions`` and ``sbom`` of the Target interface."""

    def _stored_blobs(self, image: str) -> set[str] | None:
        """Names of the image's blobs in the ``azure.sbom`` container (None: no such block)."""
        container = self.blob_container()
        if container is None:
            return None
        try:
            return {b.name for b in container.list_blobs(name_starts_with=f"{image}/")}
        except Exception as exc:
            raise AzureTargetError(f"cannot list {image}/ in {self._blob_where()}: {storage_error(exc)}") from exc

    def describe_versions(self, image: str) -> list[dict[str, Any]]:
        """The gallery image definition's versions (numbered Major.Minor.Patch, not Failed), oldest first,
        shaped like the local target's metadata: their tags (the digests and ``rebuilt_at`` None when absent,
        ``inputs`` as ``{"label": ...}``, ``smoke_test`` as ``{"passed", "seconds"}``), ``created`` (the
        publish date), ``published_id``, ``provisioning_state``, ``exclude_from_latest``, ``end_of_life``,
        ``os_disk_gb`` (the OS disk's size; ``size_bytes`` is None: Azure does not say how much the image
        holds), and whether its package manifest and SBOM are in the ``azure.sbom`` container."""
        g_rg, g_name, g_def = self._gallery()
        blobs = self._stored_blobs(image)
        out = []
        for v in self.az.compute.gallery_image_versions.list_by_gallery_image(g_rg, g_name, g_def):
            try:
                parse_version(v.name)
            except VersionError:
                continue
            state = text(getattr(v, "provisioning_state", None)) or "Succeeded"
            if state.lower() == "failed":
                continue
            tags = tags_of(v)
            meta: dict[str, Any] = dict(tags)
            for key in (TAG_DIGEST, TAG_BASE, TAG_VARIABLES, TAG_MANIFEST, TAG_REBUILT):
                meta[key] = tags.get(key) or None
            meta["inputs"] = {"label": tags[TAG_INPUTS]} if tags.get(TAG_INPUTS) else None
            smoke = tags.get("smoke_test")
            meta["smoke_test"] = ({"passed": smoke == "passed", "seconds": _float(tags.get("smoke_test_seconds"))}
                                  if smoke else None)
            profile = getattr(v, "publishing_profile", None)
            when = aware(getattr(profile, "published_date", None))
            eol = aware(getattr(profile, "end_of_life_date", None))
            disk = getattr(getattr(v, "storage_profile", None), "os_disk_image", None)
            names = blobs or set()
            meta.update({
                "version": v.name,
                "created": when.isoformat(timespec="seconds") if when else "",
                "published_id": v.id,
                "provisioning_state": state,
                "pinned": tags.get(TAG_PINNED, "").strip().lower() == "true",
                "exclude_from_latest": bool(getattr(profile, "exclude_from_latest", False)),
                "channel": tags.get(TAG_CHANNEL) or None,
                "end_of_life": eol.isoformat(timespec="seconds") if eol else None,
                "size_bytes": None,
                "os_disk_gb": getattr(disk, "size_in_gb", None),
                "has_manifest": f"{image}/{v.name}/{MANIFEST_NAME}" in names,
                "has_sbom": f"{image}/{v.name}/{SBOM_NAME}" in names,
            })
            out.append(meta)
        return with_channel_marks(sorted(out, key=lambda m: version_key(m["version"])))

    def sbom(self, image: str, version: str) -> bytes | None:
        """The version's SBOM blob (``<image>/<version>/sbom.cdx.json``); None without an ``azure.sbom``
        block or when the blob does not exist."""
        parse_version(version)
        container = self.blob_container()
        if container is None:
            return None
        name = f"{image}/{version}/{SBOM_NAME}"
        try:
            return container.download_blob(name).readall()
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise AzureTargetError(f"cannot read {name} from {self._blob_where()}: {storage_error(exc)}") from exc
