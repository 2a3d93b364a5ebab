"""What every part of the Azure target shares: errors, names, tags, ARM helpers, SDK clients, and
reading the gallery's image versions (no Airflow import)."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from bakery.versioning import VersionError, parse_version, version_key

MANAGED_BY = "image-bakery"
BUILDER_ID = "Azure.ResourceManagement.VMImage"
IMAGE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/images/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
IN_PROGRESS = {"creating", "updating", "deleting", "migrating"}
# a managed image that can be used: ARM says Succeeded; older API versions and some tools said Created
IMAGE_READY = {"succeeded", "created"}

# the tags a published gallery image version carries (provenance; pinned=true is for humans)
TAG_RUN = "dag_run_id"
TAG_PACKER = "packer_run_uuid"
TAG_DIGEST = "template_digest"
TAG_SMOKE = "smoke_test"
TAG_PINNED = "pinned"
# what bake.check_changes compares with the next run, and where the packages came from
TAG_BASE = "base_digest"
TAG_VARIABLES = "variables_digest"
TAG_MANIFEST = "manifest_digest"  # the digest of the version's package manifest (packages.json)
TAG_INPUTS = "inputs"  # pool@<version> | snapshot@<timestamp> | current@<time> (Azure: always current@)
TAG_REBUILT = "rebuilt_at"  # ISO time a backfill rebuilt this (past) version: prune protects it a while
TAG_VALUE_MAX = 256  # Azure's limit on a tag value
# the version's channel (bakery.channels) and its last change: who, when, from which run, what, why
TAG_CHANNEL = "channel"
CHANNEL_TAGS = {"by": "channel_by", "at": "channel_at", "run_id": "channel_run", "action": "channel_action",
                "reason": "channel_reason"}


class AzureTargetError(RuntimeError):
    """Something in Azure is not as the bake needs it; the message says what, where and what to do."""


def managed_image_name(image: str, version: str) -> str:
    """``rhel9-nginx`` + ``2026.1128.200000`` -> ``rhel9-nginx-2026-1128-200000`` (as the templates name it)."""
    return f"{image}-{version.replace('.', '-')}"


def image_ready(state: Any) -> bool:
    """A managed image's ``provisioningState`` says it can be used (any case; Succeeded or Created)."""
    return text(state).strip().lower() in IMAGE_READY


def status_of(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)


def retry_throttled(call: Callable[[], Any], *, deadline_seconds: float = 1800.0,
                    sleep: Callable[[float], None] | None = None) -> Any:
    """``call()``, again after ARM's ``Retry-After`` while it answers 429 beyond the SDK's own retries
    (a prune of hundreds of versions meets the subscription's write limits), for at most
    ``deadline_seconds``; then the 429 is raised."""
    import time

    sleep = sleep or time.sleep
    give_up = time.monotonic() + deadline_seconds
    while True:
        try:
            return call()
        except Exception as exc:
            if status_of(exc) != 429 or time.monotonic() > give_up:
                raise
            headers = getattr(getattr(exc, "response", None), "headers", None) or {}
            try:
                wait = float(headers.get("Retry-After") or 1)
            except ValueError:
                wait = 1.0
            sleep(min(max(wait, 0.0), 60.0))


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ResourceNotFoundError) or status_of(exc) == 404


