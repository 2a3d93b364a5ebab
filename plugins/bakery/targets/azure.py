"""The Azure target: managed image from Packer -> smoke-test VM -> Azure Compute Gallery version.

No Airflow import: it is given ready SDK clients (``bakery.azure_clients.AzureClients``) or a
zero-argument factory of them (the Airflow hook's ``clients``), used only when Azure is needed.

What it creates and deletes (all names deterministic, see docs/azure.md):

* **prepare** checks that the catalogue's resource groups, gallery image definition and smoke-test
  subnet exist (fail early, naming the catalogue field) and gives Packer its variables; Packer
  makes the managed image ``<image>-<version with dashes>`` in ``managed_image_resource_group``.
* **smoke test** (:meth:`smoke_setup` / :meth:`smoke_check` / :meth:`smoke_teardown`, or all three in
  :meth:`smoke_test`): in the catalogue's smoke resource group and subnet, an NSG admitting only the
  check port from ``allowed_source_cidr`` (and denying every other inbound flow, the VNet's included), a Static public IP (mode public), a NIC, and a VM from the
  managed image with an ephemeral SSH public key (password login disabled; the private key is never
  written anywhere, nobody logs in), OS disk deleted with the VM. All named ``smoke-<image>-<version>-*``
  and tagged ``image, version, dag_run_id, managed_by=image-bakery, purpose=smoke-test, smoke_id,
  created_at`` (so that people and a janitor can find them and judge their age).
  Teardown deletes by name and by tag, in dependency order, treating 404 as done: idempotent.
* **publish**: a gallery image version ``<version>`` from the managed image, with the catalogue's
  target regions / replicas / storage type / end of life / exclude-from-latest and provenance tags
  (:meth:`AzureTarget.version_tags`: run ids, template / base / variables / package manifest digests,
  where the packages came from, ``rebuilt_at`` for a backfill); replication progress per region is
  logged while the operation runs. With the catalogue's ``azure.sbom`` block, the version's CycloneDX
  SBOM and package manifest go to that blob container first (``<image>/<version>/sbom.cdx.json``,
  ``<image>/<version>/packages.json``, overwritten on a retry), and the package diff to the previous
  version (its ``packages.json``) is logged. Idempotent: a version from the same run (same
  ``dag_run_id`` and ``packer_run_uuid`` tags) is adopted.
* **prune**: keeps the N newest versions and every protected one (see :func:`plan_prune`; a backfill's
  rebuild for ``backfill.protect_days`` after its ``rebuilt_at``), deletes the rest with bounded
  concurrency, then deletes the intermediate managed images whose gallery version is published
  (``Succeeded``) or was just deleted: the gallery holds its own copy of the image. SBOM blobs stay
  (an audit trail; expire them with a lifecycle rule on the container if wanted).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from bakery.http_check import poll_http
from bakery.packages.manifest import MANIFEST_NAME, SBOM_NAME, Manifest, ManifestError, diff, format_diff
from bakery.record import BakeRecord, SmokeResult
from bakery.targets.base import Log, PublishedVersion, SmokeCheck
from bakery.versioning import VersionError, parse_version, version_key

MANAGED_BY = "image-bakery"
BUILDER_ID = "Azure.ResourceManagement.VMImage"
PRUNE_CONCURRENCY = 4
_IMAGE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/images/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_IN_PROGRESS = {"creating", "updating", "deleting", "migrating"}

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
DIFF_LOOKBACK = 10  # how many lower versions publish tries for a package manifest to diff with


class AzureTargetError(RuntimeError):
    """Something in Azure is not as the bake needs it; the message says what, where and what to do."""


def managed_image_name(image: str, version: str) -> str:
    """``rhel9-nginx`` + ``2026.1128.200000`` -> ``rhel9-nginx-2026-1128-200000`` (as the templates name it)."""
    return f"{image}-{version.replace('.', '-')}"


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)


def _is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ResourceNotFoundError) or _status(exc) == 404


def _error_text(exc: BaseException) -> str:
    err = getattr(exc, "error", None)
    code, message = getattr(err, "code", None), getattr(err, "message", None)
    if code or message:
        return f"{code}: {message}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _storage_error(exc: BaseException) -> str:
    """A Blob Storage error as ``<ErrorCode>: <first line of its message>``."""
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)
    message = (str(getattr(exc, "message", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{code}: {message.rstrip('.')}" if code else message.rstrip(".")


def _text(value: Any) -> str:
    """An SDK enum (``OperatingSystemTypes.LINUX``) or a string, as ARM's string (``Linux``)."""
    return str(getattr(value, "value", value) if value is not None else "")


def _tags(obj: Any) -> dict[str, str]:
    return dict(getattr(obj, "tags", None) or {})


def blob_names(image: str, version: str) -> tuple[str, str]:
    """(SBOM, package manifest) blob names of a version in the catalogue's ``azure.sbom`` container."""
    return f"{image}/{version}/{SBOM_NAME}", f"{image}/{version}/{MANIFEST_NAME}"


