"""The ARM emulator, driven only through the real Azure SDK clients (and the fake packer as a process).

These tests pin the ARM behaviour the bakery's Azure target relies on: LROs (201/202 + polling),
paging, ARM error shapes, validation, VM/network lifecycle with an HTTP-answering "VM", and faults.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient

from tests.azure_emulator import FAKE_PACKER, ArmEmulator, StaticTokenCredential

SUB = "00000000-0000-0000-0000-0000000000a1"
RG = "bakery-rg"
GALLERY = "bakery_gallery"
IMAGE_DEF = "nginx"
REPO = Path(__file__).resolve().parents[2]


# --- fixtures & helpers -----------------------------------------------------------------------------
@pytest.fixture
def emu():
    emulator = ArmEmulator(retry_after=0)
    try:
        yield emulator
    finally:
        emulator.stop()
    assert emulator.internal_errors == []


class Clients:
    def __init__(self, emu: ArmEmulator) -> None:
        cred = StaticTokenCredential()
        kwargs = emu.client_kwargs(polling_interval=0.02)
        self.resource = ResourceManagementClient(cred, SUB, **kwargs)
        self.compute = ComputeManagementClient(cred, SUB, **kwargs)
        self.network = NetworkManagementClient(cred, SUB, **kwargs)


@pytest.fixture
def az(emu):
    return Clients(emu)


def make_rg(az: Clients, name: str = RG, location: str = "eastus2"):
    return az.resource.resource_groups.create_or_update(name, {"location": location})


def make_image(az: Clients, name: str = "nginx-img-1", tags=None, rg: str = RG):
    body = {"location": "eastus2", "tags": tags or {"bakery_image": "nginx"},
            "properties": {"storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized"}}}}
    return az.compute.images.begin_create_or_update(rg, name, body).result()


def make_gallery(az: Clients):
    az.compute.galleries.begin_create_or_update(RG, GALLERY, {"location": "eastus2"}).result()
    return az.compute.gallery_images.begin_create_or_update(RG, GALLERY, IMAGE_DEF, {
        "location": "eastus2",
        "properties": {"osType": "Linux", "osState": "Generalized", "hyperVGeneration": "V2",
                       "identifier": {"publisher": "bakery", "offer": "nginx", "sku": "debian12"}},
    }).result()


def version_body(source_id: str, regions=("eastus2",), tags=None, safety=None) -> dict:
    props = {"publishingProfile": {"targetRegions": [{"name": r} for r in regions]},
             "storageProfile": {"source": {"id": source_id}}}
    if safety is not None:
        props["safetyProfile"] = safety
    return {"location": "eastus2", "tags": tags or {}, "properties": props}


def publish(az: Clients, version: str, source_id: str, **kwargs):
    return az.compute.gallery_image_versions.begin_create_or_update(
        RG, GALLERY, IMAGE_DEF, version, version_body(source_id, **kwargs)).result()


def http_get(address: str, port: int, timeout: float = 3.0) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{address}:{port}/", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def raw_request(emu: ArmEmulator, method: str, path: str, token: str | None = "t") -> tuple[int, dict]:
    ctx = ssl.create_default_context(cafile=emu.ca_bundle)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(emu.endpoint.rstrip("/") + path, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ctx))
    try:
        with opener.open(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as err:
        raw = err.read()
        return err.code, json.loads(raw) if raw else {}


# --- gallery publishing ------------------------------------------------------------------------------
def test_gallery_image_version_create_is_a_201_lro_polled_to_success(emu, az):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    seen = []
    poller = az.compute.gallery_image_versions.begin_create_or_update(
        RG, GALLERY, IMAGE_DEF, "1.0.0",
        version_body(image.id, regions=("eastus2", "West Europe"), tags={"bakery_run": "r1"}),
        raw_response_hook=lambda resp: seen.append(resp.http_response))
    assert poller.status() == "InProgress"
    version = poller.result()

    first = seen[0]
    assert first.status_code == 201
    assert first.headers["Azure-AsyncOperation"].startswith(emu.endpoint.rstrip("/") + f"/subscriptions/{SUB}/")
    assert "Retry-After" in first.headers
    assert json.loads(first.text())["properties"]["provisioningState"] == "Creating"

    assert version.provisioning_state == "Succeeded"
    assert version.location == "eastus2"  # normalized ...
    assert [t.name for t in version.publishing_profile.target_regions] == ["East US 2", "West Europe"]  # ... display
    assert version.publishing_profile.published_date is not None
    assert version.tags == {"bakery_run": "r1"}
    assert version.storage_profile.source.id == image.id

    # the SDK polled the operation URL (InProgress for replication_polls polls) and then re-read the version
    log = emu.log
    put_at = next(i for i, r in enumerate(log) if r.method == "PUT" and r.path.endswith("/versions/1.0.0"))
    polls = [r for r in log[put_at + 1:] if "/providers/Microsoft.Compute/locations/eastus2/capsOperations/" in r.path]
    assert len(polls) == 3 and all(p.status == 200 for p in polls)
    last = emu.log[-1]
    assert (last.method, last.path.endswith("/versions/1.0.0"), last.status) == ("GET", True, 200)
    assert emu.count("PUT", r"/versions/1\.0\.0$") == 1

    expanded = az.compute.gallery_image_versions.get(RG, GALLERY, IMAGE_DEF, "1.0.0", expand="ReplicationStatus")
    status = expanded.replication_status
    assert status.aggregated_state == "Completed"
    assert [(s.region, s.state, s.progress) for s in status.summary] == [
        ("East US 2", "Completed", 100), ("West Europe", "Completed", 100)]
    assert az.compute.gallery_image_versions.get(RG, GALLERY, IMAGE_DEF, "1.0.0").replication_status is None


def test_replication_advances_per_region_while_polling():
    with ArmEmulator(retry_after=0, replication_polls=4) as emu:
        az = Clients(emu)
        make_rg(az)
        image = make_image(az)
        make_gallery(az)
        az.compute.gallery_image_versions.begin_create_or_update(
            RG, GALLERY, IMAGE_DEF, "1.0.0", version_body(image.id, regions=("eastus2", "westeurope")),
            polling=False)
        observed = []
        for _ in range(10):
            v = az.compute.gallery_image_versions.get(RG, GALLERY, IMAGE_DEF, "1.0.0", expand="ReplicationStatus")
            observed.append((v.provisioning_state, v.replication_status.aggregated_state,
                             [s.progress for s in v.replication_status.summary]))
            if v.provisioning_state == "Succeeded":
                break
        assert observed[0][:2] == ("Creating", "InProgress")
        assert observed[-1] == ("Succeeded", "Completed", [100, 100])
        totals = [sum(p) for _, _, p in observed]
        assert totals == sorted(totals) and len(set(totals)) > 2  # progress really advances
        assert any(p[0] == 100 and p[1] < 100 for _, _, p in observed)  # region by region
        assert emu.internal_errors == []


def test_slow_replication_fault_keeps_the_lro_in_progress(emu, az):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    emu.faults.slow_replication(0.6)
    started = time.monotonic()
    publish(az, "1.0.0", image.id)
    assert time.monotonic() - started >= 0.6
    assert emu.count("GET", r"/versions/1\.0\.0$") == 1  # the final re-read
    assert emu.count("GET", r"/capsOperations/") > 2 + 2 + 3  # gallery, image definition: 2 polls each


def test_listing_versions_follows_next_links(emu, az):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    for v in ("1.0.0", "1.0.1", "1.1.0", "2.0.0", "10.0.0"):
        publish(az, v, image.id)
    names = [v.name for v in az.compute.gallery_image_versions.list_by_gallery_image(RG, GALLERY, IMAGE_DEF)]
    assert sorted(names) == sorted(["1.0.0", "1.0.1", "1.1.0", "2.0.0", "10.0.0"])
    pages = emu.requests("GET", r"/images/nginx/versions$")
    assert len(pages) == 3  # page size 2
    assert [p.query.get("$skiptoken") for p in pages] == [None, "2", "4"]
    assert all(p.query.get("api-version") for p in pages)


def test_delete_is_a_202_lro_then_404_and_204(emu, az):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    publish(az, "1.0.0", image.id)
    seen = []
    az.compute.gallery_image_versions.begin_delete(
        RG, GALLERY, IMAGE_DEF, "1.0.0", raw_response_hook=lambda r: seen.append(r.http_response)).result()
    assert seen[0].status_code == 202
    assert "Azure-AsyncOperation" in seen[0].headers and "Location" in seen[0].headers
    with pytest.raises(ResourceNotFoundError) as err:
        az.compute.gallery_image_versions.get(RG, GALLERY, IMAGE_DEF, "1.0.0")
    assert err.value.error.code == "ResourceNotFound"
    assert err.value.status_code == 404

    location = seen[0].headers["Location"]  # Location-style monitoring: 204 once the delete is done
    assert "monitor=true" in location
    assert raw_request(emu, "GET", location[len(emu.endpoint) - 1:])[0] == 204

    az.compute.gallery_image_versions.begin_delete(RG, GALLERY, IMAGE_DEF, "1.0.0").result()  # already gone
    assert emu.requests("DELETE", r"/versions/1\.0\.0$")[-1].status == 204

    with pytest.raises(ResourceNotFoundError) as err:
        az.compute.gallery_image_versions.get("no-such-rg", GALLERY, IMAGE_DEF, "1.0.0")
    assert err.value.error.code == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError) as err:
        az.compute.gallery_image_versions.get(RG, "nogallery", IMAGE_DEF, "1.0.0")
    assert err.value.error.code == "ParentResourceNotFound"


@pytest.mark.parametrize("name", ["1.0", "1.0.0.0", "a.b.c", "1.0.2147483648", "-1.0.0", "1..0"])
def test_version_names_must_be_major_minor_patch_int32(emu, az, name):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    with pytest.raises(HttpResponseError) as err:
        publish(az, name, image.id)
    assert err.value.status_code == 400
    assert err.value.error.code == "InvalidParameter"
    assert not emu.state.ids("Microsoft.Compute/galleries/images/versions")


def test_largest_int32_version_is_fine(emu, az):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    assert publish(az, "2147483647.0.1", image.id).provisioning_state == "Succeeded"


def test_version_source_is_immutable_but_tags_update(emu, az):
    make_rg(az)
    image = make_image(az)
    other = make_image(az, "nginx-img-2")
    make_gallery(az)
    publish(az, "1.0.0", image.id, tags={"a": "1"})
    with pytest.raises(ResourceExistsError) as err:
        publish(az, "1.0.0", other.id)
    assert err.value.status_code == 409
    assert err.value.error.code == "PropertyChangeNotAllowed"
    assert "storageProfile.source.id" in err.value.error.message

    updated = publish(az, "1.0.0", image.id, tags={"a": "2"})
    assert updated.tags == {"a": "2"}
    assert emu.state.created_ids("Microsoft.Compute/galleries/images/versions") == [updated.id]  # created once
    assert [e[0] for e in emu.state.events(type_="Microsoft.Compute/galleries/images/versions")] == ["create", "update"]


def test_missing_source_image_is_404(emu, az):
    make_rg(az)
    make_gallery(az)
    missing = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/images/ghost"
    with pytest.raises(ResourceNotFoundError) as err:
        publish(az, "1.0.0", missing)
    assert "ghost" in err.value.error.message


def test_safety_profile_blocks_deleting_a_replicated_version(emu, az):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    safety = {"allowDeletionOfReplicatedLocations": False}
    publish(az, "1.0.0", image.id, regions=("eastus2", "westeurope"), safety=safety)
    with pytest.raises(ResourceExistsError) as err:
        az.compute.gallery_image_versions.begin_delete(RG, GALLERY, IMAGE_DEF, "1.0.0").result()
    assert err.value.status_code == 409
    with pytest.raises(ResourceExistsError):  # dropping a replicated region is refused too
        publish(az, "1.0.0", image.id, regions=("eastus2",), safety=safety)
    publish(az, "1.0.0", image.id, regions=("eastus2", "westeurope"), safety={"allowDeletionOfReplicatedLocations": True})
    az.compute.gallery_image_versions.begin_delete(RG, GALLERY, IMAGE_DEF, "1.0.0").result()
    assert not emu.state.ids("Microsoft.Compute/galleries/images/versions")


def test_image_definition_with_versions_cannot_be_deleted(emu, az):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    publish(az, "1.0.0", image.id)
    with pytest.raises(ResourceExistsError) as err:
        az.compute.gallery_images.begin_delete(RG, GALLERY, IMAGE_DEF).result()
    assert err.value.error.code == "CannotDeleteResource"
    with pytest.raises(ResourceExistsError) as err:  # and its identifier is immutable
        az.compute.gallery_images.begin_create_or_update(RG, GALLERY, IMAGE_DEF, {
            "location": "eastus2", "properties": {"osType": "Linux", "osState": "Generalized", "hyperVGeneration": "V2",
                                                  "identifier": {"publisher": "bakery", "offer": "nginx", "sku": "x"}}}
        ).result()
    assert err.value.error.code == "PropertyChangeNotAllowed"


def test_locations_are_normalized_and_validated(emu, az):
    rg = make_rg(az, location="East US 2")
    assert rg.location == "eastus2"
    with pytest.raises(HttpResponseError) as err:
        make_rg(az, "other-rg", location="Atlantis")
    assert err.value.error.code == "LocationNotAvailableForResourceType"


def test_resource_group_delete_cascades_via_location_polling(emu, az):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    publish(az, "1.0.0", image.id)
    assert az.resource.resource_groups.check_existence(RG) is True
    az.resource.resource_groups.begin_delete(RG).result()
    assert az.resource.resource_groups.check_existence(RG) is False
    assert emu.requests("GET", r"/subscriptions/[^/]+/operationresults/")
    assert emu.state.all() == []
    with pytest.raises(ResourceNotFoundError) as err:
        az.compute.images.get(RG, image.name)
    assert err.value.error.code == "ResourceGroupNotFound"


# --- VMs and networking -------------------------------------------------------------------------------
def network_stack(az: Clients, *, pip_method: str | None = "Dynamic", prefix: str = "smoke"):
    nsg = az.network.network_security_groups.begin_create_or_update(RG, f"{prefix}-nsg", {
        "location": "eastus2", "properties": {"securityRules": [{"name": "http", "properties": {
            "protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 100,
            "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
            "destinationPortRange": "80"}}]}}).result()
    vnet = az.network.virtual_networks.begin_create_or_update(RG, f"{prefix}-vnet", {
        "location": "eastus2", "properties": {"addressSpace": {"addressPrefixes": ["10.10.0.0/16"]},
                                              "subnets": [{"name": "default", "properties": {"addressPrefix": "10.10.0.0/24"}}]},
    }).result()
    ipc = {"name": "ipconfig1", "properties": {"subnet": {"id": vnet.subnets[0].id}}}
    pip = None
    if pip_method:
        sku = "Basic" if pip_method == "Dynamic" else "Standard"
        pip = az.network.public_ip_addresses.begin_create_or_update(RG, f"{prefix}-pip", {
            "location": "eastus2", "sku": {"name": sku}, "properties": {"publicIPAllocationMethod": pip_method}}).result()
        ipc["properties"]["publicIPAddress"] = {"id": pip.id}
    nic = az.network.network_interfaces.begin_create_or_update(RG, f"{prefix}-nic", {
        "location": "eastus2", "properties": {"networkSecurityGroup": {"id": nsg.id}, "ipConfigurations": [ipc]},
    }).result()
    return nsg, vnet, pip, nic


def vm_body(image_id: str, nic_id: str, delete_option: str | None = None) -> dict:
    os_disk = {"createOption": "FromImage", "managedDisk": {"storageAccountType": "Standard_LRS"}}
    if delete_option:
        os_disk["deleteOption"] = delete_option
    return {"location": "eastus2", "properties": {
        "hardwareProfile": {"vmSize": "Standard_B1s"},
        "storageProfile": {"imageReference": {"id": image_id}, "osDisk": os_disk},
        "osProfile": {"computerName": "smoke", "adminUsername": "bakery",
                      "linuxConfiguration": {"disablePasswordAuthentication": True,
                                             "ssh": {"publicKeys": [{"path": "/home/bakery/.ssh/authorized_keys",
                                                                     "keyData": "ssh-ed25519 AAAA test"}]}}},
        "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"primary": True}}]}}}


def test_vm_lifecycle_public_ip_serves_nginx(emu, az):
    make_rg(az)
    image = make_image(az)
    _nsg, _vnet, pip, nic = network_stack(az)
    assert pip.ip_address is None  # dynamic: nothing until a running VM uses it
    private_ip = nic.ip_configurations[0].private_ip_address
    assert private_ip.startswith("127.")

    seen = []
    vm = az.compute.virtual_machines.begin_create_or_update(
        RG, "smoke-vm", vm_body(image.id, nic.id), raw_response_hook=lambda r: seen.append(r.http_response)).result()
    assert seen[0].status_code in (200, 201) and "Azure-AsyncOperation" in seen[0].headers
    assert vm.provisioning_state == "Succeeded"
    assert vm.os_profile.admin_password is None
    disk_name = vm.storage_profile.os_disk.name
    assert disk_name.startswith("smoke-vm_OsDisk_1_") and len(disk_name.rsplit("_", 1)[1]) == 32
    disk = az.compute.disks.get(RG, disk_name)
    assert disk.managed_by == vm.id and disk.disk_state == "Attached"

    view = az.compute.virtual_machines.instance_view(RG, "smoke-vm")
    assert [s.code for s in view.statuses] == ["ProvisioningState/succeeded", "PowerState/running"]
    expanded = az.compute.virtual_machines.get(RG, "smoke-vm", expand="instanceView")
    assert "PowerState/running" in [s.code for s in expanded.instance_view.statuses]

    public_ip = az.network.public_ip_addresses.get(RG, "smoke-pip").ip_address
    assert public_ip and public_ip != private_ip
    for address in (public_ip, private_ip):
        status, body = http_get(address, emu.vm_http_port)
        assert status == 200 and "Welcome to nginx!" in body
    assert az.network.network_interfaces.get(RG, "smoke-nic").virtual_machine.id == vm.id

    with pytest.raises(HttpResponseError) as err:  # ARM refuses to delete what is in use
        az.network.network_interfaces.begin_delete(RG, "smoke-nic").result()
    assert (err.value.status_code, err.value.error.code) == (400, "NicInUse")
    with pytest.raises(HttpResponseError) as err:
        az.network.public_ip_addresses.begin_delete(RG, "smoke-pip").result()
    assert err.value.error.code == "PublicIPAddressCannotBeDeleted"
    with pytest.raises(ResourceExistsError) as err:
        az.compute.disks.begin_delete(RG, disk_name).result()
    assert err.value.error.code == "OperationNotAllowed"

    az.compute.virtual_machines.begin_delete(RG, "smoke-vm").result()
    with pytest.raises(ResourceNotFoundError):
        az.compute.virtual_machines.get(RG, "smoke-vm")
    with pytest.raises(OSError):
        http_get(private_ip, emu.vm_http_port, timeout=2)
    assert az.network.public_ip_addresses.get(RG, "smoke-pip").ip_address is None
    assert az.compute.disks.get(RG, disk_name).disk_state == "Unattached"  # deleteOption defaults to Detach

    az.compute.disks.begin_delete(RG, disk_name).result()
    az.network.network_interfaces.begin_delete(RG, "smoke-nic").result()
    az.network.public_ip_addresses.begin_delete(RG, "smoke-pip").result()
    az.network.network_security_groups.begin_delete(RG, "smoke-nsg").result()
    az.network.virtual_networks.begin_delete(RG, "smoke-vnet").result()
    assert sorted(r.type for r in emu.state.all()) == ["Microsoft.Compute/images", "Microsoft.Resources/resourceGroups"]


def test_private_mode_static_ip_and_image_behaviours(emu, az):
    make_rg(az)
    good = make_image(az, "nginx-good")
    broken = make_image(az, "nginx-broken")
    hung = make_image(az, "nginx-hung")
    tagged = make_image(az, "nginx-tagged", tags={"emulator.http.status": "404", "emulator.http.body": "nope"})
    emu.set_image_behaviour("nginx-broken", status=500, body="<h1>502 Bad Gateway</h1>")
    emu.set_image_behaviour("nginx-h*", never_answers=True)

    static = az.network.public_ip_addresses.begin_create_or_update(RG, "static-pip", {
        "location": "eastus2", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}}).result()
    assert static.ip_address and static.ip_address.startswith("127.")  # static: an address at creation

    results = {}
    for image in (good, broken, hung, tagged):
        _, _, _, nic = network_stack(az, pip_method=None, prefix=image.name)
        az.compute.virtual_machines.begin_create_or_update(
            RG, f"vm-{image.name}", vm_body(image.id, nic.id, delete_option="Delete")).result()
        address = az.network.network_interfaces.get(RG, nic.name).ip_configurations[0].private_ip_address
        try:
            results[image.name] = http_get(address, emu.vm_http_port, timeout=1)
        except (TimeoutError, urllib.error.URLError) as exc:
            results[image.name] = ("timeout", str(exc))
    assert results["nginx-good"][0] == 200
    assert results["nginx-broken"] == (500, "<h1>502 Bad Gateway</h1>")
    assert results["nginx-hung"][0] == "timeout"
    assert results["nginx-tagged"] == (404, "nope")

    az.compute.virtual_machines.begin_delete(RG, "vm-nginx-good").result()
    assert not emu.state.ids("Microsoft.Compute/disks") or all(
        "vm-nginx-good" not in d for d in emu.state.ids("Microsoft.Compute/disks"))  # deleteOption=Delete


def test_a_booting_vm_refuses_connections_until_it_is_up(emu, az):
    make_rg(az)
    image = make_image(az, "nginx-slowboot")
    emu.set_image_behaviour("nginx-slowboot", boot_seconds=1.0)
    _, _, _, nic = network_stack(az, pip_method=None)
    az.compute.virtual_machines.begin_create_or_update(RG, "slow", vm_body(image.id, nic.id)).result()
    address = nic.ip_configurations[0].private_ip_address
    with pytest.raises(urllib.error.URLError):  # connection refused
        http_get(address, emu.vm_http_port, timeout=1)
    time.sleep(1.2)
    assert http_get(address, emu.vm_http_port)[0] == 200
    assert [req[1:] for req in emu.vm_http_requests(
        az.compute.virtual_machines.get(RG, "slow").id)] == [("GET", "/")]


def test_vm_from_gallery_version_uses_the_source_image_behaviour(emu, az):
    make_rg(az)
    image = make_image(az, "nginx-img-7")
    make_gallery(az)
    emu.set_image_behaviour("nginx-img-7", body="<h1>Welcome to nginx!</h1> v7")
    version = publish(az, "7.0.0", image.id)
    az.compute.images.begin_delete(RG, image.name).result()  # the gallery copy lives on
    _, _, _, nic = network_stack(az, pip_method=None)
    az.compute.virtual_machines.begin_create_or_update(RG, "from-gallery", vm_body(version.id, nic.id)).result()
    address = az.network.network_interfaces.get(RG, nic.name).ip_configurations[0].private_ip_address
    assert http_get(address, emu.vm_http_port) == (200, "<h1>Welcome to nginx!</h1> v7")


def test_vm_created_nics_and_public_ips_go_with_the_vm(emu, az):
    make_rg(az)
    image = make_image(az)
    _, vnet, _, _ = network_stack(az, pip_method=None)
    body = vm_body(image.id, "unused", delete_option="Delete")
    body["properties"]["networkProfile"] = {
        "networkApiVersion": "2022-11-01",
        "networkInterfaceConfigurations": [{"name": "vm2-nic", "properties": {
            "primary": True, "deleteOption": "Delete",
            "ipConfigurations": [{"name": "ipconfig1", "properties": {
                "subnet": {"id": vnet.subnets[0].id},
                "publicIPAddressConfiguration": {"name": "vm2-pip", "sku": {"name": "Standard"},
                                                 "properties": {"deleteOption": "Delete"}}}}]}}]}
    vm = az.compute.virtual_machines.begin_create_or_update(RG, "vm2", body).result()
    nic_id = vm.network_profile.network_interfaces[0].id
    assert nic_id.endswith("/networkInterfaces/vm2-nic")
    address = az.network.public_ip_addresses.get(RG, "vm2-pip").ip_address
    assert http_get(address, emu.vm_http_port)[0] == 200
    az.compute.virtual_machines.begin_delete(RG, "vm2").result()
    assert emu.state.get(nic_id) is None
    assert not [i for i in emu.state.ids() if i.endswith(("/vm2-pip", "/disks/" + vm.storage_profile.os_disk.name))]


def test_generic_resource_list_filters_by_tag(emu, az):
    make_rg(az)
    make_image(az, "tagged", tags={"bakery_run": "r9"})
    make_image(az, "untagged", tags={"other": "x"})
    found = [r.name for r in az.resource.resources.list_by_resource_group(
        RG, filter="tagName eq 'bakery_run' and tagValue eq 'r9'")]
    assert found == ["tagged"]


def test_a_list_filtered_by_tag_comes_back_without_the_tags(emu, az):
    """Resources - List By Resource Group: "When you filter by a tag name and value, the tags for each
    resource are not returned in the results." Unfiltered, or filtered by type, they are."""
    make_rg(az)
    make_image(az, "tagged", tags={"bakery_run": "r9", "purpose": "smoke-test"})
    by_tag = list(az.resource.resources.list_by_resource_group(RG, filter="tagName eq 'bakery_run' and tagValue eq 'r9'"))
    assert [(r.name, r.tags) for r in by_tag] == [("tagged", None)]
    by_name = list(az.resource.resources.list_by_resource_group(RG, filter="tagName eq 'bakery_run'"))
    assert [(r.name, r.tags) for r in by_name] == [("tagged", None)]
    whole = list(az.resource.resources.list_by_resource_group(RG))
    assert [(r.name, r.tags) for r in whole] == [("tagged", {"bakery_run": "r9", "purpose": "smoke-test"})]
    by_type = list(az.resource.resources.list_by_resource_group(
        RG, filter="resourceType eq 'Microsoft.Compute/images'"))
    assert by_type[0].tags == {"bakery_run": "r9", "purpose": "smoke-test"}


