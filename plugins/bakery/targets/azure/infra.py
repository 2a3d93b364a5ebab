"""The infrastructure check of an Azure bake (``prepare``), and what the template builds from.

Before anything is built, ``prepare`` checks that every long-lived piece the bake needs exists (the
resource groups, the gallery image definition, the smoke-test subnet, the SBOM container), naming the
catalogue field of each missing one, and that the image definition fits what the template builds:

* **OS type and state**: Linux, generalized (azure-arm deprovisions the build VM and captures a
  generalized managed image; a version of it cannot go into a specialized definition);
* **Hyper-V generation**: the managed image has the generation of the template's Marketplace base
  image (``base_image_publisher/offer/sku/version``), which ARM's "Virtual Machine Images" API tells;
* **purchase plan**: the template's ``plan_*`` variables must equal the definition's ``purchasePlan``
  (a VM from a gallery version of a plan image needs it) and the base image's own plan (else Azure
  refuses the build VM with ``VMMarketplaceInvalidInput``).

A mismatch would otherwise show at publish or on the first VM, after an hour of build and smoke test.

**The base image of a bake.** A template's ``base_image_version`` is usually ``latest``: ``prepare``
resolves it (the highest version *Virtual Machine Images - List* answers, compared numerically as Azure
does), gives Packer that version, and records it as the bake's ``base_digest``
(``marketplace:<publisher>:<offer>:<sku>:<version>``), which becomes the gallery version's
``base_digest`` tag: the next nightly's ``check_changes`` sees a new Marketplace image as a change.

**Where the purchase plan comes from.** From the Packer variables of the bake: the catalogue's
``variables`` (``plan_name``, ``plan_product``, ``plan_publisher``) override the defaults the template
declares (a string literal ``default`` in its ``*.pkr.hcl``), exactly as Packer resolves them. The plan
is recorded in the bake record (``extra["purchase_plan"]``: a dict, or None for a base without one),
and the smoke-test VM sends it: Azure requires the plan of a VM made from a custom image whose source
carried one. A variable whose default is not a literal (or a template that declares none) leaves the
plan unknown: the check says so and the smoke test uses the gallery image definition's
``purchasePlan`` instead (the definition must carry the base's plan anyway).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bakery.record import BakeRecord
from bakery.targets.azure.common import (
    BUILDER_ID,
    IMAGE_ID,
    AzureBase,
    AzureTargetError,
    is_not_found,
    managed_image_name,
    storage_error,
    text,
)
from bakery.targets.base import Log
from bakery.versioning import parse_version

PLAN_VARIABLES = ("plan_name", "plan_product", "plan_publisher")
BASE_VARIABLES = ("base_image_publisher", "base_image_offer", "base_image_sku", "base_image_version")
# azure-arm captures a generalized managed image (it deprovisions and generalizes the build VM)
BUILT_OS_STATE = "Generalized"

_VARIABLE = re.compile(r'^variable\s+"(?P<name>[^"]+)"\s*\{\s*$')
_DEFAULT = re.compile(r"^\s*default\s*=\s*(?P<value>.+?)\s*$")


@dataclass(frozen=True)
class PurchasePlan:
    """A Marketplace purchase plan (VM ``plan``, image definition ``purchasePlan``, Packer ``plan_info``)."""

    name: str
    product: str
    publisher: str

    @classmethod
    def of(cls, value: Any) -> PurchasePlan | None:
        """From a dict or an SDK model (``PurchasePlan``, ``Plan``); None when it is absent or empty."""
        if value is None:
            return None
        get = value.get if isinstance(value, Mapping) else lambda k: getattr(value, k, None)
        plan = cls(*(str(get(k) or "") for k in ("name", "product", "publisher")))
        return plan if any((plan.name, plan.product, plan.publisher)) else None

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "product": self.product, "publisher": self.publisher}

    def same(self, other: PurchasePlan | None) -> bool:
        return other is not None and all(a.lower() == b.lower() for a, b in zip(
            (self.name, self.product, self.publisher), (other.name, other.product, other.publisher)))

    def __str__(self) -> str:
        return f"name {self.name!r}, product {self.product!r}, publisher {self.publisher!r}"


def same_plan(a: PurchasePlan | None, b: PurchasePlan | None) -> bool:
    """Equal plans (case-insensitive, as ARM compares them), or both none."""
    return a.same(b) if a is not None else b is None


def plan_text(plan: PurchasePlan | None) -> str:
    return str(plan) if plan is not None else "none"


def template_files(spec: Any, folder: Path | None = None) -> dict[str, str]:
    """The top-level ``*.pkr.hcl`` files Packer reads for the image (name -> text): those of ``folder``
    (default: the spec's ``template_dir``, which ``bakery.bake.prepare`` points at the run's rendered
    folder), or, when it holds none (a family folder of ``include/packer``), the family's folder
    rendered in memory by ``bakery.templates``."""
    folder = Path(folder or spec.template_dir)
    files = {p.name: p.read_text(errors="replace") for p in sorted(folder.glob("*.pkr.hcl"))}
    if files:
        return files
    try:
        from bakery import templates

        rendered = templates.rendered_files(spec)
    except Exception:  # noqa: BLE001 - no template to read: the check says what it could not compare
        return {}
    return {name: text for name, text in sorted(rendered.items()) if "/" not in name and name.endswith(".pkr.hcl")}


def template_defaults(files: Mapping[str, str] | Path) -> dict[str, str | None]:
    """The variables a template declares (in its top-level ``*.pkr.hcl``: a folder, or name -> text),
    with their default when it is a string literal (None otherwise: no default, or an expression).
    Relies on the ``packer fmt`` layout (a block closed by a ``}`` at column 0), which the templates keep."""
    if isinstance(files, Path):
        files = {p.name: p.read_text(errors="replace") for p in sorted(files.glob("*.pkr.hcl"))}
    out: dict[str, str | None] = {}
    for _, content in sorted(files.items()):
        name: str | None = None
        for line in content.splitlines():
            if name is None:
                if m := _VARIABLE.match(line):
                    name = m["name"]
                    out[name] = None
                continue
            if line.rstrip() == "}":
                name = None
            elif line.startswith("  ") and not line.startswith("   ") and (m := _DEFAULT.match(line)):
                out[name] = _string_literal(m["value"])
    return out


def _string_literal(value: str) -> str | None:
    if not (value.startswith('"') and value.endswith('"')) or "${" in value or "%{" in value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, str) else None


@dataclass(frozen=True)
class BuildSource:
    """What an Azure template builds from, as Packer resolves its variables for this bake."""

    plan: PurchasePlan | None  # the template's plan_* (None: no plan)
    plan_known: bool  # False: the template declares no plan_* variables, or one is not a literal
    base: tuple[str, str, str, str] | None  # Marketplace publisher, offer, sku, version (None: unknown)
    why_unknown: str = ""
    declared: frozenset[str] = frozenset()  # the variables the template declares


def build_source(spec: Any, template_dir: Path | None = None) -> BuildSource:
    """The bake's base image and purchase plan: the catalogue's ``variables`` over the template's defaults."""
    folder = Path(template_dir or spec.template_dir)
    defaults = template_defaults(template_files(spec, folder))
    given = dict(getattr(spec, "variables", None) or {})
    notes: list[str] = []

    def value(name: str) -> str | None:
        if name in given:
            return str(given[name])
        if name not in defaults:
            notes.append(f"the template {folder} declares no variable {name!r}")
            return None
        if defaults[name] is None:
            notes.append(f"the default of variable {name!r} in {folder} is not a string literal "
                         f"(set it in the catalogue's variables)")
        return defaults[name]

    plan_values = [value(n) for n in PLAN_VARIABLES]
    plan_known = all(v is not None for v in plan_values)
    plan = PurchasePlan(*(v or "" for v in plan_values)) if plan_known else None
    if plan is not None and not any((plan.name, plan.product, plan.publisher)):
        plan = None
    base_values = [value(n) for n in BASE_VARIABLES]
    base = tuple(v or "" for v in base_values) if all(base_values[:3]) else None
    return BuildSource(plan=plan, plan_known=plan_known,
                       base=(base[0], base[1], base[2], base[3] or "latest") if base else None,
                       why_unknown="; ".join(dict.fromkeys(notes)), declared=frozenset(defaults))


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def latest_marketplace_version(names: list[str]) -> str:
    """What Azure's ``latest`` means for a Marketplace image: the highest version, its ``Major.Minor.Build``
    parts compared as **numbers** (``9.10.x`` above ``9.9.x``). The *Virtual Machine Images - List* API
    promises no order, and its ``$orderby=name desc`` sorts names as strings (``8.9...`` above
    ``8.10...``: Azure/azure-rest-api-specs#30142, ansible-collections/azure#1667), so the bakery lists
    every version and picks the highest itself, as a VM created with ``version: latest`` gets
    (ansible-collections/azure#2282)."""
    return max(names, key=_version_key)


