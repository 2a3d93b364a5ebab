"""The image catalogue: a declarative YAML file listing the images to bake, validated up front.

Every error names the file, the image and the field, and all errors are reported at once.
No Airflow import here: the DAG factory and the tests use this module directly.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from croniter import croniter

from bakery.packages.inputs import Mirror
from bakery.targets.base import SmokeCheck

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CATALOGUE = REPO_ROOT / "include" / "catalogue.yaml"
DEFAULT_PACKER_DIR = REPO_ROOT / "include" / "packer"

TARGETS = ("local", "azure")
_NAME = r"^[a-z][a-z0-9-]{0,62}[a-z0-9]$"

# --- Azure names, as ARM validates them ------------------------------------------------------------
_RESOURCE_GROUP = {"type": "string", "pattern": r"^[-\w._()]{0,89}[-\w_()]$",
                   "description": "a resource group name (1-90 letters, digits, _ - . ( ), not ending with .)"}
_GALLERY_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9](?:[A-Za-z0-9_.]{0,78}[A-Za-z0-9])?$",
                 "description": "a gallery name (1-80 letters, digits, _ or ., no - ; starts and ends alphanumeric)"}
_GALLERY_IMAGE = {"type": "string", "pattern": r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9])?$",
                  "description": "a gallery image definition name (1-80 letters, digits, _ - .)"}
_NETWORK_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?$",
                 "description": "a virtual network / subnet name (1-80 letters, digits, _ - .)"}
_REGION = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9 ]{1,40}$",
           "description": "an Azure region name such as westeurope (az account list-locations -o table)"}
# Packer's azure-arm `location` and ARM want the region's name, not its display name ("West Europe")
_LOCATION = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9]{1,40}$",
             "description": "an Azure region's name, without spaces, such as westeurope (the Name column of "
                            "`az account list-locations -o table`, not the DisplayName)"}
_VM_SIZE = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_-]{1,63}$", "description": "a VM size such as Standard_B2s"}
_UUID = {"type": "string", "pattern": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
         "description": "a subscription id (a GUID)"}
# Blob container names: 3-63 lowercase letters, digits and hyphens, starting and ending with a letter
# or digit, no two hyphens in a row
_BLOB_CONTAINER = {"type": "string", "pattern": r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$",
                   "description": "a blob container name (3-63 lowercase letters, digits and single hyphens, "
                                  "starting and ending with a letter or digit)"}
_CONN_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,250}$",
            "description": "an Airflow connection id (letters, digits, _ . -)"}
STORAGE_ACCOUNT_TYPES = ("Standard_LRS", "Standard_ZRS", "Premium_LRS", "PremiumV2_LRS")
SMOKE_MODES = ("public", "private")

_AZURE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["conn_id", "location", "managed_image_resource_group", "gallery", "smoke_test"],
    "properties": {
        "conn_id": _CONN_ID,
        "subscription_id": _UUID,
        "location": _LOCATION,
        "vm_size": _VM_SIZE,
        "build_resource_group": _RESOURCE_GROUP,
        "managed_image_resource_group": _RESOURCE_GROUP,
        "gallery": {
            "type": "object",
            "additionalProperties": False,
            "required": ["resource_group", "name", "image_definition"],
            "properties": {
                "resource_group": _RESOURCE_GROUP,
                "name": _GALLERY_NAME,
                "image_definition": _GALLERY_IMAGE,
            },
        },
        "target_regions": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": _REGION,
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 100},
                    "storage_account_type": {"enum": list(STORAGE_ACCOUNT_TYPES)},
                },
            },
        },
        "end_of_life_days": {"type": "integer", "minimum": 1, "maximum": 3650},
        "exclude_from_latest": {"type": "boolean"},
        "allow_deletion_of_replicated_locations": {"type": "boolean"},
        "keep_failed_image": {"type": "boolean"},
        # how long publish waits for the version's replication (a trigger waits: no worker is held)
        # and how often it reads the replication status
        "replication": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"timeout_minutes": {"type": "number", "exclusiveMinimum": 0, "maximum": 2880},
                           "poll_seconds": {"type": "number", "minimum": 0.1, "maximum": 600}},
        },
        "smoke_test": {
            "type": "object",
            "additionalProperties": False,
            "required": ["resource_group", "vnet", "subnet", "allowed_source_cidr"],
            "properties": {
                "resource_group": _RESOURCE_GROUP,
                "vnet": _NETWORK_NAME,
                "vnet_resource_group": _RESOURCE_GROUP,
                "subnet": _NETWORK_NAME,
                "mode": {"enum": list(SMOKE_MODES)},
                "allowed_source_cidr": {"type": "string", "minLength": 1},
                "vm_size": _VM_SIZE,
                "admin_username": {"type": "string", "pattern": r"^[a-z_][a-z0-9_-]{0,31}$",
                                   "description": "a Linux user name"},
            },
        },
        "prune": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"min_age_hours": {"type": "number", "minimum": 0, "maximum": 87600},
                           # version deletes in flight at once (each a long-running operation of ~a minute)
                           "concurrency": {"type": "integer", "minimum": 1, "maximum": 64,
                                           "description": "deletes at once: 1 to 64"}},
        },
        # where each version's SBOM and package manifest go: <image>/<version>/sbom.cdx.json and
        # <image>/<version>/packages.json in this blob container (Airflow wasb connection)
        "sbom": {
            "type": "object",
            "additionalProperties": False,
            "required": ["conn_id", "container"],
            "properties": {"conn_id": _CONN_ID, "container": _BLOB_CONTAINER},
        },
    },
}

_SMOKE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {"type": "string", "pattern": r"^/[A-Za-z0-9._~/%?=&-]*$"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "expect_status": {"type": "integer", "minimum": 100, "maximum": 599},
        "expect_text": {"type": "string", "minLength": 1},
        "timeout_seconds": {"type": "integer", "minimum": 10, "maximum": 7200,
                            "description": "seconds the smoke test waits for the expected answer: 10 to 7200"},
    },
}
_PRUNE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        # the same bounds as the DAG's prune_keep Param (its default comes from here)
        "keep": {"type": "integer", "minimum": 1, "maximum": 100,
                 "description": "how many of the newest versions prune keeps: 1 to 100 (the newest always stays)"},
        "dry_run": {"type": "boolean", "description": "true or false"},
    },
}
# packages.mirrors[]: family deb: a Debian-style archive (url + suites + components); family rpm: an rpm
# repository base URL (the folder holding repodata/), no suites or components (checked in _packages_spec)
_MIRROR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "pattern": r"^https?://[^\s]+$",
                "description": "an http(s) URL (a Debian-style archive, or an rpm repository base URL)"},
        "suites": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^[A-Za-z0-9._/-]+$"}},
        "components": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^[A-Za-z0-9._-]+$"}},
        "snapshot": {"type": "string", "pattern": r"^https?://[^\s]*\{timestamp\}[^\s]*$",
                     "description": "a URL template of a date-addressed archive with {timestamp} "
                                    "(YYYYmmddTHHMMSSZ), e.g. http://snapshot.debian.org/archive/debian/{timestamp}"},
        "trusted": {"type": "boolean", "description": "true or false (true only for unsigned test archives)"},
        "signed_by": {"type": "string", "pattern": r"^/[A-Za-z0-9._/+-]+$",
                      "description": "an absolute path in the build guest to the keyring that signs this archive "
                                     "(apt's signed-by), e.g. /usr/share/keyrings/debian-archive-keyring.gpg"},
    },
}
_PACKAGES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "family": {"enum": ["deb", "rpm"]},
        "arch": {"type": "string", "pattern": r"^[a-z0-9_]+$"},
        "mirrors": {"type": "array", "items": _MIRROR},
        "retention_days": {"type": "number", "minimum": 0, "maximum": 3650,
                           "description": "days a pruned version's pool index and packages are kept: 0 to 3650"},
        "index_max_age_hours": {"type": "number", "minimum": 0, "maximum": 168,
                                "description": "hours a build reuses a mirror's InRelease/Release unasked when the mirror "
                                               "sends no ETag or Last-Modified: 0 to 168"},
    },
}
_BACKFILL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "protect_days": {"type": "number", "minimum": 0, "maximum": 3650,
                         "description": "days prune keeps a version made by a backfill: 0 to 3650"},
    },
}
_CHANNELS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "soak_hours": {"type": "number", "minimum": 0, "maximum": 8760,
                       "description": "hours a candidate soaks before promote_<image> may make it stable: 0 to 8760"},
        "promote_schedule": {"type": ["string", "null"],
                             "description": "when promote_<image> looks for a soaked candidate (cron or preset; "
                                            "null: manual promotion only)"},
    },
}
_IMAGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["target", "template"],
    "properties": {
        "description": {"type": "string"},
        "target": {"enum": list(TARGETS)},
        "template": {"type": "string", "pattern": r"^[A-Za-z0-9._-]+$"},
        "schedule": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "variables": {
            "type": "object",
            "additionalProperties": {"type": ["string", "integer", "number", "boolean"]},
        },
        "smoke_test": _SMOKE,
        "prune": _PRUNE,
        "build_timeout_minutes": {"type": "integer", "minimum": 5, "maximum": 1440},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10},
        "azure": _AZURE,
        "packages": _PACKAGES,
        "backfill": _BACKFILL,
        "channels": _CHANNELS,
    },
}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["images"],
    "properties": {
        "version": {"const": 1},
        "images": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": _NAME},
            "additionalProperties": _IMAGE,
        },
    },
}


# what Airflow accepts besides a cron expression (airflow.utils.dates.cron_presets, @once, @continuous)
SCHEDULE_PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


class CatalogueError(ValueError):
    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid image catalogue {path}:\n{lines}")


@dataclass(frozen=True)
class PrunePolicy:
    keep: int = 3
    dry_run: bool = False


@dataclass(frozen=True)
class ChannelsSpec:
    """Release channels of an image (``bakery.channels``): a new version is published as ``candidate``
    (not what ``latest`` resolves to) and becomes ``stable`` through ``promote_<image>``: by schedule once
    it has soaked ``soak_hours``, or by hand; ``rollback_<image>`` makes an older version stable."""

    soak_hours: float = 24.0
    promote_schedule: str | None = "@hourly"


@dataclass(frozen=True)
class PackagesSpec:
    """Where an image's packages come from (for the inputs of a bake and the pending-update check).

    ``family`` deb: each mirror an archive with suites and components, ``arch`` its ``binary-<arch>``
    index; rpm: each mirror an rpm repository (its base URL names the architecture), ``arch`` for the
    reader (default x86_64); packages are matched by name and architecture as installed."""

    family: str = "deb"
    arch: str = "amd64"
    mirrors: tuple[Mirror, ...] = ()
    retention_days: float = 90.0
    index_max_age_hours: float = 6.0  # bakery.packages.indexcache: only for mirrors that send no validators


@dataclass(frozen=True)
class TargetRegion:
    name: str  # as written in the catalogue, e.g. "westeurope"
    replicas: int = 1
    storage_account_type: str = "Standard_LRS"


@dataclass(frozen=True)
class GalleryRef:
    resource_group: str
    name: str
    image_definition: str


@dataclass(frozen=True)
class AzureSmokeNetwork:
    """Where the smoke-test VM of an Azure image runs, and who may reach its HTTP port."""

    resource_group: str
    vnet: str
    subnet: str
    allowed_source_cidr: str
    vnet_resource_group: str | None = None  # default: resource_group
    mode: str = "public"  # public: Static public IP; private: the NIC's private IP only
    vm_size: str = "Standard_B1s"
    admin_username: str = "bakery"

    @property
    def subnet_id_parts(self) -> tuple[str, str, str]:
        return (self.vnet_resource_group or self.resource_group, self.vnet, self.subnet)


@dataclass(frozen=True)
class BlobStoreRef:
    """A blob container reached through an Airflow ``wasb`` connection (the Azure provider's)."""

    conn_id: str
    container: str


@dataclass(frozen=True)
class AzureSpec:
    conn_id: str
    location: str
    managed_image_resource_group: str
    gallery: GalleryRef
    smoke_test: AzureSmokeNetwork
    subscription_id: str | None = None  # default: the connection's subscriptionId
    vm_size: str = "Standard_D2s_v5"  # the Packer build VM
    build_resource_group: str | None = None  # default: Packer makes a temporary one in location
    target_regions: tuple[TargetRegion, ...] = ()  # default: location only, 1 replica
    end_of_life_days: int | None = None
    exclude_from_latest: bool = False
    allow_deletion_of_replicated_locations: bool = True
    keep_failed_image: bool = False
    prune_min_age_hours: float = 24.0
    prune_concurrency: int = 16  # gallery image version deletes in flight at once
    sbom: BlobStoreRef | None = None  # where the versions' SBOMs and manifests go (None: nowhere)
    replication_timeout_minutes: float = 240.0  # publish's deadline for the version's replication
    replication_poll_seconds: float = 30.0  # how often the wait reads the replication status

    def regions(self) -> tuple[TargetRegion, ...]:
        return self.target_regions or (TargetRegion(self.location),)


def normalize_region(name: str) -> str:
    """"West Europe" / "westeurope" -> "westeurope" (ARM's canonical form)."""
    return "".join(name.split()).lower()


def _check_cidr(value: str) -> str | None:
    """Why ``value`` is not an acceptable smoke-test source range (None: fine)."""
    text = value.strip()
    if text in ("*", "0.0.0.0/0", "::/0") or text.lower() in ("any", "internet", "0.0.0.0"):
        return f"{value!r} would open the smoke-test VM to the whole Internet; give your runners' range, e.g. 203.0.113.0/24"
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"{value!r} is not an IP address or CIDR range (e.g. 203.0.113.0/24 or 10.20.0.0/16)"
    if net.prefixlen == 0:
        return f"{value!r} would open the smoke-test VM to the whole Internet; give your runners' range"
    return None


def _azure_spec(where: str, target: str, entry: dict[str, Any], problems: list[str]) -> AzureSpec | None:
    raw = entry.get("azure")
    if target != "azure":
        if raw is not None:
            problems.append(f"{where}, field 'azure': only images with target 'azure' take an azure block "
                            f"(this one has target {target!r})")
        return None
    if raw is None:
        problems.append(f"{where}, field 'azure': target 'azure' needs an azure block (conn_id, location, "
                        "managed_image_resource_group, gallery, smoke_test); see docs/azure.md")
        return None
    smoke = raw["smoke_test"]
    why = _check_cidr(smoke["allowed_source_cidr"])
    if why:
        problems.append(f"{where}, field 'azure.smoke_test.allowed_source_cidr': {why}")
    regions = tuple(TargetRegion(**r) for r in raw.get("target_regions", ()))
    seen: set[str] = set()
    for i, r in enumerate(regions):
        key = normalize_region(r.name)
        if key in seen:
            problems.append(f"{where}, field 'azure.target_regions.{i}.name': region {r.name!r} is listed twice")
        seen.add(key)
    if regions and normalize_region(raw["location"]) not in seen:
        problems.append(
            f"{where}, field 'azure.target_regions': must include the location {raw['location']!r} "
            "(a gallery image version is always stored in the region of its source image)"
        )
    gallery = raw["gallery"]
    return AzureSpec(
        conn_id=raw["conn_id"],
        location=raw["location"],
        managed_image_resource_group=raw["managed_image_resource_group"],
        gallery=GalleryRef(**gallery),
        smoke_test=AzureSmokeNetwork(**smoke),
        subscription_id=raw.get("subscription_id"),
        vm_size=raw.get("vm_size", AzureSpec.vm_size),
        build_resource_group=raw.get("build_resource_group"),
        target_regions=regions,
        end_of_life_days=raw.get("end_of_life_days"),
        exclude_from_latest=raw.get("exclude_from_latest", False),
        allow_deletion_of_replicated_locations=raw.get("allow_deletion_of_replicated_locations", True),
        keep_failed_image=raw.get("keep_failed_image", False),
        prune_min_age_hours=float(raw.get("prune", {}).get("min_age_hours", AzureSpec.prune_min_age_hours)),
        prune_concurrency=int(raw.get("prune", {}).get("concurrency", AzureSpec.prune_concurrency)),
        sbom=BlobStoreRef(**raw["sbom"]) if raw.get("sbom") else None,
        replication_timeout_minutes=float(raw.get("replication", {}).get(
            "timeout_minutes", AzureSpec.replication_timeout_minutes)),
        replication_poll_seconds=float(raw.get("replication", {}).get(
            "poll_seconds", AzureSpec.replication_poll_seconds)),
    )


DEFAULT_ARCH = {"deb": "amd64", "rpm": "x86_64"}


def _packages_spec(where: str, raw: dict[str, Any], problems: list[str]) -> PackagesSpec:
    """The ``packages`` block. deb mirrors are archives read suite by suite (``suites`` required,
    ``components`` default main); an rpm mirror's ``url`` is the repository itself (``.../BaseOS/x86_64/os``),
    so it takes neither."""
    family = raw.get("family", "deb")
    mirrors = []
    for n, m in enumerate(raw.get("mirrors", ())):
        fld = f"{where}, field 'packages.mirrors.{n}"
        if family == "deb":
            if not m.get("suites"):
                problems.append(f"{fld}.suites': required for family deb: the archive's suites to read, e.g. "
                                "[bookworm, bookworm-updates] (or set packages.family: rpm for an rpm repository)")
                continue
            if m.get("trusted") and m.get("signed_by"):
                problems.append(f"{fld}': trusted and signed_by together: trusted: true skips the signature "
                                "check that signed_by names the keyring for; keep one")
                continue
            mirrors.append(Mirror(url=m["url"].rstrip("/"), suites=tuple(m["suites"]),
                                  components=tuple(m.get("components", ["main"])), snapshot=m.get("snapshot"),
                                  trusted=bool(m.get("trusted", False)), signed_by=m.get("signed_by")))
            continue
        if "signed_by" in m:
            problems.append(f"{fld}.signed_by': not used for family rpm: dnf checks a repository with the keys "
                            "of the guest's own repository configuration (gpgkey); remove signed_by")
            continue
        unused = [k for k in ("suites", "components") if k in m]
        if unused:
            problems.append(f"{fld}.{unused[0]}': not used for family rpm: the url is the repository itself, the "
                            "folder that holds repodata/ (e.g. https://repo.almalinux.org/almalinux/9/BaseOS/x86_64/os); "
                            f"remove {' and '.join(unused)}")
            continue
        mirrors.append(Mirror(url=m["url"].rstrip("/"), suites=(), components=(), snapshot=m.get("snapshot"),
                              trusted=bool(m.get("trusted", False))))
    return PackagesSpec(family=family, arch=raw.get("arch", DEFAULT_ARCH.get(family, "amd64")),
                        mirrors=tuple(mirrors), retention_days=float(raw.get("retention_days", 90)),
                        index_max_age_hours=float(raw.get("index_max_age_hours", 6)))


@dataclass(frozen=True)
class ImageSpec:
    name: str
    target: str
    template: str
    template_dir: Path
    schedule: str | None = "0 2 * * *"
    description: str = ""
    tags: tuple[str, ...] = ()
    variables: dict[str, Any] = field(default_factory=dict)
    smoke_test: SmokeCheck = SmokeCheck()
    prune: PrunePolicy = PrunePolicy()
    build_timeout_minutes: int = 90
    retries: int = 1
    azure: AzureSpec | None = None
    packages: PackagesSpec = PackagesSpec()
    backfill_protect_days: float = 7.0
    channels: ChannelsSpec | None = None  # None: no channels, every publish moves ``latest`` (as before)
    catalogue_path: Path | None = None  # the file it was read from (error messages name it)


def _where(err: jsonschema.ValidationError) -> str:
    path = list(err.absolute_path)
    if len(path) >= 2 and path[0] == "images":
        fld = ".".join(str(p) for p in path[2:]) or "(the image entry)"
        return f"image {path[1]!r}, field {fld!r}"
    if path:
        return "field " + repr(".".join(str(p) for p in path))
    return "top level"


def _message(err: jsonschema.ValidationError) -> str:
    if err.validator == "additionalProperties":
        known = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(known))
        hints = [f"{x!r} -> {m[0]!r}?" for x in extra if (m := difflib.get_close_matches(x, known, n=1))]
        return (f"unknown field(s) {', '.join(map(repr, extra))} (allowed: {', '.join(known)})"
                + (f"; did you mean {', '.join(hints)}" if hints else ""))
    if err.validator == "enum":
        return f"{err.instance!r} is not one of {', '.join(map(repr, err.validator_value))}"
    if err.validator == "pattern" and err.schema.get("description"):
        return f"{err.instance!r} is not {err.schema['description']}"
    if "propertyNames" in err.schema_path:
        return (
            f"image name {err.instance!r} must be 2-64 lower-case letters, digits or '-', "
            "starting with a letter"
        )
    if err.schema.get("description") and err.validator in ("minimum", "maximum", "type"):
        return f"{err.message} (expected {err.schema['description']})"
    return err.message