def error_text(exc: BaseException) -> str:
    err = getattr(exc, "error", None)
    code, message = getattr(err, "code", None), getattr(err, "message", None)
    if code or message:
        return f"{code}: {message}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def storage_error(exc: BaseException) -> str:
    """A Blob Storage error as ``<ErrorCode>: <first line of its message>``."""
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)
    message = (str(getattr(exc, "message", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{code}: {message.rstrip('.')}" if code else message.rstrip(".")


def text(value: Any) -> str:
    """An SDK enum (``OperatingSystemTypes.LINUX``) or a string, as ARM's string (``Linux``)."""
    return str(getattr(value, "value", value) if value is not None else "")


def tags_of(obj: Any) -> dict[str, str]:
    return dict(getattr(obj, "tags", None) or {})


def aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def delete_found(begin_delete: Callable[..., Any], *args: Any) -> bool:
    """Run an SDK ``begin_delete(*args)`` to its end; True if it deleted something.

    ARM answers a DELETE with 200 or 202 when the resource existed and 204 when there was nothing to
    delete (Images - Delete: "204 No Content: Resource does not exist"); some providers say 404. The
    SDK hides the difference (``result()`` is None either way), so the first final answer of the DELETE
    itself is read with azure-core's per-call ``raw_response_hook`` (retried 429/5xx answers come
    before it, the operation's status polls after it)."""
    answers: list[int] = []

    def hook(response: Any) -> None:
        if str(response.http_request.method).upper() == "DELETE":
            answers.append(int(response.http_response.status_code))

    try:
        begin_delete(*args, raw_response_hook=hook).result()
    except Exception as exc:
        if is_not_found(exc):
            return False
        raise
    final = next((s for s in answers if s in (200, 202, 204)), None)
    return final in (200, 202)


@dataclass(frozen=True)
class VersionFacts:
    """What prune (and the package diff, and the janitor) needs to know about one gallery image version."""

    name: str
    published: datetime | None = None
    state: str = "Succeeded"
    pinned: bool = False
    regions: int = 1
    allow_deletion_of_replicated_locations: bool | None = None
    block_deletion_before_end_of_life: bool = False
    end_of_life: datetime | None = None
    source_id: str | None = None
    id: str = ""
    rebuilt_at: str = ""  # the tag rebuilt_at (ISO time) of a version a backfill rebuilt; "" if none
    exclude_from_latest: bool = False  # publishingProfile.excludeFromLatest: Azure's `latest` skips it
    channel: str | None = None  # tag channel (bakery.channels): candidate / stable / superseded / withdrawn
    smoke_passed: bool | None = None  # tag smoke_test


class AzureBase:
    """The Azure target's state: its catalogue block, SDK clients (made on first use) and the blob
    container of ``azure.sbom``; the parts (``infra``, ``smoke``, ``publish``, ``prune``) add the steps."""

    def __init__(
        self,
        spec: Any,
        clients: Any = None,
        *,
        progress_interval: float = 5.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        alive_interval: float = 30.0,
        publish_timeout: float | None = None,
    ) -> None:
        if getattr(spec, "azure", None) is None:
            raise AzureTargetError(f"image {getattr(spec, 'name', spec)!r} has no azure block in the catalogue")
        self.spec = spec
        self.cfg = spec.azure
        self._clients = clients
        self._resolved: Any = None
        self._lock = threading.Lock()
        self._container: Any = None  # the azure.sbom blob container client (made on first use)
        self._container_lock = threading.Lock()
        self.progress_interval = progress_interval
        self.alive_interval = alive_interval
        # how long publish waits for the replication (default: the catalogue's azure.replication.timeout_minutes)
        self.publish_timeout = (publish_timeout if publish_timeout is not None
                                else 60 * float(getattr(self.cfg, "replication_timeout_minutes", 240.0)))
        self.now = now

    # --- clients -------------------------------------------------------------------------------
    @property
    def az(self) -> Any:
        with self._lock:
            if self._resolved is None:
                if self._clients is None:
                    raise AzureTargetError("the Azure target needs SDK clients (the operators build them from the "
                                           f"connection {self.cfg.conn_id!r})")
                self._resolved = self._clients() if callable(self._clients) else self._clients
            return self._resolved

    @property
    def subscription_id(self) -> str:
        return self.az.subscription_id

    def close(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        if self._resolved is not None and callable(self._clients):
            self._resolved.close()
            self._resolved = None

    def blob_container(self) -> Any:
        """The blob container of the catalogue's ``azure.sbom`` block (a ``ContainerClient``), or None
        without one. Made on first use by the clients' ``blob_container`` factory (the Airflow side
        builds it from the wasb connection through the provider's WasbHook)."""
        ref = getattr(self.cfg, "sbom", None)
        if ref is None:
            return None
        with self._container_lock:
            if self._container is None:
                factory = getattr(self.az, "blob_container", None)
                if factory is None:
                    raise AzureTargetError(
                        f"the catalogue's azure.sbom names blob container {ref.container!r} (connection "
                        f"{ref.conn_id!r}), but the Azure target was given no blob storage client "
                        "(AzureClients.blob_container): build the clients with bakery.hooks.azure.AzureImageHook")
                self._container = factory(ref.conn_id, ref.container)
            return self._container

    def _blob_where(self) -> str:
        ref = self.cfg.sbom
        return f"blob container {ref.container!r} (wasb connection {ref.conn_id!r})"

    # --- the gallery ---------------------------------------------------------------------------
    def _gallery(self) -> tuple[str, str, str]:
        g = self.cfg.gallery
        return g.resource_group, g.name, g.image_definition

    def managed_image_id(self, image: str, version: str) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.cfg.managed_image_resource_group}"
                f"/providers/Microsoft.Compute/images/{managed_image_name(image, version)}")

    def _get_version(self, version: str, expand: str | None = None) -> Any:
        g_rg, g_name, g_def = self._gallery()
        try:
            if expand:
                return self.az.compute.gallery_image_versions.get(g_rg, g_name, g_def, version, expand=expand)
            return self.az.compute.gallery_image_versions.get(g_rg, g_name, g_def, version)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise

    def _delete_version(self, version: str) -> None:
        g_rg, g_name, g_def = self._gallery()
        try:
            retry_throttled(lambda: self.az.compute.gallery_image_versions.begin_delete(
                g_rg, g_name, g_def, version)).result()
        except Exception as exc:
            if not is_not_found(exc):
                raise AzureTargetError(f"could not delete gallery image version {g_name}/{g_def}/{version}: "
                                       f"{error_text(exc)}") from exc

    def _facts(self) -> list[VersionFacts]:
        """Every image version of the gallery image definition (numbered Major.Minor.Patch), oldest first."""
        g_rg, g_name, g_def = self._gallery()
        out = []
        for v in self.az.compute.gallery_image_versions.list_by_gallery_image(g_rg, g_name, g_def):  # follows nextLink
            try:
                parse_version(v.name)
            except VersionError:
                continue
            profile = getattr(v, "publishing_profile", None)
            safety = getattr(v, "safety_profile", None)
            source = getattr(getattr(getattr(v, "storage_profile", None), "source", None), "id", None)
            out.append(VersionFacts(
                name=v.name,
                published=aware(getattr(profile, "published_date", None)),
                state=text(v.provisioning_state) or "Succeeded",
                pinned=tags_of(v).get(TAG_PINNED, "").strip().lower() == "true",
                regions=len(getattr(profile, "target_regions", None) or []) or 1,
                allow_deletion_of_replicated_locations=getattr(safety, "allow_deletion_of_replicated_locations", None),
                block_deletion_before_end_of_life=bool(getattr(safety, "block_deletion_before_end_of_life", False)),
                end_of_life=aware(getattr(profile, "end_of_life_date", None)),
                source_id=source,
                id=v.id,
                rebuilt_at=tags_of(v).get(TAG_REBUILT, ""),
                exclude_from_latest=bool(getattr(profile, "exclude_from_latest", False)),
                channel=tags_of(v).get(TAG_CHANNEL) or None,
                smoke_passed={"passed": True, "failed": False}.get(tags_of(v).get(TAG_SMOKE, "")),
            ))
        return sorted(out, key=lambda f: version_key(f.name))

    def _definition(self) -> Any:
        """The gallery image definition (None if it does not exist)."""
        g_rg, g_name, g_def = self._gallery()
        try:
            return self.az.compute.gallery_images.get(g_rg, g_name, g_def)
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
