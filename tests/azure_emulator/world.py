"""The platform's Azure infrastructure, made in an emulator, for tests of the Azure target and DAGs.

What a platform team creates once before pointing the bakery at a subscription (docs/azure.md):
resource groups for images, the gallery and the smoke tests, a gallery with one image definition per
image family, a virtual network with a smoke-test subnet, and a service principal. Here they are made
through the real Azure SDK, authenticated by a client-secret credential against the emulator's own
token endpoint, exactly as the product authenticates.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from .marketplace import ALMALINUX_9_GEN2_PLAN
from .server import ArmEmulator

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000a1"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "66666666-7777-8888-9999-000000000000"
LOCATION = "eastus2"
IMAGES_RG = "rg-bakery-images"
GALLERY_RG = "rg-bakery-gallery"
SMOKE_RG = "rg-bakery-smoke"
GALLERY = "bakery_gallery"
VNET = "vnet-bakery-smoke"
SUBNET = "snet-smoke"
SMOKE_CIDR = "198.51.100.0/28"
# The purchase plan of each image family's Marketplace base, as its template's plan_* variables say
# (include/packer/<template>/variables.pkr.hcl): AlmaLinux's carries one, Canonical's none. The gallery
# image definition must carry it too (docs/azure.md), and so must every VM made from the image.
BASE_PLANS: dict[str, dict | None] = {"rhel9-nginx": dict(ALMALINUX_9_GEN2_PLAN), "ubuntu2404-nginx": None}


@dataclass
class AzureWorld:
    emu: ArmEmulator
    client_secret: str = field(default_factory=lambda: "bakery-sp-" + secrets.token_urlsafe(24))
    subscription_id: str = SUBSCRIPTION
    tenant_id: str = TENANT
    client_id: str = CLIENT_ID
    location: str = LOCATION

    def __post_init__(self) -> None:
        self.emu.add_client(self.tenant_id, self.client_id, self.client_secret)

    # --- the connection the product uses ------------------------------------------------------------
    def connection_extra(self, **more: Any) -> dict:
        return {"tenantId": self.tenant_id, "subscriptionId": self.subscription_id,
                "resource_manager_endpoint": self.emu.endpoint, "authority_host": self.emu.authority_host,
                "connection_verify": self.emu.ca_bundle, "polling_interval": 0.05, **more}

    def connection(self, **more: Any) -> dict:
        """An Airflow ``azure`` connection (the JSON form of ``AIRFLOW_CONN_<ID>``)."""
        return {"conn_type": "azure", "login": self.client_id, "password": self.client_secret,
                "extra": self.connection_extra(**more)}

    def connection_json(self, **more: Any) -> str:
        return json.dumps(self.connection(**more))

    def credential(self) -> Any:
        from azure.identity import ClientSecretCredential

        return ClientSecretCredential(self.tenant_id, self.client_id, self.client_secret,
                                      authority=self.emu.authority_host, disable_instance_discovery=True,
                                      connection_verify=self.emu.ca_bundle)

    def clients(self) -> Any:
        """``bakery.azure_clients.AzureClients`` for the emulator (what the hook builds)."""
        from bakery.azure_clients import ArmSettings, make_clients

        return make_clients(self.credential(), ArmSettings(
            subscription_id=self.subscription_id, resource_manager_endpoint=self.emu.endpoint,
            connection_verify=self.emu.ca_bundle, polling_interval=0.05))

    # --- infrastructure -----------------------------------------------------------------------------
    def create_infrastructure(self, image_definitions: tuple[str, ...] = ("rhel9-nginx",), **definition: Any) -> None:
        """Resource groups, gallery, image definitions (Linux, generalized, Hyper-V V2, with the family's
        purchase plan, as docs/azure.md creates them; ``definition`` overrides their properties, e.g.
        ``hyperVGeneration="V1"`` or ``purchasePlan=None``) and the smoke-test VNet."""
        az = self.clients()
        try:
            for rg in (IMAGES_RG, GALLERY_RG, SMOKE_RG):
                az.resource.resource_groups.create_or_update(rg, {"location": self.location})
            az.compute.galleries.begin_create_or_update(GALLERY_RG, GALLERY, {"location": self.location}).result()
            for name in image_definitions:
                props = {"osType": "Linux", "osState": "Generalized", "hyperVGeneration": "V2",
                         "identifier": {"publisher": "bakery", "offer": name, "sku": "nightly"}}
                if BASE_PLANS.get(name):
                    props["purchasePlan"] = dict(BASE_PLANS[name])
                props.update(definition)
                az.compute.gallery_images.begin_create_or_update(GALLERY_RG, GALLERY, name, {
                    "location": self.location, "properties": {k: v for k, v in props.items() if v is not None},
                }).result()
            az.network.virtual_networks.begin_create_or_update(SMOKE_RG, VNET, {
                "location": self.location,
                "properties": {"addressSpace": {"addressPrefixes": ["10.42.0.0/16"]},
                               "subnets": [{"name": SUBNET, "properties": {"addressPrefix": "10.42.1.0/24"}}]},
            }).result()
        finally:
            az.close()

    def make_managed_image(self, image: str, version: str, rg: str = IMAGES_RG, *,
                           plan: dict | None | str = "base") -> str:
        """What the azure-arm build leaves: a generalized managed image named <image>-<version with dashes>,
        captured from a VM of the family's Marketplace base: it keeps that base's purchase plan (``plan``:
        "base" = BASE_PLANS[image], or a plan, or None), which ARM does not show but requires of every VM
        made from the image (the fake packer makes it so by really capturing a build VM)."""
        from bakery.targets.azure import managed_image_name

        az = self.clients()
        try:
            image_id = az.compute.images.begin_create_or_update(rg, managed_image_name(image, version), {
                "location": self.location, "tags": {"image": image, "version": version, "managed_by": "image-bakery"},
                "properties": {"storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized"}},
                               "hyperVGeneration": "V2"},
            }).result().id
        finally:
            az.close()
        with self.emu.arm.lock:
            self.emu.state.get(image_id).meta["plan"] = BASE_PLANS.get(image) if plan == "base" else plan
        return image_id

    def azure_block(self, image_definition: str = "rhel9-nginx", **more: Any) -> dict:
        """The catalogue's ``azure:`` block for this world."""
        block = {
            "conn_id": "azure_emu",
            "location": self.location,
            "vm_size": "Standard_B2s",
            "managed_image_resource_group": IMAGES_RG,
            "gallery": {"resource_group": GALLERY_RG, "name": GALLERY, "image_definition": image_definition},
            "target_regions": [
                {"name": self.location, "replicas": 2, "storage_account_type": "Standard_ZRS"},
                {"name": "westeurope", "replicas": 1, "storage_account_type": "Standard_LRS"},
            ],
            "end_of_life_days": 90,
            "exclude_from_latest": False,
            "smoke_test": {"resource_group": SMOKE_RG, "vnet": VNET, "subnet": SUBNET, "mode": "public",
                           "allowed_source_cidr": SMOKE_CIDR, "vm_size": "Standard_B1s"},
            "prune": {"min_age_hours": 24},
            "replication": {"poll_seconds": 0.5},  # the emulator replicates in seconds
        }
        block.update(more)
        return block

    # --- inspection ----------------------------------------------------------------------------------
    SMOKE_TYPES = ("Microsoft.Compute/virtualMachines", "Microsoft.Network/networkInterfaces",
                   "Microsoft.Network/publicIPAddresses", "Microsoft.Network/networkSecurityGroups",
                   "Microsoft.Compute/disks")

    def leftovers(self) -> list[str]:
        """Every VM, NIC, public IP, NSG and disk still in the emulator."""
        return [rid for t in self.SMOKE_TYPES for rid in self.emu.state.ids(t)]

    def created_twice(self) -> list[str]:
        from collections import Counter

        counts = Counter(rid.lower() for rid in self.emu.state.created_ids())
        return sorted(rid for rid, n in counts.items() if n > 1)