def parse_catalogue(
    data: Any, *, path: Path = DEFAULT_CATALOGUE, packer_dir: Path = DEFAULT_PACKER_DIR
) -> dict[str, ImageSpec]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    problems = [f"{_where(e)}: {_message(e)}" for e in errors]
    if problems:
        raise CatalogueError(path, problems)

    specs: dict[str, ImageSpec] = {}
    for name, entry in data["images"].items():
        where = f"image {name!r}"
        schedule = entry.get("schedule", "0 2 * * *")
        channels = entry.get("channels")
        promote_schedule = (channels or {}).get("promote_schedule", "@hourly")
        for fld, value in (("schedule", schedule), ("channels.promote_schedule", promote_schedule)):
            if value is not None and not (value in SCHEDULE_PRESETS
                                          or (not value.startswith("@") and croniter.is_valid(value))):
                problems.append(
                    f"{where}, field {fld!r}: {value!r} is not a valid cron expression: five fields, UTC "
                    "(minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-6), e.g. '0 2 * * *' "
                    f"for 02:00 every night; or one of {', '.join(SCHEDULE_PRESETS)}; or null for manual runs only")
        template_dir = packer_dir / entry["template"]
        if not template_dir.is_dir():
            problems.append(
                f"{where}, field 'template': no template folder {template_dir} "
                f"(expected one of: {', '.join(sorted(p.name for p in packer_dir.iterdir() if p.is_dir()))})"
            )
        azure = _azure_spec(where, entry["target"], entry, problems)
        if entry["target"] == "azure" and len(name) > 47:
            problems.append(f"{where}: an Azure image name must be at most 47 characters (the managed image "
                            "<name>-<version with dashes> must fit in 80)")
        specs[name] = ImageSpec(
            name=name,
            target=entry["target"],
            template=entry["template"],
            template_dir=template_dir,
            schedule=schedule,
            description=entry.get("description", ""),
            tags=tuple(entry.get("tags", ())),
            variables=dict(entry.get("variables", {})),
            smoke_test=SmokeCheck(**entry.get("smoke_test", {})),
            prune=PrunePolicy(**entry.get("prune", {})),
            build_timeout_minutes=entry.get("build_timeout_minutes", 90),
            retries=entry.get("retries", 1),
            azure=azure,
            packages=_packages_spec(where, entry.get("packages") or {}, problems),
            backfill_protect_days=float((entry.get("backfill") or {}).get("protect_days", 7.0)),
            channels=None if channels is None else ChannelsSpec(
                soak_hours=float(channels.get("soak_hours", 24.0)), promote_schedule=promote_schedule),
            catalogue_path=path,
        )
    if problems:
        raise CatalogueError(path, problems)
    return specs


