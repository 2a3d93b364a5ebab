"""The Azure Marketplace images the emulator knows, and ARM's purchase-plan rule for VMs.

A small stand-in for ``Microsoft.Compute/locations/{location}/publishers/{publisher}/artifacttypes/
vmimage/offers/{offer}/skus/{sku}/versions[/{version}]`` (the "Virtual Machine Images" API: a list
answers a bare JSON array, a get a ``VirtualMachineImage`` with ``properties.plan`` and
``hyperVGeneration``; an unknown image is ``404 NotFound`` "Artifact: VMImage was not found.").
Publisher, offer and SKU compare case-insensitively, as ARM does.

The list's order: ARM documents none; the emulator answers in name order *as strings* (``9.10.x``
before ``9.4.x``), and honours ``$orderby=name desc`` (also as strings: ``8.9...`` above ``8.10...``,
Azure/azure-rest-api-specs#30142) and ``$top``, so a client that takes "the last one listed" or
``$top=1&$orderby=name desc`` for ``latest`` is caught. A VM created with ``version: latest`` gets the
highest version compared as numbers, as Azure's does (:func:`resolve`).

Each emulator has its own copy of :data:`IMAGES` (``Arm.marketplace``): a test publishes a newer base
image with ``ArmEmulator.publish_marketplace_version``.

The purchase-plan rule (``VMMarketplaceInvalidInput``, 400), with ARM's three messages:

* a VM from a Marketplace image that has a plan, or from a custom image (managed image, gallery
  image version) whose source carried one, must send the same ``plan`` in its body;
* a VM whose image has no plan must send none;
* a plan that differs (name, product, publisher) is refused.

A managed image captured from a VM keeps that VM's plan and Hyper-V generation (ARM does not show the
plan on the image; the emulator keeps it in the resource's internal ``meta["plan"]``), a gallery image
version keeps its source's; a VM from a gallery image version needs the image definition's
``purchasePlan`` when it has one, else its source's plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from .arm import ArmError


@dataclass(frozen=True)
class MarketplaceImage:
    publisher: str
    offer: str
    sku: str
    versions: tuple[str, ...]
    hyper_v_generation: str = "V2"
    plan: dict | None = None  # {"name", "product", "publisher"}
    os_type: str = "Linux"
    architecture: str = "x64"


ALMALINUX_9_GEN2_PLAN = {"name": "9-gen2", "product": "almalinux-x86_64", "publisher": "almalinux"}
ALMALINUX_9_GEN1_PLAN = {"name": "9-gen1", "product": "almalinux-x86_64", "publisher": "almalinux"}

IMAGES: tuple[MarketplaceImage, ...] = (
    # AlmaLinux's offers carry a purchase plan (free, but Azure refuses a VM without it)
    MarketplaceImage("almalinux", "almalinux-x86_64", "9-gen2", ("9.4.2024050902", "9.5.202411260"),
                     "V2", ALMALINUX_9_GEN2_PLAN),
    MarketplaceImage("almalinux", "almalinux-x86_64", "9-gen1", ("9.4.2024050901", "9.5.202411261"),
                     "V1", ALMALINUX_9_GEN1_PLAN),
    # Canonical's and Debian's have none
    MarketplaceImage("Canonical", "ubuntu-24_04-lts", "server", ("24.04.202411110", "24.04.202411260"), "V2"),
    MarketplaceImage("Canonical", "ubuntu-24_04-lts", "server-gen1", ("24.04.202411110", "24.04.202411260"), "V1"),
    MarketplaceImage("Debian", "debian-12", "12-gen2", ("0.20241111.1927", "0.20241125.1942"), "V2"),
    MarketplaceImage("Debian", "debian-12", "12", ("0.20241111.1927", "0.20241125.1942"), "V1"),
    MarketplaceImage("RedHat", "RHEL", "9-lvm-gen2", ("9.4.2024081415", "9.5.2024112713"), "V2"),
)


def version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.split("."))


def not_found() -> ArmError:
    return ArmError(404, "NotFound", "Artifact: VMImage was not found.")


def find(publisher: str | None, offer: str | None, sku: str | None,
         images: Sequence[MarketplaceImage] = IMAGES) -> MarketplaceImage | None:
    for image in images:
        if (str(publisher or "").lower(), str(offer or "").lower(), str(sku or "").lower()) == (
                image.publisher.lower(), image.offer.lower(), image.sku.lower()):
            return image
    return None


def resolve(image_ref: dict, images: Sequence[MarketplaceImage] = IMAGES) -> tuple[MarketplaceImage, str]:
    """The Marketplace image and concrete version of a VM's ``imageReference`` (``latest``: the highest
    version compared as numbers)."""
    image = find(image_ref.get("publisher"), image_ref.get("offer"), image_ref.get("sku"), images)
    if image is None:
        raise not_found()
    version = str(image_ref.get("version") or "latest")
    if version.lower() == "latest":
        return image, max(image.versions, key=version_key)
    if version not in image.versions:
        raise not_found()
    return image, version


def list_versions(image: MarketplaceImage, query: dict) -> list[str]:
    """*Virtual Machine Images - List*: names as strings ascending, or ``$orderby=name desc``; ``$top``."""
    names = sorted(image.versions)
    order = " ".join(str(query.get("$orderby") or "").lower().split())
    if order in ("name desc",):
        names.reverse()
    elif order not in ("", "name", "name asc"):
        raise ArmError(400, "InvalidParameter", f"The value of parameter $orderby '{query['$orderby']}' is invalid.")
    top = query.get("$top")
    if top is not None:
        if not str(top).isdigit():
            raise ArmError(400, "InvalidParameter", f"The value of parameter $top '{top}' is invalid.")
        names = names[: int(top)]
    return names


def with_version(images: Sequence[MarketplaceImage], publisher: str, offer: str, sku: str,
                 version: str) -> list[MarketplaceImage]:
    """``images`` with ``version`` added to the image publisher:offer:sku (a new Marketplace release)."""
    image = find(publisher, offer, sku, images)
    if image is None:
        raise KeyError(f"no Marketplace image {publisher}:{offer}:{sku} in the emulator")
    if version in image.versions:
        return list(images)
    return [replace(i, versions=(*i.versions, version)) if i is image else i for i in images]


def image_id(sub: str, location: str, image: MarketplaceImage, version: str | None = None) -> str:
    rid = (f"/Subscriptions/{sub}/Providers/Microsoft.Compute/Locations/{location}/Publishers/{image.publisher}"
           f"/ArtifactTypes/VMImage/Offers/{image.offer}/Skus/{image.sku}")
    return rid + (f"/Versions/{version}" if version else "")


def render_version(sub: str, location: str, image: MarketplaceImage, version: str) -> dict:
    props: dict = {"hyperVGeneration": image.hyper_v_generation, "architecture": image.architecture,
                   "osDiskImage": {"operatingSystem": image.os_type}, "dataDiskImages": [],
                   "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": False},
                   "imageDeprecationStatus": {"imageState": "Active"}}
    if image.plan:
        props["plan"] = dict(image.plan)
    return {"name": version, "location": location, "id": image_id(sub, location, image, version),
            "properties": props}


def _plan_key(plan: dict | None) -> tuple[str, ...]:
    return tuple(str((plan or {}).get(k) or "").lower() for k in ("name", "product", "publisher"))


def same_plan(a: dict | None, b: dict | None) -> bool:
    return _plan_key(a) == _plan_key(b)


def check_plan(required: dict | None, given: dict | None, os_disk_name: str) -> None:
    """ARM's purchase-plan rule for a VM create (see the module doc); ``required``: the image's plan."""
    given = given if isinstance(given, dict) and any(given.get(k) for k in ("name", "product", "publisher")) else None
    if required and not given:
        raise ArmError(400, "VMMarketplaceInvalidInput",
                       "Creating a virtual machine from Marketplace image requires Plan information in the request. "
                       f"OS disk name is {os_disk_name}.")
    if given and not required:
        raise ArmError(400, "VMMarketplaceInvalidInput",
                       "Creating a virtual machine from a non Marketplace image does not need Plan information, "
                       f"please remove the Plan information in the request. OS disk name is {os_disk_name}.")
    if required and given and not same_plan(required, given):
        raise ArmError(400, "VMMarketplaceInvalidInput",
                       "The purchase information does not match. Unable to deploy from the Marketplace image. "
                       f"OS disk name is {os_disk_name}.")