# --- the Marketplace and purchase plans ---------------------------------------------------------------------
ALMA = ("almalinux", "almalinux-x86_64", "9-gen2")
ALMA_PLAN = {"name": "9-gen2", "product": "almalinux-x86_64", "publisher": "almalinux"}


def test_marketplace_images_list_get_and_404(emu, az):
    versions = az.compute.virtual_machine_images.list("eastus2", *ALMA)
    assert [v.name for v in versions] == ["9.4.2024050902", "9.5.202411260"]
    image = az.compute.virtual_machine_images.get("eastus2", *ALMA, "9.5.202411260")
    assert image.hyper_v_generation == "V2"
    assert (image.plan.name, image.plan.product, image.plan.publisher) == ("9-gen2", "almalinux-x86_64", "almalinux")
    assert az.compute.virtual_machine_images.get("westeurope", "Canonical", "ubuntu-24_04-lts", "server-gen1",
                                                 "24.04.202411260").plan is None
    for args in (("eastus2", "almalinux", "almalinux-x86_64", "9-gen3", "9.5.202411260"),
                 ("eastus2", *ALMA, "1.0.0")):
        with pytest.raises(ResourceNotFoundError) as err:
            az.compute.virtual_machine_images.get(*args)
        assert (err.value.error.code, err.value.error.message) == ("NotFound", "Artifact: VMImage was not found.")