def catalogue_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The catalogue file: ``path``, else ``$BAKERY_CATALOGUE``, else include/catalogue.yaml."""
    return Path(path or os.environ.get("BAKERY_CATALOGUE") or DEFAULT_CATALOGUE)


class UnknownImageError(KeyError):
    """An image name that is not in the catalogue (the message lists the ones that are)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def get_image(name: str, path: str | os.PathLike[str] | None = None) -> ImageSpec:
    """The catalogue entry of image ``name``; an :class:`UnknownImageError` naming the known ones if none."""
    specs = load_catalogue(path)
    spec = specs.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, list(specs), n=1, cutoff=0.8)
        raise UnknownImageError(
            f"no image {name!r} in the catalogue {catalogue_path(path)} (its images: {', '.join(sorted(specs))})"
            + (f"; did you mean {close[0]!r}?" if close else ".")
            + " Check the name, or add the image to the catalogue (an image removed from it keeps no DAG: "
            "its DAG disappears at the next parse)"
        )
    return spec


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser: several times faster
_PARSED: dict[tuple[str, str, int], dict[str, ImageSpec]] = {}  # (file, its text, the template folder's mtime)


def load_catalogue(path: str | os.PathLike[str] | None = None) -> dict[str, ImageSpec]:
    """The catalogue's images by name. One DAG-file parse reads it from several DAG files (and a task
    from the operators): the result is reused while the file's text and the template folder (its
    entries' mtime) stay the same, so it is parsed and validated once per process, not once per reader."""
    path = catalogue_path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogueError(path, [f"cannot read the file: {exc.strerror}"]) from None
    try:
        key = (str(path), text, DEFAULT_PACKER_DIR.stat().st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _PARSED:
        return dict(_PARSED[key])
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise CatalogueError(path, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    specs = parse_catalogue(data, path=path)
    if key is not None:
        _PARSED.clear()  # the last one only: a changed file replaces it
        _PARSED[key] = specs
    return dict(specs)