def base_digest_of(base: tuple[str, str, str, str], version: str) -> str:
    """The record's ``base_digest`` of an Azure bake: the Marketplace image version it builds from,
    ``marketplace:<publisher>:<offer>:<sku>:<version>`` (``latest`` resolved)."""
    publisher, offer, sku, _ = base
    return f"marketplace:{publisher}:{offer}:{sku}:{version}"


class InfraSteps(AzureBase):
    """``prepare``: the infrastructure check and Packer's variables; ``artifact_id``."""

    def prepare(self, spec: Any, record: BakeRecord, work_dir: Path, *, accelerator: str = "auto", log: Log,
                inputs: Any = None, pool: Any = None) -> tuple[dict[str, Any], str | None]:
        """Check the Azure side the bake relies on; return Packer's variables (no credentials: the
        Azure Packer operator adds those from the connection) and the base digest: the Marketplace
        image version the build starts from (``marketplace:<publisher>:<offer>:<sku>:<version>``, a
        ``latest`` resolved now), which ``bake.check_changes`` compares with the latest version's
        ``base_digest`` tag. Packer gets that very version (``base_image_version``), not ``latest``: the
        build cannot start from a newer image than the one recorded. The bake's purchase plan goes to
        ``record.extra["purchase_plan"]`` (when it is known), for the smoke-test VM."""
        parse_version(record.version)
        source = build_source(spec)
        base = self.check_infrastructure(log, source)
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
        if source.plan_known:
            record.extra["purchase_plan"] = source.plan.to_dict() if source.plan else None
        base_digest = None
        if base is not None and source.base is not None:
            base_digest = base_digest_of(source.base, base["version"])
            record.extra["base_image"] = {"urn": base["urn"], "requested": ":".join(source.base)}
            if "base_image_version" in source.declared:
                variables["base_image_version"] = base["version"]
            if source.base[3].lower() == "latest":
                log(f"base image: {':'.join(source.base)} is {base['urn']} in {cfg.location} (the highest "
                    "version the Marketplace lists); the build starts from that version")
        log(f"Packer builds managed image {cfg.managed_image_resource_group}/"
            f"{managed_image_name(spec.name, record.version)} in {cfg.location}"
            + (f" from {base['urn']}" if base else f" from {':'.join(source.base)}" if source.base else "")
            + (f", purchase plan {plan_text(source.plan)}" if source.plan_known else ""))
        return variables, base_digest

    def check_infrastructure(self, log: Log, source: BuildSource | None = None) -> dict[str, Any] | None:
        """Fail early, naming the catalogue field, when what the bake needs does not exist or does not fit
        what the template builds (``source``: default, from the image's catalogue entry and template).
        Returns the template's Marketplace base image as ARM describes it (``urn``, ``version`` with
        ``latest`` resolved, ``hyper_v_generation``, ``plan``), or None when the template's base is unknown."""
        az, cfg = self.az, self.cfg
        source = source if source is not None else build_source(self.spec)
        problems: list[str] = []

        def need(what: str, fld: str, get: Callable[[], Any]) -> Any:
            try:
                return get()
            except Exception as exc:
                if is_not_found(exc):
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
        base = self._base_image(source, problems)
        if definition is not None:
            problems += self._definition_fits(definition, source, base)
        elif base is not None and source.plan_known and not same_plan(source.plan, base["plan"]):
            problems.append(self._plan_vs_base(source.plan, base))
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
                                f"{storage_error(exc)}")
        if problems:
            raise AzureTargetError("the Azure resources of image " + repr(self.spec.name) + " are not ready:\n  - "
                                   + "\n  - ".join(problems))
        if not source.plan_known or source.base is None:
            log(f"infrastructure check of {self.spec.name}: {source.why_unknown}: the purchase plan and Hyper-V "
                "generation of what it builds were not compared with the gallery image definition")
        log(f"Azure resources of {self.spec.name} are in place (subscription {az.subscription_id})")
        return base

    def _base_image(self, source: BuildSource, problems: list[str]) -> dict[str, Any] | None:
        """The template's Marketplace base image as ARM describes it: {urn, version, hyper_v_generation, plan}
        (``latest``: :func:`latest_marketplace_version` of what *Virtual Machine Images - List* answers)."""
        if source.base is None:
            return None
        publisher, offer, sku, version = source.base
        images = self.az.compute.virtual_machine_images
        location = self.cfg.location
        urn = f"{publisher}:{offer}:{sku}:{version}"
        try:
            if version.lower() == "latest":
                listed = [i.name for i in images.list(location, publisher, offer, sku)]
                if not listed:
                    raise LookupError("no version")
                version = latest_marketplace_version(listed)
            image = images.get(location, publisher, offer, sku, version)
        except Exception as exc:
            if not (isinstance(exc, LookupError) or is_not_found(exc)):
                raise
            problems.append(f"the template's base image {urn} is not in the Azure Marketplace of {location} (template "
                            "variables base_image_publisher/offer/sku/version, catalogue field azure.location): "
                            "list the offers with `az vm image list --all -l <location> -p <publisher> -f <offer>` "
                            "and fix the catalogue's variables")
            return None
        return {"urn": f"{publisher}:{offer}:{sku}:{version}", "version": version,
                "hyper_v_generation": text(getattr(image, "hyper_v_generation", None)) or "V1",
                "plan": PurchasePlan.of(getattr(image, "plan", None))}

    def _definition_fits(self, definition: Any, source: BuildSource, base: dict[str, Any] | None) -> list[str]:
        _, g_name, g_def = self._gallery()
        where = f"gallery image definition {g_name}/{g_def} (catalogue field azure.gallery.image_definition)"
        create = ("a definition's OS type, OS state, Hyper-V generation and purchase plan cannot be changed: "
                  "create one that fits (docs/azure.md) and point the catalogue at it")
        out = []
        os_type = text(getattr(definition, "os_type", None)) or "Linux"
        if os_type.lower() != "linux":
            out.append(f"{where} is for {os_type}, not Linux")
        os_state = text(getattr(definition, "os_state", None)) or BUILT_OS_STATE
        if os_state.lower() != BUILT_OS_STATE.lower():
            out.append(f"{where} is {os_state}, but the azure-arm build captures a {BUILT_OS_STATE} image: {create}")
        generation = text(getattr(definition, "hyper_v_generation", None)) or "V1"  # ARM's default
        if base is not None and base["hyper_v_generation"].lower() != generation.lower():
            out.append(f"{where} is Hyper-V generation {generation}, but the template's base image {base['urn']} "
                       f"is {base['hyper_v_generation']} (so is the image the build captures): {create}, or choose a "
                       "base of that generation (catalogue variables base_image_sku)")
        wanted = PurchasePlan.of(getattr(definition, "purchase_plan", None))
        if source.plan_known and not same_plan(wanted, source.plan):
            out.append(f"{where} has purchase plan {plan_text(wanted)}, but the template builds from a base with plan "
                       f"{plan_text(source.plan)} (template variables plan_name/plan_product/plan_publisher): VMs "
                       f"from its versions would need that plan. {create}")
        if base is not None and source.plan_known and not same_plan(source.plan, base["plan"]):
            out.append(self._plan_vs_base(source.plan, base))
        return out

    @staticmethod
    def _plan_vs_base(plan: PurchasePlan | None, base: dict[str, Any]) -> str:
        return (f"the template's purchase plan is {plan_text(plan)} (template variables plan_name/plan_product/"
                f"plan_publisher), but its base image {base['urn']} has plan {plan_text(base['plan'])}: Azure "
                "refuses the build VM (VMMarketplaceInvalidInput); set the catalogue's variables plan_* to the "
                "base's plan (`az vm image show --urn <urn> --query plan`)")

    def artifact_id(self, artifact: dict[str, Any]) -> str:
        builder, ident = artifact.get("builder_id"), str(artifact.get("id") or "")
        if builder != BUILDER_ID or not IMAGE_ID.match(ident):
            raise AzureTargetError(
                f"expected a managed image from the azure-arm builder ({BUILDER_ID}), got builder {builder!r} "
                f"with id {ident!r}: the template must set managed_image_name/managed_image_resource_group_name"
            )
        return ident