def marketplace_vm(ref: tuple[str, str, str], nic_id: str, plan: dict | None) -> dict:
    body = vm_body("unused", nic_id, delete_option="Delete")
    body["properties"]["storageProfile"]["imageReference"] = dict(zip(("publisher", "offer", "sku"), ref),
                                                                  version="latest")
    if plan is not None:
        body["plan"] = plan
    return body


def refused(call) -> str:
    with pytest.raises(HttpResponseError) as err:
        call()
    assert (err.value.status_code, err.value.error.code) == (400, "VMMarketplaceInvalidInput")
    return err.value.error.message


def test_the_purchase_plan_rule_for_vms_from_marketplace_and_custom_images(emu, az):
    make_rg(az)
    make_gallery(az)
    *_, nic = network_stack(az, pip_method=None)
    vms = az.compute.virtual_machines
    assert "requires Plan information in the request" in refused(
        lambda: vms.begin_create_or_update(RG, "v1", marketplace_vm(ALMA, nic.id, None)).result())
    assert "The purchase information does not match" in refused(lambda: vms.begin_create_or_update(
        RG, "v1", marketplace_vm(ALMA, nic.id, {**ALMA_PLAN, "name": "9-gen1"})).result())
    assert "does not need Plan information" in refused(lambda: vms.begin_create_or_update(
        RG, "v1", marketplace_vm(("Debian", "debian-12", "12-gen2"), nic.id, ALMA_PLAN)).result())
    build_vm = vms.begin_create_or_update(RG, "build", marketplace_vm(ALMA, nic.id, ALMA_PLAN)).result()
    assert build_vm.plan.name == "9-gen2"

    # a managed image captured from it keeps the plan (out of sight) and the Hyper-V generation
    image = az.compute.images.begin_create_or_update(RG, "captured", {
        "location": "eastus2", "properties": {"sourceVirtualMachine": {"id": build_vm.id}}}).result()
    assert image.hyper_v_generation == "V2" and "plan" not in json.dumps(emu.get(image.id))
    vms.begin_delete(RG, "build").result()
    *_, nic2 = network_stack(az, pip_method=None, prefix="smoke2")
    message = refused(lambda: vms.begin_create_or_update(RG, "smoke", vm_body(image.id, nic2.id, "Delete")).result())
    assert message.startswith("Creating a virtual machine from Marketplace image requires Plan information")
    assert vms.begin_create_or_update(RG, "smoke", {**vm_body(image.id, nic2.id, "Delete"), "plan": ALMA_PLAN}
                                      ).result().provisioning_state == "Succeeded"
    vms.begin_delete(RG, "smoke").result()

    # a VM from a gallery version needs the definition's purchasePlan (or else its source's)
    version = publish(az, "1.0.0", image.id)
    assert "requires Plan information" in refused(
        lambda: vms.begin_create_or_update(RG, "g", vm_body(version.id, nic2.id, "Delete")).result())
    assert vms.begin_create_or_update(RG, "g", {**vm_body(version.id, nic2.id, "Delete"), "plan": ALMA_PLAN}
                                      ).result().provisioning_state == "Succeeded"