@dataclass(frozen=True)
class SmokeNames:
    """The smoke-test resources of one image version: deterministic names (<= 64 characters)."""

    base: str

    @classmethod
    def of(cls, image: str, version: str) -> SmokeNames:
        base = f"smoke-{image}-{version.replace('.', '-')}"
        if len(base) > 56:  # VM names (Linux computer names too) stop at 64 characters
            digest = hashlib.sha256(base.encode()).hexdigest()[:8]
            base = f"{base[:47].rstrip('-')}-{digest}"
        return cls(base)

    @property
    def vm(self) -> str:
        return f"{self.base}-vm"

    @property
    def nic(self) -> str:
        return f"{self.base}-nic"

    @property
    def public_ip(self) -> str:
        return f"{self.base}-pip"

    @property
    def nsg(self) -> str:
        return f"{self.base}-nsg"

    @property
    def os_disk(self) -> str:
        return f"{self.base}-osdisk"


# --- prune policy (pure) ------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionFacts:
    """What prune needs to know about one gallery image version."""

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


@dataclass
class PrunePlan:
    delete: list[VersionFacts] = field(default_factory=list)
    keep: dict[str, str] = field(default_factory=dict)  # version -> why it stays


def plan_prune(
    versions: Iterable[VersionFacts], keep: int, *, protect: Iterable[str] = (), min_age_hours: float = 0.0,
    now: datetime | None = None, backfill_protect_days: float = 0.0,
) -> PrunePlan:
    """Which versions to delete: all but the ``keep`` newest (numerically), except protected ones.

    Never deleted: the highest version; one in ``protect`` (the one just published); one tagged
    ``pinned=true``; one a backfill rebuilt less than ``backfill_protect_days`` ago (tag
    ``rebuilt_at``; its number is old, so keep-N-newest alone would delete it at once; a tag that is
    not an ISO time keeps the version too); one still being created/updated/deleted; one younger
    than ``min_age_hours`` (or of unknown age); one Azure would refuse to delete (safetyProfile:
    deletion of replicated locations not allowed and more than one region, or deletion blocked
    before its end of life).
    """
    if keep < 1:
        raise ValueError(f"prune: keep must be at least 1, got {keep}")
    now = now or datetime.now(UTC)
    ordered = sorted(versions, key=lambda v: version_key(v.name))
    protect = set(protect)
    newest = {v.name for v in ordered[-keep:]}
    plan = PrunePlan()
    for i, v in enumerate(ordered):
        reason = None
        if v.name in protect:
            reason = "published by this run"
        elif i == len(ordered) - 1:
            reason = "the highest version"
        elif v.name in newest:
            reason = f"one of the {keep} newest"
        elif v.pinned:
            reason = "pinned (tag pinned=true)"
        elif v.rebuilt_at and backfill_protect_days > 0 and (why := _rebuilt_reason(v.rebuilt_at, now,
                                                                                   backfill_protect_days)):
            reason = why
        elif v.state.lower() in _IN_PROGRESS:
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
        rebuilt = _aware(tag)
    except (TypeError, ValueError):
        return (f"its tag {TAG_REBUILT}={tag!r} is not an ISO time: kept, as it may be a backfill's rebuild "
                f"younger than {days:g} days (fix or remove the tag)")
    if rebuilt is not None and now - rebuilt < timedelta(days=days):
        return (f"rebuilt by a backfill at {rebuilt.isoformat(timespec='seconds')}: protected for {days:g} days "
                f"after the rebuild (catalogue backfill.protect_days), until "
                f"{(rebuilt + timedelta(days=days)).isoformat(timespec='seconds')}")
    return None


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def ssh_public_key(comment: str) -> str:
    """An ephemeral RSA key pair; only the OpenSSH public key is returned, the private key is dropped."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    del key
    return f"{public.decode()} {comment}"


class AzureTarget:
    name = "azure"

    def __init__(
        self,
        spec: Any,
        clients: Any = None,
        *,
        progress_interval: float = 5.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        alive_interval: float = 30.0,
        publish_timeout: float = 4 * 3600,
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
        self.publish_timeout = publish_timeout  # how long publish waits for replication
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

    def _gallery(self) -> tuple[str, str, str]:
        g = self.cfg.gallery
        return g.resource_group, g.name, g.image_definition

    def managed_image_id(self, image: str, version: str) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.cfg.managed_image_resource_group}"
                f"/providers/Microsoft.Compute/images/{managed_image_name(image, version)}")

    # --- build inputs --------------------------------------------------------------------------
    def prepare(self, spec: Any, record: BakeRecord, work_dir: Path, *, accelerator: str = "auto", log: Log,
                inputs: Any = None, pool: Any = None):
        """Check the Azure side the bake relies on; return Packer's variables (no credentials: the
        Azure Packer operator adds those from the connection) and no base digest."""
        parse_version(record.version)
        self.check_infrastructure(log)
        cfg = self.cfg
        variables = {
            "image_name": spec.name,
            "image_version": record.version,
            "dag_run_id": record.dag_run_id or "",
            "location": cfg.location,
            "vm_size": cfg.vm_size,
            "build_resource_group_name": cfg.build_resource_group or "",
            "managed_image_resource_group_name": cfg.managed_image_resource_group,
            "manifest_path": str(work_dir / "manifest.json"),
        }
        record.extra["managed_image"] = {
            "resource_group": cfg.managed_image_resource_group,
            "name": managed_image_name(spec.name, record.version),
        }
        log(f"Packer builds managed image {cfg.managed_image_resource_group}/"
            f"{managed_image_name(spec.name, record.version)} in {cfg.location}")
        return variables, None

    def check_infrastructure(self, log: Log) -> None:
        """Fail early, naming the catalogue field, when what the bake needs does not exist."""
        az, cfg = self.az, self.cfg
        problems: list[str] = []

        def need(what: str, fld: str, get: Callable[[], Any]) -> Any:
            try:
                return get()
            except Exception as exc:
                if _is_not_found(exc):
                    problems.append(f"{what} does not exist in subscription {az.subscription_id} "
                                    f"(catalogue field azure.{fld}): create it (docs/azure.md) or fix the catalogue")
                    return None
                raise

        groups = [(cfg.managed_image_resource_group, "managed_image_resource_group"),
                  (cfg.gallery.resource_group, "gallery.resource_group"),
                  (cfg.smoke_test.resource_group, "smoke_test.resource_group")]
        if cfg.build_resource_group:
            groups.append((cfg.build_resource_group, "build_resource_group"))
        for rg, fld in groups:
            need(f"resource group {rg!r}", fld, lambda rg=rg: az.resource.resource_groups.get(rg))
        g_rg, g_name, g_def = self._gallery()
        definition = need(f"gallery image definition {g_name}/{g_def} (resource group {g_rg})",
                          "gallery.image_definition",
                          lambda: az.compute.gallery_images.get(g_rg, g_name, g_def))
        if definition is not None and _text(getattr(definition, "os_type", "Linux")).lower() != "linux":
            problems.append(f"gallery image definition {g_name}/{g_def} is for {_text(definition.os_type)}, not Linux")
        vnet_rg, vnet, subnet = cfg.smoke_test.subnet_id_parts
        need(f"subnet {vnet}/{subnet} (resource group {vnet_rg})", "smoke_test.subnet",
             lambda: az.network.subnets.get(vnet_rg, vnet, subnet))
        if getattr(cfg, "sbom", None) is not None:
            try:
                if not self.blob_container().exists():
                    problems.append(f"{self._blob_where()} does not exist (catalogue field azure.sbom.container): "
                                    "create it (docs/azure.md, SBOM) or fix the catalogue")
            except Exception as exc:  # noqa: BLE001 - reported with the other problems, all at once
                problems.append(f"{self._blob_where()} cannot be reached (catalogue field azure.sbom): "
                                f"{_storage_error(exc)}")
        if problems:
            raise AzureTargetError("the Azure resources of image " + repr(self.spec.name) + " are not ready:\n  - "
                                   + "\n  - ".join(problems))
        log(f"Azure resources of {self.spec.name} are in place (subscription {az.subscription_id})")

    def artifact_id(self, artifact: dict[str, Any]) -> str:
        builder, ident = artifact.get("builder_id"), str(artifact.get("id") or "")
        if builder != BUILDER_ID or not _IMAGE_ID.match(ident):
            raise AzureTargetError(
                f"expected a managed image from the azure-arm builder ({BUILDER_ID}), got builder {builder!r} "
                f"with id {ident!r}: the template must set managed_image_name/managed_image_resource_group_name"
            )
        return ident

    # --- smoke test ----------------------------------------------------------------------------
    def smoke_tags(self, record: BakeRecord, names: SmokeNames) -> dict[str, str]:
        return {"image": record.image, "version": record.version, "dag_run_id": record.dag_run_id or "",
                "managed_by": MANAGED_BY, "purpose": "smoke-test", "smoke_id": names.base,
                "created_at": self.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}

    def smoke_test(self, record: BakeRecord, check: SmokeCheck, log: Log) -> SmokeResult:
        """The whole smoke test in one call: create, check, and tear down whatever happened."""
        try:
            info = self.smoke_setup(record, check, log)
            return self.smoke_check(record, info, check, log)
        finally:
            self.smoke_teardown(record, log)

    def smoke_setup(self, record: BakeRecord, check: SmokeCheck, log: Log) -> dict[str, Any]:
        """Create the smoke-test VM (and its NSG, IP, NIC) from the record's managed image; wait for it.

        Leftovers of an earlier attempt are deleted first; on any failure everything is deleted
        again before the error propagates. Returns what :meth:`smoke_check` needs (JSON-able).
        """
        az, cfg, net = self.az, self.cfg, self.cfg.smoke_test
        names = SmokeNames.of(record.image, record.version)
        rg, location = net.resource_group, cfg.location
        tags = self.smoke_tags(record, names)
        image_id = record.artifact_id or self.managed_image_id(record.image, record.version)
        m = _IMAGE_ID.match(image_id)
        if not m:
            raise AzureTargetError(f"smoke test: {image_id!r} is not a managed image id")
        image = az.compute.images.get(m["rg"], m["name"])
        if _text(image.provisioning_state).lower() != "succeeded":
            raise AzureTargetError(f"smoke test: managed image {image_id} is {_text(image.provisioning_state)}, not Succeeded")
        vnet_rg, vnet, subnet_name = net.subnet_id_parts
        subnet = az.network.subnets.get(vnet_rg, vnet, subnet_name)

        self.smoke_teardown(record, log, quiet=True)  # what an earlier attempt may have left
        try:
            log(f"smoke test: creating NSG {names.nsg} (TCP {check.port} from {net.allowed_source_cidr} only)")
            nsg = az.network.network_security_groups.begin_create_or_update(rg, names.nsg, {
                "location": location, "tags": tags,
                "properties": {"securityRules": [{
                    "name": f"allow-smoke-check-{check.port}",
                    "properties": {
                        "description": "image bakery smoke test: the HTTP check only, from the configured range",
                        "protocol": "Tcp", "sourceAddressPrefix": net.allowed_source_cidr, "sourcePortRange": "*",
                        "destinationAddressPrefix": "*", "destinationPortRange": str(check.port),
                        "access": "Allow", "priority": 100, "direction": "Inbound",
                    },
                }, {
                    # Azure's default rules let the whole virtual network (and the load balancer) in on
                    # every port (AllowVnetInBound, 65000): nothing but the check may reach the VM
                    "name": "deny-all-other-inbound",
                    "properties": {
                        "description": "image bakery smoke test: nothing else reaches the VM, not even the VNet",
                        "protocol": "*", "sourceAddressPrefix": "*", "sourcePortRange": "*",
                        "destinationAddressPrefix": "*", "destinationPortRange": "*",
                        "access": "Deny", "priority": 4096, "direction": "Inbound",
                    },
                }]},
            }).result()
            ip_config: dict[str, Any] = {"subnet": {"id": subnet.id}, "privateIPAllocationMethod": "Dynamic"}
            if net.mode == "public":
                log(f"smoke test: creating Static public IP {names.public_ip}")
                pip = az.network.public_ip_addresses.begin_create_or_update(rg, names.public_ip, {
                    "location": location, "tags": tags, "sku": {"name": "Standard", "tier": "Regional"},
                    "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
                }).result()
                ip_config["publicIPAddress"] = {"id": pip.id}
            log(f"smoke test: creating NIC {names.nic} in subnet {vnet}/{subnet_name}")
            nic = az.network.network_interfaces.begin_create_or_update(rg, names.nic, {
                "location": location, "tags": tags,
                "properties": {"networkSecurityGroup": {"id": nsg.id},
                               "ipConfigurations": [{"name": "ipconfig1", "properties": ip_config}]},
            }).result()
            user = net.admin_username
            log(f"smoke test: creating VM {names.vm} ({net.vm_size}) from {image_id}, SSH key only, no password")
            created = time.time()
            vm = az.compute.virtual_machines.begin_create_or_update(rg, names.vm, {
                "location": location, "tags": tags,
                "properties": {
                    "hardwareProfile": {"vmSize": net.vm_size},
                    "storageProfile": {
                        "imageReference": {"id": image_id},
                        "osDisk": {"name": names.os_disk, "createOption": "FromImage", "deleteOption": "Delete",
                                   "caching": "ReadWrite", "managedDisk": {"storageAccountType": "Standard_LRS"}},
                    },
                    "osProfile": {
                        "computerName": names.vm[:64],
                        "adminUsername": user,
                        "linuxConfiguration": {
                            "disablePasswordAuthentication": True,
                            "ssh": {"publicKeys": [{"path": f"/home/{user}/.ssh/authorized_keys",
                                                    "keyData": ssh_public_key(f"bakery-smoke-{names.base}")}]},
                        },
                    },
                    "networkProfile": {"networkInterfaces": [
                        {"id": nic.id, "properties": {"primary": True, "deleteOption": "Delete"}}]},
                },
            }).result()
            if _text(vm.provisioning_state).lower() != "succeeded":
                raise AzureTargetError(f"smoke test: VM {names.vm} ended {_text(vm.provisioning_state)}")
            if net.mode == "public":
                address = az.network.public_ip_addresses.get(rg, names.public_ip).ip_address
            else:
                nic = az.network.network_interfaces.get(rg, names.nic)
                address = nic.ip_configurations[0].private_ip_address
            if not address:
                raise AzureTargetError(f"smoke test: VM {names.vm} has no {net.mode} IP address")
            log(f"smoke test: VM {names.vm} is up after {time.time() - created:.1f}s at {address} ({net.mode})")
            return {"vm_id": vm.id, "address": address, "mode": net.mode, "created_at": created,
                    "names": names.base, "url": f"http://{address}:{check.port}{check.path}"}
        except BaseException as exc:
            log(f"smoke test: setting up the VM failed ({_error_text(exc)}); deleting what was created")
            try:
                self.smoke_teardown(record, log)
            except Exception as cleanup_exc:  # noqa: BLE001 - the original error is the one to raise
                log(f"smoke test: cleanup after the failure failed too: {_error_text(cleanup_exc)}")
            raise

    def _vm_alive(self, names: SmokeNames) -> Callable[[], bool]:
        az, rg = self.az, self.cfg.smoke_test.resource_group
        state = {"checked": time.monotonic(), "alive": True}

        def alive() -> bool:
            if time.monotonic() - state["checked"] < self.alive_interval:
                return state["alive"]
            state["checked"] = time.monotonic()
            try:
                view = az.compute.virtual_machines.instance_view(rg, names.vm)
            except AzureError as exc:
                state["alive"] = not _is_not_found(exc)  # a transient ARM error is not a dead VM
                return state["alive"]
            codes = [str(s.code or "") for s in (view.statuses or [])]
            state["alive"] = not any(c.startswith(("PowerState/stopped", "PowerState/deallocated",
                                                   "ProvisioningState/failed")) for c in codes)
            return state["alive"]

        return alive

    def smoke_check(self, record: BakeRecord, info: dict[str, Any], check: SmokeCheck, log: Log) -> SmokeResult:
        """Poll the VM's HTTP answer until it is the expected one or the deadline passes."""
        names = SmokeNames(info["names"])
        since_create = max(0.0, time.time() - float(info.get("created_at") or time.time()))
        log(f"smoke test: checking {info['url']} (expect HTTP {check.expect_status} with {check.expect_text!r}, "
            f"within {check.timeout_seconds}s)")
        result = poll_http(info["url"], check, log=log, started=time.monotonic(), alive=self._vm_alive(names))
        result.seconds = round(result.seconds + since_create, 2)  # from the VM's creation, like the local target's boot
        return result

    def smoke_teardown(self, record: BakeRecord, log: Log, *, quiet: bool = False,
                       delete_image: bool = False) -> list[str]:
        """Delete every smoke-test resource of the record's image version (by name and by tag).

        Idempotent (404 = already gone). Raises, after trying everything, if something could not be
        deleted or is still there. With ``delete_image`` also the bake's managed image (a failed bake).
        """
        rg = self.cfg.smoke_test.resource_group
        names = SmokeNames.of(record.image, record.version)
        deleted, failures, found = self._delete_smoke(rg, names, log)
        if delete_image:
            img_rg, img_name = self.cfg.managed_image_resource_group, managed_image_name(record.image, record.version)
            try:
                self.az.compute.images.begin_delete(img_rg, img_name).result()
                deleted.append(f"images/{img_name}")
            except AzureError as exc:
                if not _is_not_found(exc):
                    failures.append(f"managed image {img_name}: {_error_text(exc)}")
        return self._teardown_done(rg, names, deleted, failures, found, f"{record.image} {record.version}", log, quiet)

    def delete_smoke_group(self, resource_group: str, smoke_id: str, log: Log) -> list[str]:
        """Delete the smoke-test resources tagged ``smoke_id`` (and named after it) in ``resource_group``:
        what the janitor does with a dead bake's leftovers. Same order, idempotency and errors as
        :meth:`smoke_teardown`."""
        names = SmokeNames(smoke_id)
        deleted, failures, found = self._delete_smoke(resource_group, names, log)
        return self._teardown_done(resource_group, names, deleted, failures, found, f"smoke group {smoke_id}", log,
                                   True)

    def _teardown_done(self, rg: str, names: SmokeNames, deleted: list[str], failures: list[str], found: bool,
                       what: str, log: Log, quiet: bool) -> list[str]:
        if not failures and found:
            try:
                left = [f"{r.type}/{r.name}" for r in self._tagged(rg, names)]
            except AzureError as exc:
                left = [] if _is_not_found(exc) else [f"(could not list: {_error_text(exc)})"]
            failures += [f"{x}: still there after its delete" for x in left]
        if failures:
            raise AzureTargetError(f"smoke teardown of {what} in resource group {rg} "
                                   "left resources behind:\n  - " + "\n  - ".join(failures))
        if deleted or not quiet:
            log(f"smoke teardown: {len(deleted)} resource(s) deleted in {rg}"
                + (f": {', '.join(deleted)}" if deleted else " (nothing was there)"))
        return deleted

    def _delete_smoke(self, rg: str, names: SmokeNames, log: Log) -> tuple[list[str], list[str], bool]:
        """Delete the smoke resources of ``names`` in ``rg``, VM first: (deleted, failures, found any)."""
        compute, network = self.az.compute, self.az.network
        deleters: dict[str, Callable[[str], Any]] = {
            "microsoft.compute/virtualmachines": lambda n: compute.virtual_machines.begin_delete(rg, n),
            "microsoft.network/networkinterfaces": lambda n: network.network_interfaces.begin_delete(rg, n),
            "microsoft.network/publicipaddresses": lambda n: network.public_ip_addresses.begin_delete(rg, n),
            "microsoft.network/networksecuritygroups": lambda n: network.network_security_groups.begin_delete(rg, n),
            "microsoft.compute/disks": lambda n: compute.disks.begin_delete(rg, n),
        }
        label = {"microsoft.compute/virtualmachines": "virtualMachines", "microsoft.compute/disks": "disks",
                 "microsoft.network/networkinterfaces": "networkInterfaces",
                 "microsoft.network/publicipaddresses": "publicIPAddresses",
                 "microsoft.network/networksecuritygroups": "networkSecurityGroups"}
        order = list(deleters)  # the VM first (it holds the NIC and the disk), then the NIC (it holds IP + NSG)
        getters: dict[str, tuple[str, Callable[[], Any]]] = {
            "microsoft.compute/virtualmachines": (names.vm, lambda: compute.virtual_machines.get(rg, names.vm)),
            "microsoft.network/networkinterfaces": (names.nic, lambda: network.network_interfaces.get(rg, names.nic)),
            "microsoft.network/publicipaddresses": (
                names.public_ip, lambda: network.public_ip_addresses.get(rg, names.public_ip)),
            "microsoft.network/networksecuritygroups": (
                names.nsg, lambda: network.network_security_groups.get(rg, names.nsg)),
            "microsoft.compute/disks": (names.os_disk, lambda: compute.disks.get(rg, names.os_disk)),
        }
        wanted: dict[str, set[str]] = {}
        try:
            for res in self._tagged(rg, names):
                wanted.setdefault(str(res.type).lower(), set()).add(res.name)
            for rtype, (name, get) in getters.items():  # by name too: the OS disk carries no tags
                if name not in wanted.get(rtype, set()):
                    try:
                        get()
                    except Exception as exc:
                        if _is_not_found(exc):
                            continue
                        raise
                    wanted.setdefault(rtype, set()).add(name)
        except Exception as exc:
            if _is_not_found(exc) and "resourcegroup" in _error_text(exc).lower():
                log(f"smoke teardown: resource group {rg} does not exist: nothing to delete")
                wanted = {}
            else:
                raise
        deleted: list[str] = []
        failures: list[str] = []
        for rtype in order + sorted(set(wanted) - set(order)):
            for name in sorted(wanted.get(rtype, ())):
                delete = deleters.get(rtype)
                if delete is None:
                    failures.append(f"{rtype} {name}: tagged as a smoke-test resource but of a type the bakery never "
                                    "creates; delete it by hand")
                    continue
                try:
                    delete(name).result()
                except AzureError as exc:
                    if not _is_not_found(exc):
                        failures.append(f"{label[rtype]} {name}: {_error_text(exc)}")
                    continue
                deleted.append(f"{label[rtype]}/{name}")
        return deleted, failures, bool(wanted)

    def _tagged(self, rg: str, names: SmokeNames) -> list[Any]:
        flt = f"tagName eq 'smoke_id' and tagValue eq '{names.base}'"
        return [r for r in self.az.resource.resources.list_by_resource_group(rg, filter=flt)
                if _tags(r).get("smoke_id") == names.base]

    # --- publish -------------------------------------------------------------------------------
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
        return {k: str(v)[:TAG_VALUE_MAX] for k, v in tags.items()}

    def version_body(self, record: BakeRecord) -> dict[str, Any]:
        cfg = self.cfg
        profile: dict[str, Any] = {
            "targetRegions": [{"name": r.name, "regionalReplicaCount": r.replicas,
                               "storageAccountType": r.storage_account_type} for r in cfg.regions()],
            "replicaCount": cfg.regions()[0].replicas,
            "storageAccountType": cfg.regions()[0].storage_account_type,
            "excludeFromLatest": cfg.exclude_from_latest,
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

    def _get_version(self, version: str, expand: str | None = None) -> Any:
        g_rg, g_name, g_def = self._gallery()
        try:
            if expand:
                return self.az.compute.gallery_image_versions.get(g_rg, g_name, g_def, version, expand=expand)
            return self.az.compute.gallery_image_versions.get(g_rg, g_name, g_def, version)
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise

    def publish(self, record: BakeRecord, log: Log, *, replace_existing: bool = False) -> str:
        parse_version(record.version)
        if not record.smoke or not record.smoke.get("passed"):
            raise AzureTargetError(f"refusing to publish {record.image} {record.version}: the smoke test did not pass")
        if not record.artifact_id or not _IMAGE_ID.match(record.artifact_id):
            raise AzureTargetError(f"publish: the record has no managed image id (artifact_id={record.artifact_id!r})")
        g_rg, g_name, g_def = self._gallery()
        where = f"{g_name}/{g_def}/{record.version}"
        manifest = self._record_manifest(record)  # before anything is made: a bad manifest fails here
        existing = self._get_version(record.version)
        if existing is not None:
            tags = _tags(existing)
            same = (tags.get(TAG_RUN) == (record.dag_run_id or "")
                    and tags.get(TAG_PACKER) == (record.packer_run_uuid or ""))
            state = _text(existing.provisioning_state)
            if same and state.lower() in _IN_PROGRESS - {"deleting"}:
                log(f"publish: {where} from this run is {state}: waiting for it")
                existing = self._wait_version(record.version, log, self.publish_timeout)
                state = _text(existing.provisioning_state)
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
        started = time.monotonic()
        poller = self.az.compute.gallery_image_versions.begin_create_or_update(g_rg, g_name, g_def,
                                                                               record.version, body)
        if not self._follow_replication(record.version, poller, log, started + self.publish_timeout):
            raise AzureTargetError(
                f"publish: {where} is still replicating after {self.publish_timeout:.0f}s (the publish deadline). "
                "Azure goes on replicating it: a retry of this task adopts the version once it is done and "
                "creates no second one"
            )
        result = poller.result()
        if _text(result.provisioning_state).lower() != "succeeded":
            raise AzureTargetError(f"publish: {where} ended {_text(result.provisioning_state)}")
        log(f"publish: {where} published in {time.monotonic() - started:.1f}s: {result.id} (packages from "
            f"{(record.inputs or {}).get('label', 'unrecorded inputs')}"
            f"{', rebuilt by a backfill' if record.run_type == 'backfill' else ''})")
        if manifest is not None:
            self._log_diff(record.image, record.version, manifest, log)
        return result.id

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
        for name, text in ((sbom_blob, self._sbom(record, manifest)), (manifest_blob, manifest.to_json())):
            try:
                container.upload_blob(name, text.encode(), overwrite=True, metadata=metadata,
                                      content_settings=ContentSettings(content_type="application/json"))
            except Exception as exc:
                why = _storage_error(exc)
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

    def _follow_replication(self, version: str, poller: Any, log: Log, deadline: float) -> bool:
        """Log replication progress until the LRO is done (True) or the deadline passes (False)."""
        seen: dict[str, tuple[str, int]] = {}
        while not poller.done():
            if time.monotonic() > deadline:
                return False
            try:
                self._log_replication(version, seen, log)
            except AzureError as exc:  # progress is informative only
                log(f"publish: could not read the replication status ({_error_text(exc)})")
            poller.wait(self.progress_interval)
        try:
            self._log_replication(version, seen, log)
        except Exception:  # noqa: BLE001,S110 - the poller's result decides
            pass
        return True

    def _log_replication(self, version: str, seen: dict[str, tuple[str, int]], log: Log) -> Any:
        v = self._get_version(version, expand="ReplicationStatus")
        status = getattr(v, "replication_status", None) if v is not None else None
        for s in getattr(status, "summary", None) or []:
            now = (_text(s.state), int(s.progress or 0))
            if seen.get(s.region) != now:
                seen[s.region] = now
                detail = f": {s.details}" if getattr(s, "details", None) else ""
                log(f"publish: replication to {s.region}: {now[0]} {now[1]}%{detail}")
        return v

    def _wait_version(self, version: str, log: Log, timeout: float = 6 * 3600) -> Any:
        deadline = time.monotonic() + timeout
        seen: dict[str, tuple[str, int]] = {}
        while True:
            v = self._log_replication(version, seen, log)
            if v is None:
                raise AzureTargetError(f"publish: version {version} disappeared while waiting for it")
            if _text(v.provisioning_state).lower() not in _IN_PROGRESS:
                return v
            if time.monotonic() > deadline:
                raise AzureTargetError(f"publish: version {version} still {_text(v.provisioning_state)} after {timeout:.0f}s")
            time.sleep(self.progress_interval)

    def _delete_version(self, version: str) -> None:
        g_rg, g_name, g_def = self._gallery()
        try:
            self.az.compute.gallery_image_versions.begin_delete(g_rg, g_name, g_def, version).result()
        except Exception as exc:
            if not _is_not_found(exc):
                raise AzureTargetError(f"could not delete gallery image version {g_name}/{g_def}/{version}: "
                                       f"{_error_text(exc)}") from exc

    # --- versions & prune ----------------------------------------------------------------------
    def _facts(self) -> list[VersionFacts]:
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
                published=_aware(getattr(profile, "published_date", None)),
                state=_text(v.provisioning_state) or "Succeeded",
                pinned=_tags(v).get(TAG_PINNED, "").strip().lower() == "true",
                regions=len(getattr(profile, "target_regions", None) or []) or 1,
                allow_deletion_of_replicated_locations=getattr(safety, "allow_deletion_of_replicated_locations", None),
                block_deletion_before_end_of_life=bool(getattr(safety, "block_deletion_before_end_of_life", False)),
                end_of_life=_aware(getattr(profile, "end_of_life_date", None)),
                source_id=source,
                id=v.id,
                rebuilt_at=_tags(v).get(TAG_REBUILT, ""),
            ))
        return sorted(out, key=lambda f: version_key(f.name))

    def published(self, image: str, version: str) -> dict[str, Any] | None:
        """What the gallery image version records, shaped like the local target's metadata: its tags,
        with the digests (``template_digest``, ``base_digest``, ``variables_digest``,
        ``manifest_digest``) and ``rebuilt_at`` None when absent, ``inputs`` as ``{"label": ...}``,
        ``created`` (its publish date), ``published_id`` and ``provisioning_state``. None: no such
        version, or one whose creation Failed (nothing usable is published under that number)."""
        v = self._get_version(version)
        if v is None:
            return None
        state = _text(getattr(v, "provisioning_state", None)) or "Succeeded"
        if state.lower() == "failed":
            return None
        tags = _tags(v)
        meta: dict[str, Any] = dict(tags)
        for key in (TAG_DIGEST, TAG_BASE, TAG_VARIABLES, TAG_MANIFEST, TAG_REBUILT):
            meta[key] = tags.get(key) or None
        meta["inputs"] = {"label": tags[TAG_INPUTS]} if tags.get(TAG_INPUTS) else None
        when = _aware(getattr(getattr(v, "publishing_profile", None), "published_date", None))
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
            if _is_not_found(exc):
                return None
            raise AzureTargetError(f"cannot read {name} from {self._blob_where()}: {_storage_error(exc)}") from exc
        try:
            return Manifest.from_dict(json.loads(data))
        except (ValueError, ManifestError) as exc:
            raise AzureTargetError(f"{name} in {self._blob_where()} is not a bakery package manifest: {exc}") from None

    def list_versions(self, image: str) -> list[PublishedVersion]:
        return [PublishedVersion(image=image, version=f.name,
                                 created=f.published.isoformat(timespec="seconds") if f.published else "",
                                 pinned=f.pinned, published_id=f.id) for f in self._facts()]

    def _own_image(self, image: str, source_id: str | None) -> tuple[str, str] | None:
        """(resource group, name) of a managed image this bakery made for ``image``, else None."""
        m = _IMAGE_ID.match(source_id or "")
        if not m or m["rg"].lower() != self.cfg.managed_image_resource_group.lower():
            return None
        if not re.fullmatch(re.escape(image) + r"-\d+-\d+-\d+", m["name"]):
            return None
        return m["rg"], m["name"]

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
        images: dict[str, tuple[str, str]] = {}
        for f in doomed + [k for k in kept if k.state.lower() == "succeeded"]:
            own = self._own_image(image, f.source_id)
            if own is not None:
                images[f"{own[0]}/{own[1]}".lower()] = own
        if dry_run:
            for f in doomed:
                log(f"prune {image}: would delete version {f.name} (dry run)")
            for rg, name in images.values():
                log(f"prune {image}: would delete managed image {rg}/{name} if it still exists (dry run)")
            return [f.name for f in doomed]

        failures: list[str] = []
        deleted: list[str] = []

        def delete_version(f: VersionFacts) -> str:
            self._delete_version(f.name)
            return f.name

        for name, error in self._bounded(delete_version, doomed):
            if error is None:
                deleted.append(name)
                log(f"prune {image}: deleted version {name}")
            else:
                failures.append(f"version {name}: {error}")
        def delete_image(own: tuple[str, str]) -> str:
            try:
                self.az.compute.images.begin_delete(own[0], own[1]).result()
            except Exception as exc:
                if _is_not_found(exc):
                    return ""
                raise
            return f"{own[0]}/{own[1]}"

        for label, error in self._bounded(delete_image, list(images.values())):
            if error is not None:
                failures.append(f"managed image {label}: {error}")
            elif label:
                log(f"prune {image}: deleted intermediate managed image {label} (its gallery version holds the copy)")
        kept_names = [f.name for f in facts if f.name not in set(deleted)]
        log(f"prune {image}: kept {len(kept_names)} version(s): {', '.join(kept_names)}")
        if failures:
            raise AzureTargetError(f"prune {image}: some deletions failed:\n  - " + "\n  - ".join(failures))
        return deleted

    def _bounded(self, fn: Callable[[Any], str], items: list[Any]) -> list[tuple[str, str | None]]:
        """Run ``fn`` on every item, at most PRUNE_CONCURRENCY at a time: [(label, error or None)]."""
        if not items:
            return []
        results: list[tuple[str, str | None]] = []
        with ThreadPoolExecutor(max_workers=min(PRUNE_CONCURRENCY, len(items)),
                                thread_name_prefix="bakery-prune") as pool:
            futures = [(item, pool.submit(fn, item)) for item in items]
            for item, fut in futures:
                label = getattr(item, "name", None) or (f"{item[0]}/{item[1]}" if isinstance(item, tuple) else str(item))
                try:
                    results.append((fut.result(), None))
                except Exception as exc:  # noqa: BLE001 - collected, raised together after all ran
                    results.append((label, _error_text(exc)))
        return results