def test_an_image_definitions_purchase_plan_cannot_change(emu, az):
    make_rg(az)
    az.compute.galleries.begin_create_or_update(RG, GALLERY, {"location": "eastus2"}).result()
    body = {"location": "eastus2", "properties": {
        "osType": "Linux", "osState": "Generalized", "hyperVGeneration": "V2", "purchasePlan": ALMA_PLAN,
        "identifier": {"publisher": "bakery", "offer": "rhel9-nginx", "sku": "nightly"}}}
    definition = az.compute.gallery_images.begin_create_or_update(RG, GALLERY, "rhel9", body).result()
    assert definition.purchase_plan.product == "almalinux-x86_64"
    body["properties"]["purchasePlan"] = {**ALMA_PLAN, "name": "9-gen1"}
    with pytest.raises(HttpResponseError) as err:
        az.compute.gallery_images.begin_create_or_update(RG, GALLERY, "rhel9", body).result()
    assert err.value.error.code == "PropertyChangeNotAllowed"


def test_references_to_missing_resources_are_refused(emu, az):
    make_rg(az)
    image = make_image(az)
    base = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers"
    with pytest.raises(HttpResponseError) as err:
        az.network.network_interfaces.begin_create_or_update(RG, "nic", {"location": "eastus2", "properties": {
            "ipConfigurations": [{"name": "ipconfig1", "properties": {
                "subnet": {"id": f"{base}/Microsoft.Network/virtualNetworks/nope/subnets/default"}}}]}}).result()
    assert (err.value.status_code, err.value.error.code) == (400, "InvalidResourceReference")
    _, vnet, _, nic = network_stack(az, pip_method=None)
    with pytest.raises(HttpResponseError) as err:
        az.network.network_interfaces.begin_create_or_update(RG, "nic2", {"location": "eastus2", "properties": {
            "networkSecurityGroup": {"id": f"{base}/Microsoft.Network/networkSecurityGroups/nope"},
            "ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": vnet.subnets[0].id}}}]}}).result()
    assert err.value.error.code == "InvalidResourceReference"
    with pytest.raises(HttpResponseError) as err:
        az.compute.virtual_machines.begin_create_or_update(
            RG, "vm", vm_body(image.id, f"{base}/Microsoft.Network/networkInterfaces/nope")).result()
    assert err.value.status_code == 400
    with pytest.raises(ResourceNotFoundError):
        az.compute.virtual_machines.begin_create_or_update(
            RG, "vm", vm_body(f"{base}/Microsoft.Compute/images/nope", nic.id)).result()
    assert not emu.state.ids("Microsoft.Compute/virtualMachines")
    with pytest.raises(HttpResponseError) as err:  # a subnet in use cannot go
        az.network.virtual_networks.begin_delete(RG, vnet.name).result()
    assert err.value.error.code == "InUseSubnetCannotBeDeleted"


# --- faults ----------------------------------------------------------------------------------------------
def test_throttling_and_server_errors_are_retried_by_the_sdk(emu, az):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    emu.faults.add(429, method="PUT", path=r"/versions/1\.0\.0$", times=1, retry_after=1)
    emu.faults.add(503, method="GET", path=r"/capsOperations/", times=2, retry_after=0)
    emu.faults.add(500, method="GET", path=r"/versions/1\.0\.0$", times=1)
    started = time.monotonic()
    version = publish(az, "1.0.0", image.id)
    assert version.provisioning_state == "Succeeded"
    assert time.monotonic() - started >= 1  # Retry-After was honoured
    assert [(m, s) for m, _, s in emu.faults.injected] == [("PUT", 429), ("GET", 503), ("GET", 503), ("GET", 500)]
    assert emu.count("PUT", r"/versions/1\.0\.0$") == 2
    assert emu.count("PUT", r"/versions/1\.0\.0$", status=201) == 1
    assert emu.state.created_ids("Microsoft.Compute/galleries/images/versions") == [version.id]
    throttled = emu.requests(status=429)[0]
    assert throttled.fault


def test_seeded_random_faults_still_let_the_run_succeed(emu, az):
    emu.faults.random(0.5, statuses=(429, 500, 503), seed=11, retry_after=0)
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    publish(az, "1.0.0", image.id)
    names = [v.name for v in az.compute.gallery_image_versions.list_by_gallery_image(RG, GALLERY, IMAGE_DEF)]
    assert names == ["1.0.0"]
    assert len(emu.faults.injected) >= 3
    assert emu.state.created_ids("Microsoft.Compute/galleries/images/versions")  # exactly one create
    assert len(emu.state.created_ids("Microsoft.Compute/galleries/images/versions")) == 1


def test_failed_lro_raises_with_the_arm_error_and_leaves_a_failed_version(emu, az):
    make_rg(az)
    image = make_image(az)
    make_gallery(az)
    emu.faults.fail_lro(method="PUT", path=r"/versions/2\.0\.0$", code="ReplicationFailed",
                        message="Replication to region 'West Europe' failed: disk copy timed out.")
    with pytest.raises(HttpResponseError) as err:
        publish(az, "2.0.0", image.id, regions=("eastus2", "westeurope"))
    assert "Replication to region 'West Europe' failed" in str(err.value)
    assert err.value.error.code == "ReplicationFailed"
    failed = az.compute.gallery_image_versions.get(RG, GALLERY, IMAGE_DEF, "2.0.0", expand="ReplicationStatus")
    assert failed.provisioning_state == "Failed"
    assert failed.replication_status.aggregated_state == "Failed"
    az.compute.gallery_image_versions.begin_delete(RG, GALLERY, IMAGE_DEF, "2.0.0").result()  # cleanup works
    assert publish(az, "2.0.0", image.id).provisioning_state == "Succeeded"  # and a retry succeeds


def test_auth_and_api_version_are_required(emu):
    status, body = raw_request(emu, "GET", f"/subscriptions/{SUB}/resourcegroups?api-version=2021-04-01", token=None)
    assert status == 401 and body["error"]["code"] == "AuthenticationFailed"
    status, body = raw_request(emu, "GET", f"/subscriptions/{SUB}/resourcegroups")
    assert status == 400 and body["error"]["code"] == "MissingApiVersionParameter"
    status, body = raw_request(emu, "GET", f"/subscriptions/{SUB}/resourcegroups?api-version=2021-04-01")
    assert (status, body) == (200, {"value": []})


def test_stop_leaves_no_threads_or_listeners():
    before = {t.ident for t in threading.enumerate()}
    emu = ArmEmulator(retry_after=0)
    az = Clients(emu)
    make_rg(az)
    image = make_image(az)
    _, _, _, nic = network_stack(az, pip_method=None)
    emu.set_image_behaviour("*", never_answers=True)
    az.compute.virtual_machines.begin_create_or_update(RG, "vm", vm_body(image.id, nic.id)).result()
    address = nic.ip_configurations[0].private_ip_address
    hanging = socket.create_connection((address, emu.vm_http_port), timeout=5)
    hanging.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    port, tmp = emu.port, Path(emu.ca_bundle).parent
    emu.stop()
    hanging.close()
    leftovers = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert leftovers == []
    assert not tmp.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind((address, emu.vm_http_port))  # the VM's address is free again
    probe.close()


def test_module_runs_as_a_program():
    proc = subprocess.Popen([sys.executable, "-m", "tests.azure_emulator", "--port", "0", "--quiet"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("ARM emulator listening on https://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0


# --- the fake packer ---------------------------------------------------------------------------------------
TEMPLATE = """
variable "image_name" { type = string }
variable "image_rg" { type = string }
variable "subscription_id" { type = string }
variable "location" {
  type    = string
  default = "eastus2"
}
locals {
  tags = {
    bakery_image = "nginx"   # a comment
    "bakery/run" = var.image_name
  }
}
source "azure-arm" "nginx" {
  use_azure_cli_auth                = true
  subscription_id                   = var.subscription_id
  os_type                           = "Linux"
  image_publisher                   = "Debian"
  image_offer                       = "debian-12"
  image_sku                         = "12-gen2"
  location                          = var.location
  vm_size                           = "Standard_B1s"
  managed_image_name                = var.image_name
  managed_image_resource_group_name = var.image_rg
  azure_tags                        = merge(local.tags, { note = "a, b" })
}
build {
  sources = ["source.azure-arm.nginx"]
  provisioner "shell" {
    inline = ["sudo apt-get install -y nginx"]
  }
  post-processor "manifest" {
    output      = "out/packer-manifest.json"
    strip_path  = true
    custom_data = { image = var.image_name }
  }
}
"""


def parse_machine_readable(stdout: str) -> list[tuple[int, str, str, list[str]]]:
    rows = []
    for line in stdout.splitlines():
        parts = line.split(",")
        assert len(parts) >= 3 and parts[0].isdigit(), line
        data = [p.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r") for p in parts[3:]]
        rows.append((int(parts[0]), parts[1], parts[2], data))
    return rows


@pytest.fixture
def packer_dir(tmp_path):
    (tmp_path / "nginx.pkr.hcl").write_text(TEMPLATE)
    (tmp_path / "vars.pkrvars.hcl").write_text('image_rg = "bakery-images"\n')
    return tmp_path


def packer_env(emu: ArmEmulator, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PKR_VAR_", "BAKERY_FAKE_PACKER_"))}
    env.update(emu.env(), PKR_VAR_image_name="nginx-1.2.3", PKR_VAR_subscription_id=SUB, **extra)
    return env


def run_packer(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(FAKE_PACKER), *args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_fake_packer_version_and_validate_delegate_to_the_real_one(emu, packer_dir):
    version = run_packer(["version"], packer_dir, packer_env(emu))
    assert version.returncode == 0 and version.stdout.startswith("Packer v")
    ok = run_packer(["validate", "-var-file=vars.pkrvars.hcl", "."], packer_dir, packer_env(emu))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = run_packer(["validate", "."], packer_dir, packer_env(emu))  # image_rg unset
    assert bad.returncode == 1 and "image_rg" in bad.stdout + bad.stderr


def test_fake_packer_build_registers_the_managed_image(emu, az, packer_dir):
    az.resource.resource_groups.create_or_update("bakery-images", {"location": "eastus2"})
    log = packer_dir / "invocations.jsonl"
    proc = run_packer(["build", "-machine-readable", "-var-file=vars.pkrvars.hcl", "."], packer_dir,
                      packer_env(emu, BAKERY_FAKE_PACKER_LOG=str(log)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = parse_machine_readable(proc.stdout)

    image = az.compute.images.get("bakery-images", "nginx-1.2.3")
    assert image.tags == {"bakery_image": "nginx", "bakery/run": "nginx-1.2.3", "note": "a, b"}
    assert image.location == "eastus2"

    artifact = {(r[3][0], r[3][1]): r[3][2:] for r in rows if r[2] == "artifact"}
    assert artifact[("0", "builder-id")] == ["Azure.ResourceManagement.VMImage"]
    assert artifact[("0", "id")] == [image.id]
    assert artifact[("0", "files-count")] == ["0"]
    assert ("0", "end") in artifact
    assert artifact[("0", "string")][0].splitlines()[3:7] == [
        "ManagedImageResourceGroupName: bakery-images", "ManagedImageName: nginx-1.2.3",
        f"ManagedImageId: {image.id}", "ManagedImageLocation: eastus2"]
    assert all(r[1] in ("", "azure-arm.nginx") for r in rows)
    says = [r[3][1] for r in rows if r[2] == "ui" and r[3][0] == "say"]
    assert any(s.startswith("==> azure-arm.nginx:  ->> note : a, b") for s in says)  # commas escaped & restored

    temp = [e[1] for e in emu.state.history if re.search(r"/resourceGroups/pkr-Resource-Group-\w+$", e[1])]
    assert [e[0] for e in emu.state.history if e[1] in temp] == ["create", "delete"]
    assert len(temp[0].rsplit("-", 1)[1]) == 10
    # the image was captured from a build VM of the Marketplace base (deleted with the temporary group)
    (build_vm,) = [e[1] for e in emu.state.history if e[0] == "create" and "/virtualMachines/pkrvm" in e[1]]
    assert build_vm.lower().startswith(temp[0].lower() + "/")
    assert ("delete", build_vm, "Microsoft.Compute/virtualMachines") in emu.state.history
    assert image.source_virtual_machine.id.lower() == build_vm.lower()
    assert image.hyper_v_generation == "V2"  # Debian's 12-gen2

    manifest = json.loads((packer_dir / "out" / "packer-manifest.json").read_text())
    assert manifest["last_run_uuid"] == manifest["builds"][-1]["packer_run_uuid"]
    assert manifest["builds"][-1]["artifact_id"] == image.id
    assert manifest["builds"][-1]["builder_type"] == "azure-arm"
    assert manifest["builds"][-1]["custom_data"] == {"image": "nginx-1.2.3"}
    assert json.loads(log.read_text().splitlines()[0])["pkr_vars"]["image_name"] == "nginx-1.2.3"

    again = run_packer(["build", "-machine-readable", "-var-file=vars.pkrvars.hcl", "."], packer_dir, packer_env(emu))
    assert again.returncode == 1 and "use the -force option" in again.stdout.replace("%!(PACKER_COMMA)", ",")
    forced = run_packer(["build", "-machine-readable", "-force", "-var-file=vars.pkrvars.hcl", "."], packer_dir,
                        packer_env(emu))
    assert forced.returncode == 0, forced.stdout
    assert len(json.loads((packer_dir / "out" / "packer-manifest.json").read_text())["builds"]) == 2


def test_fake_packer_failure_mode(emu, az, packer_dir):
    az.resource.resource_groups.create_or_update("bakery-images", {"location": "eastus2"})
    proc = run_packer(["build", "-machine-readable", "-var-file=vars.pkrvars.hcl", "."], packer_dir,
                      packer_env(emu, BAKERY_FAKE_PACKER_FAIL="provision"))
    assert proc.returncode == 1
    rows = parse_machine_readable(proc.stdout)
    assert ("", "error-count", ["1"]) in [(r[1], r[2], r[3]) for r in rows]
    assert any(r[1] == "azure-arm.nginx" and r[2] == "error" and "non-zero exit status" in r[3][0] for r in rows)
    assert not any(r[2] == "artifact" for r in rows)
    assert emu.state.ids("Microsoft.Compute/images") == []
    assert [r.name for r in az.resource.resource_groups.list()] == ["bakery-images"]  # temp RG cleaned up


def test_fake_packer_sigterm_cleans_up_the_temporary_resource_group(emu, az, packer_dir):
    az.resource.resource_groups.create_or_update("bakery-images", {"location": "eastus2"})
    proc = subprocess.Popen([str(FAKE_PACKER), "build", "-machine-readable", "-var-file=vars.pkrvars.hcl", "."],
                            cwd=packer_dir, env=packer_env(emu, BAKERY_FAKE_PACKER_BUILD_SECONDS="60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                "pkr-Resource-Group-" in i for i in emu.state.ids("Microsoft.Resources/resourceGroups")):
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    assert "Cancelling build after receiving terminated" in out
    assert [r.name for r in az.resource.resource_groups.list()] == ["bakery-images"]
    assert emu.state.ids("Microsoft.Compute/images") == []
