"""AzureTarget against the ARM emulator, through the real Azure SDK and a real client-secret credential
(tokens from the emulator's Entra ID endpoint; ARM refuses any other token).

Each step is checked on the emulator's state and request log: what was created, with which body,
and that nothing is left behind.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from bakery.catalogue import DEFAULT_CATALOGUE, parse_catalogue
from bakery.record import BakeRecord
from bakery.targets.azure import (
    AzureTarget,
    AzureTargetError,
    SmokeNames,
)
from bakery.targets.base import SmokeCheck

from tests.azure_emulator import ArmEmulator
from tests.azure_emulator.world import (
    GALLERY,
    GALLERY_RG,
    IMAGES_RG,
    SMOKE_CIDR,
    SMOKE_RG,
    AzureWorld,
)

IMAGE = "rhel9-nginx"
VERSION = "2026.1126.200001"
RUN_ID = "manual__2026-11-26T02:00:00+00:00"
PACKER_UUID = "0b5e3c1e-2a59-4d8a-9c43-8f5f1f5d7a11"


G_SMOKE_CLEANUP = pytest.mark.guarantee("arm-faults")
G_PUBLISH_RETRY = pytest.mark.guarantee("publish-retried-azure")


@pytest.fixture
def emu():
    emulator = ArmEmulator(retry_after=0, require_issued_tokens=True, page_size=2)
    try:
        yield emulator
    finally:
        emulator.stop()
    assert emulator.internal_errors == []


@pytest.fixture
def world(emu):
    w = AzureWorld(emu)
    w.create_infrastructure()
    return w


def make_spec(world: AzureWorld, **azure_overrides):
    data = yaml.safe_load(DEFAULT_CATALOGUE.read_text())
    entry = copy.deepcopy(data["images"][IMAGE])
    entry["azure"] = world.azure_block(**azure_overrides)
    entry["smoke_test"] = {"path": "/", "port": world.emu.vm_http_port, "expect_status": 200,
                           "expect_text": "Welcome to nginx", "timeout_seconds": 20}
    return parse_catalogue({"version": 1, "images": {IMAGE: entry}})[IMAGE]


@pytest.fixture
def spec(world):
    return make_spec(world)


@pytest.fixture
def target(world, spec):
    t = AzureTarget(spec, world.clients, progress_interval=0.05, alive_interval=1)
    yield t
    t.close()


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def text(self) -> str:
        return "\n".join(self)


def make_managed_image(world: AzureWorld, version: str = VERSION, image: str = IMAGE, rg: str = IMAGES_RG) -> str:
    """What the azure-arm build leaves: a generalized managed image named <image>-<version with dashes>."""
    return world.make_managed_image(image, version, rg)


def record(world: AzureWorld, version: str = VERSION, run_id: str = RUN_ID, packer_uuid: str = PACKER_UUID,
           passed: bool = True, image_id: str | None = None) -> BakeRecord:
    return BakeRecord(image=IMAGE, version=version, target="azure", template_digest="sha256:" + "ab" * 32,
                      dag_run_id=run_id, run_type="manual", packer_run_uuid=packer_uuid,
                      artifact_id=image_id or make_managed_image(world, version),
                      smoke={"passed": passed, "seconds": 12.5, "status": 200, "detail": "ok"})


def check(world: AzureWorld, timeout: int = 20) -> SmokeCheck:
    return SmokeCheck(path="/", port=world.emu.vm_http_port, expect_status=200, expect_text="Welcome to nginx",
                      timeout_seconds=timeout)


def puts(emu: ArmEmulator, type_path: str) -> list:
    return [r for r in emu.requests("PUT", type_path) if not r.fault]


# --- prepare ------------------------------------------------------------------------------------------
def test_prepare_checks_the_infrastructure_and_gives_packer_its_variables(world, spec, target, tmp_path):
    rec = BakeRecord(image=IMAGE, version=VERSION, target="azure", template_digest="sha256:x", dag_run_id=RUN_ID)
    log = Log()
    variables, base = target.prepare(spec, rec, tmp_path, log=log)
    # the base digest: the Marketplace version the template's "latest" is today, which Packer gets too
    assert base == "marketplace:almalinux:almalinux-x86_64:9-gen2:9.5.202411260"
    assert variables == {
        "image_name": IMAGE, "image_version": VERSION, "dag_run_id": RUN_ID, "location": world.location,
        "vm_size": "Standard_B2s", "build_resource_group_name": "", "managed_image_resource_group_name": IMAGES_RG,
        "manifest_path": str(tmp_path / "manifest.json"), "base_image_version": "9.5.202411260",
    }
    assert not any(k in variables for k in ("client_secret", "client_id", "tenant_id"))
    assert rec.extra["managed_image"] == {"resource_group": IMAGES_RG, "name": "rhel9-nginx-2026-1126-200001"}
    assert rec.extra["base_image"] == {"urn": "almalinux:almalinux-x86_64:9-gen2:9.5.202411260",
                                       "requested": "almalinux:almalinux-x86_64:9-gen2:latest"}
    assert ("base image: almalinux:almalinux-x86_64:9-gen2:latest is almalinux:almalinux-x86_64:9-gen2:9.5.202411260 "
            f"in {world.location}") in log.text()


def test_latest_is_the_numerically_highest_marketplace_version(world, spec, target, tmp_path):
    """A new Marketplace release changes the base digest; "latest" compares Major.Minor.Build as numbers,
    as Azure does: 9.10 is above 9.5 although "9.10..." < "9.5..." as strings, which is how the List API
    orders (and ``$orderby=name desc`` sorts) its answer."""
    world.emu.publish_marketplace_version("almalinux", "almalinux-x86_64", "9-gen2", "9.10.2027052001")
    az = world.clients()
    try:
        images = az.compute.virtual_machine_images
        listed = [i.name for i in images.list(world.location, "almalinux", "almalinux-x86_64", "9-gen2")]
        top = images.list(world.location, "almalinux", "almalinux-x86_64", "9-gen2", top=1, orderby="name desc")
    finally:
        az.close()
    assert listed == ["9.10.2027052001", "9.4.2024050902", "9.5.202411260"]  # as strings: the last is not latest
    assert [i.name for i in top] == ["9.5.202411260"]  # nor is the first "name desc"
    rec = BakeRecord(image=IMAGE, version=VERSION, target="azure", template_digest="sha256:x", dag_run_id=RUN_ID)
    variables, base = target.prepare(spec, rec, tmp_path, log=Log())
    assert base == "marketplace:almalinux:almalinux-x86_64:9-gen2:9.10.2027052001"
    assert variables["base_image_version"] == "9.10.2027052001"


def test_a_pinned_base_image_version_is_the_base_digest(world, tmp_path):
    spec = dataclasses.replace(make_spec(world), variables={"base_image_version": "9.4.2024050902"})
    t = AzureTarget(spec, world.clients)
    try:
        rec = BakeRecord(image=IMAGE, version=VERSION, target="azure", template_digest="sha256:x", dag_run_id=RUN_ID)
        variables, base = t.prepare(spec, rec, tmp_path, log=Log())
    finally:
        t.close()
    assert base == "marketplace:almalinux:almalinux-x86_64:9-gen2:9.4.2024050902"
    assert variables["base_image_version"] == "9.4.2024050902"
    assert world.emu.requests("GET", r"/skus/9-gen2/versions$") == []  # nothing to resolve: no list


def test_prepare_names_every_missing_piece_and_its_catalogue_field(emu, tmp_path):
    world = AzureWorld(emu)  # no infrastructure at all
    spec = make_spec(world)
    target = AzureTarget(spec, world.clients)
    rec = BakeRecord(image=IMAGE, version=VERSION, target="azure", template_digest="sha256:x")
    with pytest.raises(AzureTargetError) as err:
        target.prepare(spec, rec, tmp_path, log=Log())
    msg = str(err.value)
    for fld in ("azure.managed_image_resource_group", "azure.gallery.resource_group", "azure.smoke_test.resource_group",
                "azure.gallery.image_definition", "azure.smoke_test.subnet"):
        assert fld in msg, msg
    assert "rg-bakery-images" in msg and "does not exist in subscription" in msg


def test_artifact_id_accepts_only_a_managed_image_of_the_azure_arm_builder(target):
    image_id = f"/subscriptions/s/resourceGroups/{IMAGES_RG}/providers/Microsoft.Compute/images/rhel9-nginx-1-2-3"
    assert target.artifact_id({"builder_id": "Azure.ResourceManagement.VMImage", "id": image_id}) == image_id
    with pytest.raises(AzureTargetError, match="expected a managed image"):
        target.artifact_id({"builder_id": "transcend.qemu", "id": "/tmp/disk.qcow2"})


# --- smoke test ---------------------------------------------------------------------------------------
def test_smoke_test_boots_a_locked_down_vm_checks_http_and_deletes_everything(world, target):
    emu = world.emu
    rec = record(world)
    log = Log()
    result = target.smoke_test(rec, check(world), log)
    assert result.passed, log.text()
    assert result.status == 200 and "Welcome to nginx" in result.detail

    names = SmokeNames.of(IMAGE, VERSION)
    assert names.base == "smoke-rhel9-nginx-2026-1126-200001"
    assert world.leftovers() == []
    assert world.created_twice() == []
    created = {rid.rsplit("/", 1)[1] for rid in emu.state.created_ids()}
    assert {names.vm, names.nic, names.public_ip, names.nsg, names.os_disk} <= created

    (nsg_put,) = puts(emu, r"/networkSecurityGroups/")
    (rule, deny) = nsg_put.body["properties"]["securityRules"]
    assert rule["properties"].items() >= {"sourceAddressPrefix": SMOKE_CIDR, "access": "Allow", "protocol": "Tcp",
                                          "destinationPortRange": str(emu.vm_http_port), "direction": "Inbound"}.items()
    assert deny["properties"].items() >= {"sourceAddressPrefix": "*", "access": "Deny", "destinationPortRange": "*",
                                          "direction": "Inbound", "priority": 4096}.items()
    (pip_put,) = puts(emu, r"/publicIPAddresses/")
    assert pip_put.body["properties"]["publicIPAllocationMethod"] == "Static"
    (vm_put,) = puts(emu, r"/virtualMachines/")
    os_profile = vm_put.body["properties"]["osProfile"]
    assert os_profile["linuxConfiguration"]["disablePasswordAuthentication"] is True
    (key,) = os_profile["linuxConfiguration"]["ssh"]["publicKeys"]
    assert key["keyData"].startswith("ssh-rsa ") and "PRIVATE" not in str(vm_put.body)
    assert "adminPassword" not in os_profile
    assert vm_put.body["properties"]["storageProfile"]["imageReference"]["id"] == rec.artifact_id
    assert vm_put.body["properties"]["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    for put in (nsg_put, pip_put, vm_put, *puts(emu, r"/networkInterfaces/")):
        tags = dict(put.body["tags"])
        created = datetime.fromisoformat(tags.pop("created_at"))
        assert abs(created - datetime.now(UTC)) < timedelta(minutes=5)
        assert tags == {"image": IMAGE, "version": VERSION, "dag_run_id": RUN_ID,
                        "managed_by": "image-bakery", "purpose": "smoke-test", "smoke_id": names.base}


def test_private_mode_uses_the_nics_private_ip_and_no_public_ip(world):
    spec = make_spec(world, smoke_test={**world.azure_block()["smoke_test"], "mode": "private"})
    target = AzureTarget(spec, world.clients, alive_interval=1)
    log = Log()
    result = target.smoke_test(record(world), check(world), log)
    assert result.passed, log.text()
    assert puts(world.emu, r"/publicIPAddresses/") == []
    assert world.leftovers() == []


@pytest.mark.parametrize("behaviour, expected", [
    ({"body": "<h1>It works!</h1>"}, "expected HTTP 200 containing 'Welcome to nginx'"),
    ({"status": 502, "body": "Bad Gateway"}, "got HTTP 502"),
    ({"never_answers": True}, "no HTTP answer"),
])
@pytest.mark.guarantee("smoke-test-fails")
def test_a_failing_smoke_test_is_a_failed_verdict_and_leaves_nothing(world, target, behaviour, expected):
    world.emu.set_image_behaviour(f"{IMAGE}-*", **behaviour)
    log = Log()
    started = time.monotonic()
    result = target.smoke_test(record(world), check(world, timeout=10), log)
    assert not result.passed
    assert expected in result.detail, result.detail
    assert time.monotonic() - started < 60
    assert world.leftovers() == []


@G_SMOKE_CLEANUP
def test_setup_failure_deletes_what_it_created_before_failing(world, target):
    world.emu.faults.fail_lro(method="PUT", path=r"/virtualMachines/", code="AllocationFailed",
                              message="Allocation failed. We do not have sufficient capacity for the requested VM size.")
    log = Log()
    with pytest.raises(Exception, match="AllocationFailed|sufficient capacity"):
        target.smoke_setup(record(world), check(world), log)
    assert world.leftovers() == []
    assert "deleting what was created" in log.text()


@G_SMOKE_CLEANUP
def test_setup_retry_first_removes_leftovers_of_the_earlier_attempt(world, target):
    emu = world.emu
    rec = record(world)
    first = target.smoke_setup(rec, check(world), Log())  # then the worker "dies": no teardown
    left = sorted(world.leftovers())
    assert len(left) == 5  # VM, NIC, public IP, NSG, OS disk
    first_vm = emu.get(first["vm_id"])["properties"]["vmId"]
    mark = len(emu.state.history)
    second = target.smoke_setup(rec, check(world), Log())
    # the end state: every resource of the first attempt was deleted, then made again (a new VM, not the
    # old one updated in place), and exactly one set of smoke resources exists
    events = emu.state.history[mark:]
    for rid in left:
        mine = [e for e, i, _ in events if i.lower() == rid.lower()]
        assert mine == ["delete", "create"], f"{rid}: {mine}"
    assert sorted(world.leftovers()) == left
    assert emu.get(second["vm_id"])["properties"]["vmId"] != first_vm
    assert second["names"] == first["names"] and second["address"]
    target.smoke_teardown(rec, Log())
    assert world.leftovers() == []


@G_SMOKE_CLEANUP
def test_teardown_is_idempotent_and_finds_tagged_resources_by_tag(world, target):
    emu = world.emu
    rec = record(world)
    target.smoke_setup(rec, check(world), Log())
    names = SmokeNames.of(IMAGE, VERSION)
    az = world.clients()
    az.network.public_ip_addresses.begin_create_or_update(SMOKE_RG, "renamed-by-someone", {
        "location": world.location, "tags": {"smoke_id": names.base, "managed_by": "image-bakery"},
        "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"}}).result()
    az.network.public_ip_addresses.begin_create_or_update(SMOKE_RG, "not-ours", {
        "location": world.location, "tags": {"smoke_id": "smoke-other-1-2-3"}, "sku": {"name": "Standard"},
        "properties": {"publicIPAllocationMethod": "Static"}}).result()
    first = target.smoke_teardown(rec, Log())
    assert "publicIPAddresses/renamed-by-someone" in first
    assert [r.rsplit("/", 1)[1] for r in world.leftovers()] == ["not-ours"]
    assert target.smoke_teardown(rec, Log()) == []  # again: nothing to do, no error
    az.network.public_ip_addresses.begin_delete(SMOKE_RG, "not-ours").result()
    az.resource.resource_groups.begin_delete(SMOKE_RG).result()
    az.close()
    log = Log()
    assert target.smoke_teardown(rec, log) == []  # even the resource group is gone
    assert "does not exist" in log.text()
    assert emu.state.events("delete", "Microsoft.Compute/virtualMachines")


@G_SMOKE_CLEANUP
def test_teardown_reports_what_it_could_not_delete(world, target):
    rec = record(world)
    target.smoke_setup(rec, check(world), Log())
    world.emu.faults.fail_lro(method="DELETE", path=r"/networkSecurityGroups/", code="InternalServerError",
                              message="NSG delete failed", times=5)
    with pytest.raises(AzureTargetError, match=r"left resources behind:\n  - networkSecurityGroups smoke-rhel9"):
        target.smoke_teardown(rec, Log())
    world.emu.faults.clear()
    target.smoke_teardown(rec, Log())
    assert world.leftovers() == []


PLAN = {"name": "9-gen2", "product": "almalinux-x86_64", "publisher": "almalinux"}


def test_the_smoke_vm_sends_the_purchase_plan_prepare_resolved(world, spec, target, tmp_path):
    """AlmaLinux's Marketplace image has a plan; so does the managed image built from it (ARM keeps it out
    of sight), and Azure refuses a VM from it without the same plan (the emulator enforces it)."""
    rec = record(world)
    target.prepare(spec, rec, tmp_path, log=Log())
    assert rec.extra["purchase_plan"] == PLAN  # from the template's plan_* variables
    log = Log()
    result = target.smoke_test(rec, check(world), log)
    assert result.passed, log.text()
    (vm_put,) = puts(world.emu, r"/virtualMachines/")
    assert vm_put.body["plan"] == PLAN
    assert "purchase plan name '9-gen2', product 'almalinux-x86_64', publisher 'almalinux'" in log.text()
    assert world.leftovers() == []


def test_without_its_purchase_plan_azure_refuses_the_smoke_vm_and_nothing_is_left(world, target):
    rec = record(world)
    rec.extra["purchase_plan"] = None  # as if the template's plan_* said "no plan"
    log = Log()
    with pytest.raises(Exception, match="VMMarketplaceInvalidInput.*requires Plan information"):
        target.smoke_setup(rec, check(world), log)
    assert world.leftovers() == []
    assert "plan" not in puts(world.emu, r"/virtualMachines/")[0].body


def test_a_record_without_a_plan_uses_the_image_definitions(world, target):
    rec = record(world)  # made before prepare recorded plans: no extra["purchase_plan"]
    log = Log()
    info = target.smoke_setup(rec, check(world), log)
    assert "using the one of gallery image definition bakery_gallery/rhel9-nginx: name '9-gen2'" in log.text()
    assert world.emu.get(info["vm_id"])["plan"] == PLAN
    target.smoke_teardown(rec, Log())


@pytest.mark.parametrize("state", ["created", "Created", "SUCCEEDED"])
def test_a_managed_image_provisioned_created_or_in_any_case_is_smoke_tested(world, target, state):
    rec = record(world)
    world.emu.state.get(rec.artifact_id).properties["provisioningState"] = state
    info = target.smoke_setup(rec, check(world), Log())
    assert info["address"]
    target.smoke_teardown(rec, Log())
    world.emu.state.get(rec.artifact_id).properties["provisioningState"] = "Failed"
    with pytest.raises(AzureTargetError, match="is Failed, not Succeeded"):
        target.smoke_setup(rec, check(world), Log())


def test_smoke_teardown_can_delete_a_failed_bakes_managed_image(world, target):
    rec = record(world)
    assert target.smoke_teardown(rec, Log(), delete_image=True) == ["images/rhel9-nginx-2026-1126-200001"]
    assert world.emu.state.ids("Microsoft.Compute/images") == []
    # again: ARM answers the DELETE of a missing image with 204, which deletes nothing and says so
    log = Log()
    assert target.smoke_teardown(rec, log, delete_image=True) == []
    assert world.emu.requests("DELETE", r"Compute/images/[^/]+$")[-1].status == 204


# --- publish -------------------------------------------------------------------------------------------
def version_id(world: AzureWorld, version: str = VERSION) -> str:
    return (f"/subscriptions/{world.subscription_id}/resourceGroups/{GALLERY_RG}/providers/Microsoft.Compute/"
            f"galleries/{GALLERY}/images/{IMAGE}/versions/{version}")


def test_publish_creates_the_version_with_profile_and_tags_and_logs_replication(world, target):
    emu = world.emu
    emu.faults.slow_replication(0.5)
    rec = record(world)
    log = Log()
    published = target.publish(rec, log)
    assert published.lower() == version_id(world).lower()
    v = emu.get(published)
    assert v["properties"]["provisioningState"] == "Succeeded"
    profile = v["properties"]["publishingProfile"]
    assert [(t["name"], t["regionalReplicaCount"], t["storageAccountType"]) for t in profile["targetRegions"]] == [
        ("East US 2", 2, "Standard_ZRS"), ("West Europe", 1, "Standard_LRS")]
    assert profile["excludeFromLatest"] is False
    eol = datetime.fromisoformat(profile["endOfLifeDate"])
    assert abs(eol - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
    assert v["properties"]["storageProfile"]["source"]["id"] == rec.artifact_id
    assert v["tags"] == {"image": IMAGE, "version": VERSION, "managed_by": "image-bakery", "dag_run_id": RUN_ID,
                         "packer_run_uuid": PACKER_UUID, "template_digest": rec.template_digest,
                         "smoke_test": "passed", "smoke_test_seconds": "12.5"}
    progress = [ln for ln in log if ln.startswith("publish: replication to ")]
    assert any("East US 2: Replicating" in ln for ln in progress), log.text()
    assert any("West Europe: Completed 100%" in ln for ln in progress), log.text()
    assert emu.count("GET", r"/versions/2026\.1126\.200001$") >= 2  # polled with $expand while replicating
    assert any(r.query.get("$expand") == "ReplicationStatus" for r in emu.requests("GET", r"/versions/"))


@G_PUBLISH_RETRY
def test_publish_again_from_the_same_run_adopts_the_version(world, target):
    rec = record(world)
    first = target.publish(rec, Log())
    log = Log()
    assert target.publish(rec, log) == first
    assert "already published by this run: nothing to do" in log.text()
    assert len(puts(world.emu, r"/versions/")) == 1


@G_PUBLISH_RETRY
def test_publish_waits_for_a_version_of_this_run_still_replicating(world, target):
    emu = world.emu
    rec = record(world)
    emu.faults.slow_replication(1.5)
    az = world.clients()
    az.compute.gallery_image_versions.begin_create_or_update(  # an earlier try, interrupted after the PUT
        GALLERY_RG, GALLERY, IMAGE, VERSION, target.version_body(rec))
    log = Log()
    assert target.publish(rec, log).lower() == version_id(world).lower()
    assert "from this run is Creating: waiting for it" in log.text()
    assert len(puts(emu, r"/versions/")) == 1
    assert emu.get(version_id(world))["properties"]["provisioningState"] == "Succeeded"
    az.close()


@pytest.mark.guarantee("arm-faults")
def test_replication_past_the_deadline_fails_clearly_and_the_retry_adopts_it(world, target):
    emu = world.emu
    emu.faults.slow_replication(3.0)
    rec = record(world)
    impatient = AzureTarget(target.spec, world.clients, progress_interval=0.05, publish_timeout=0.5)
    with pytest.raises(AzureTargetError, match=r"still replicating after 0s \(the publish deadline\).*adopts"):
        impatient.publish(rec, Log())
    log = Log()
    assert target.publish(rec, log).lower() == version_id(world).lower()  # the retry, patient again
    assert "from this run is Creating: waiting for it" in log.text()
    assert len(puts(emu, r"/versions/")) == 1
    assert emu.get(version_id(world))["properties"]["provisioningState"] == "Succeeded"


@G_PUBLISH_RETRY
def test_a_failed_version_of_this_run_is_replaced(world, target):
    emu = world.emu
    rec = record(world)
    emu.faults.fail_lro(method="PUT", path=r"/versions/", code="ReplicationFailed", message="disk copy timed out")
    with pytest.raises(Exception, match="disk copy timed out"):
        target.publish(rec, Log())
    log = Log()
    target.publish(rec, log)
    assert "ended Failed: deleting it and publishing again" in log.text()
    assert emu.get(version_id(world))["properties"]["provisioningState"] == "Succeeded"


@G_PUBLISH_RETRY
def test_a_version_of_another_run_is_an_error_unless_replace_existing(world, target):
    target.publish(record(world, run_id="scheduled__2026-11-26T02:00:00+00:00", packer_uuid="other"), Log())
    mine = record(world, image_id=None)
    with pytest.raises(AzureTargetError) as err:
        target.publish(mine, Log())
    assert "already exists, published by DAG run 'scheduled__2026-11-26T02:00:00+00:00'" in str(err.value)
    assert "replace_existing=true" in str(err.value)
    log = Log()
    target.publish(mine, log, replace_existing=True)
    assert "replacing" in log.text()
    assert world.emu.get(version_id(world))["tags"]["dag_run_id"] == RUN_ID


@pytest.mark.guarantee("smoke-test-fails")
def test_publish_refuses_an_image_that_failed_its_smoke_test(world, target):
    with pytest.raises(AzureTargetError, match="smoke test did not pass"):
        target.publish(record(world, passed=False), Log())
    assert puts(world.emu, r"/versions/") == []


# --- list & prune -----------------------------------------------------------------------------------------
OLD = datetime.now(UTC) - timedelta(days=40)


def seed_version(world: AzureWorld, target: AzureTarget, version: str, *, published: datetime = OLD,
                 tags: dict | None = None, safety: dict | None = None, regions: int = 1,
                 source_rg: str = IMAGES_RG, source_image: str | None = None) -> str:
    image_id = make_managed_image(world, version, image=source_image or IMAGE, rg=source_rg)
    az = world.clients()
    rec = record(world, version=version, image_id=image_id, run_id=f"scheduled__{version}")
    body = target.version_body(rec)
    body["tags"].update(tags or {})
    body["properties"]["publishingProfile"]["targetRegions"] = body["properties"]["publishingProfile"][
        "targetRegions"][:regions]
    if safety is not None:
        body["properties"]["safetyProfile"] = safety
    v = az.compute.gallery_image_versions.begin_create_or_update(GALLERY_RG, GALLERY, IMAGE, version, body).result()
    az.close()
    res = world.emu.state.get(v.id)
    res.properties["publishingProfile"]["publishedDate"] = published.isoformat()  # as if published then
    return v.id


@pytest.mark.guarantee("prune-safety")
def test_prune_keeps_the_newest_and_every_protected_version_and_deletes_the_rest(world, target):
    emu = world.emu
    other_rg = "rg-other-team"
    with world.clients() as az:
        az.resource.resource_groups.create_or_update(other_rg, {"location": world.location})
    seed_version(world, target, "2026.1001.200000")                                    # deleted, image deleted
    seed_version(world, target, "2026.1002.200000", source_rg=other_rg, source_image="theirs")  # deleted, image kept
    seed_version(world, target, "2026.1003.200000", tags={"pinned": "true"})          # pinned
    seed_version(world, target, "2026.1004.200000", regions=2,
                 safety={"allowDeletionOfReplicatedLocations": False})                # Azure would refuse
    seed_version(world, target, "2026.1005.200000", published=datetime.now(UTC))  # too young
    seed_version(world, target, "2026.1006.200000")                                   # 2nd newest
    current = record(world)
    target.publish(current, Log())                                                    # the newest (protected)

    versions = [v.version for v in target.list_versions(IMAGE)]
    assert versions == ["2026.1001.200000", "2026.1002.200000", "2026.1003.200000", "2026.1004.200000",
                        "2026.1005.200000", "2026.1006.200000", VERSION]
    assert emu.count("GET", r"/images/rhel9-nginx/versions$") >= 4  # 7 versions, 2 per page: nextLink followed

    log = Log()
    would = target.prune(IMAGE, 2, protect={VERSION}, dry_run=True, log=log)
    assert would == ["2026.1001.200000", "2026.1002.200000"]
    assert emu.requests("DELETE") == []
    assert "would delete managed image rg-bakery-images/rhel9-nginx-2026-1126-200001" in log.text()

    log = Log()
    deleted = target.prune(IMAGE, 2, protect={VERSION}, dry_run=False, log=log)
    assert deleted == ["2026.1001.200000", "2026.1002.200000"]
    assert [v.version for v in target.list_versions(IMAGE)] == [
        "2026.1003.200000", "2026.1004.200000", "2026.1005.200000", "2026.1006.200000", VERSION]
    text = log.text()
    assert "keeping 2026.1003.200000: pinned (tag pinned=true)" in text
    assert "keeping 2026.1004.200000: safetyProfile.allowDeletionOfReplicatedLocations is false" in text
    assert "keeping 2026.1005.200000: younger than 24 h" in text
    assert f"keeping {VERSION}: published by this run" in text
    images = sorted(i.rsplit("/", 1)[1] for i in emu.state.ids("Microsoft.Compute/images"))
    # intermediate images of deleted and of published (Succeeded) versions are gone; not someone else's
    assert images == ["theirs-2026-1002-200000"]
    assert target.prune(IMAGE, 2, protect={VERSION}, dry_run=False, log=Log()) == []  # nothing more to do


@pytest.mark.guarantee("prune-safety")
def test_prune_deletes_each_intermediate_image_once_and_says_deleted_only_when_it_was(world, target):
    emu = world.emu
    for day in (1, 2, 3):
        seed_version(world, target, f"2026.100{day}.200000")
    log = Log()
    assert target.prune(IMAGE, 2, protect=set(), dry_run=False, log=log) == ["2026.1001.200000"]
    deleted = sorted(r.path.rsplit("/", 1)[1] for r in emu.requests("DELETE", r"Compute/images/[^/]+$") if not r.fault)
    assert deleted == ["rhel9-nginx-2026-1001-200000", "rhel9-nginx-2026-1002-200000", "rhel9-nginx-2026-1003-200000"]
    assert emu.state.ids("Microsoft.Compute/images") == []
    # the next prunes keep 1002 and 1003 again: their images are gone, so nothing is deleted or said again
    before = len(emu.requests("DELETE"))
    for _ in range(2):
        log = Log()
        assert target.prune(IMAGE, 2, protect=set(), dry_run=False, log=log) == []
        assert "managed image" not in log.text(), log.text()
    assert emu.requests("DELETE")[before:] == []
    # an image that disappears between the listing and its delete (204): "already gone", not "deleted"
    seed_version(world, target, "2026.1004.200000")
    original = emu.arm.handle

    def gone_first(method, path, headers, raw):  # somebody deletes the image just before prune does
        if method == "DELETE" and re.search(r"Compute/images/[^/?]+(\?|$)", path):
            with emu.arm.lock:
                emu.arm.remove(emu.state.get(path.split("?")[0]))
        return original(method, path, headers, raw)

    emu.arm.handle = gone_first
    try:
        log = Log()
        assert target.prune(IMAGE, 2, protect=set(), dry_run=False, log=log) == ["2026.1002.200000"]
    finally:
        emu.arm.handle = original
    assert "managed image rg-bakery-images/rhel9-nginx-2026-1004-200000 was already gone" in log.text()
    assert "deleted intermediate managed image" not in log.text()


@pytest.mark.guarantee("prune-safety")
def test_prune_never_deletes_the_version_azures_latest_resolves_to(world, target):
    emu = world.emu
    seed_version(world, target, "2026.1001.200000")
    seed_version(world, target, "2026.1002.200000")                       # what `latest` gives a VM
    for candidate in ("2026.1003.200000", "2026.1004.200000"):              # newer, excluded from latest
        version_id_ = seed_version(world, target, candidate)
        emu.state.get(version_id_).properties["publishingProfile"]["excludeFromLatest"] = True
    log = Log()
    assert target.prune(IMAGE, 2, protect=set(), dry_run=False, log=log) == ["2026.1001.200000"]
    assert [v.version for v in target.list_versions(IMAGE)] == [
        "2026.1002.200000", "2026.1003.200000", "2026.1004.200000"]
    assert ("keeping 2026.1002.200000: Azure's `latest` resolves to it: the highest version not excluded from "
            "latest (2026.1003.200000, 2026.1004.200000 are excludeFromLatest)") in log.text()
    # and it is what ARM gives a VM made from the image definition without a version
    from tests.azure_emulator.kinds import latest_version

    definition = emu.state.get(f"/subscriptions/{world.subscription_id}/resourceGroups/{GALLERY_RG}/providers/"
                               f"Microsoft.Compute/galleries/{GALLERY}/images/{IMAGE}")
    assert latest_version(emu.arm, definition).name == "2026.1002.200000"


def test_prune_keeps_a_backfills_rebuild_for_protect_days_and_says_why(world, target):
    now = datetime.now(UTC)
    recent = (now - timedelta(days=2)).isoformat(timespec="seconds")
    seed_version(world, target, "2026.1001.200000", tags={"rebuilt_at": recent})       # rebuilt 2 days ago: kept
    seed_version(world, target, "2026.1002.200000",
                 tags={"rebuilt_at": (now - timedelta(days=30)).isoformat(timespec="seconds")})  # long ago: deleted
    seed_version(world, target, "2026.1003.200000")                                     # never rebuilt: deleted
    seed_version(world, target, "2026.1004.200000")                                     # the newest
    log = Log()
    assert target.prune(IMAGE, 1, protect=set(), dry_run=True, log=log, backfill_protect_days=7) == [
        "2026.1002.200000", "2026.1003.200000"]
    log = Log()
    deleted = target.prune(IMAGE, 1, protect=set(), dry_run=False, log=log, backfill_protect_days=7)
    assert deleted == ["2026.1002.200000", "2026.1003.200000"]
    assert [v.version for v in target.list_versions(IMAGE)] == ["2026.1001.200000", "2026.1004.200000"]
    assert (f"keeping 2026.1001.200000: rebuilt by a backfill at {recent}: protected for 7 days after the rebuild "
            "(catalogue backfill.protect_days)") in log.text()
    # once the protection is over (here: a shorter protect_days), it is an old version like any other
    assert target.prune(IMAGE, 1, protect=set(), dry_run=False, log=Log(), backfill_protect_days=1) == [
        "2026.1001.200000"]


def test_prune_with_nothing_published(world, target):
    log = Log()
    assert target.prune(IMAGE, 3, protect=set(), dry_run=False, log=log) == []
    assert "no gallery image versions" in log.text()


def test_prune_reports_a_deletion_azure_refuses_and_still_deletes_the_others(world, target):
    seed_version(world, target, "2026.1001.200000")
    seed_version(world, target, "2026.1002.200000")
    seed_version(world, target, "2026.1003.200000")
    world.emu.faults.add(409, method="DELETE", path=r"/versions/2026\.1001\.200000$", times=20,
                         code="OperationNotAllowed", message="locked by policy")
    with pytest.raises(AzureTargetError, match=r"version 2026\.1001\.200000: .*locked by policy"):
        target.prune(IMAGE, 1, protect=set(), dry_run=False, log=Log())
    assert [v.version for v in target.list_versions(IMAGE)] == ["2026.1001.200000", "2026.1003.200000"]


def test_prune_deletes_with_at_most_the_catalogues_concurrency_at_a_time(world, target):
    assert target.cfg.prune_concurrency == 16  # the default
    target.cfg = dataclasses.replace(target.cfg, prune_concurrency=4)  # the catalogue's azure.prune.concurrency
    for day in range(1, 11):
        seed_version(world, target, f"2026.10{day:02d}.200000")
    emu = world.emu
    active, peak, lock = [0], [0], threading.Lock()
    original = emu.arm.handle

    def slow_handle(method, path, headers, raw):
        if method == "DELETE" and "/versions/" in path:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            try:
                time.sleep(0.3)
                return original(method, path, headers, raw)
            finally:
                with lock:
                    active[0] -= 1
        return original(method, path, headers, raw)

    emu.arm.handle = slow_handle
    deleted = target.prune(IMAGE, 2, protect=set(), dry_run=False, log=Log())
    assert len(deleted) == 8
    assert 2 <= peak[0] <= 4, peak[0]


@pytest.mark.guarantee("arm-faults")
def test_prune_throttled_by_arm_deletes_everything_it_should_without_failing(world, target):
    """ARM's write limits (a token bucket): past it deletes are answered 429 + Retry-After; prune sends
    them again and ends with exactly the kept versions, no failure."""
    for day in range(1, 11):
        seed_version(world, target, f"2026.10{day:02d}.200000")
    world.emu.faults.throttle(bucket=2, refill_per_second=2, method="DELETE", path=r"/versions/[^/]+$")
    log = Log()
    deleted = target.prune(IMAGE, 2, protect=set(), dry_run=False, log=log)
    assert len(deleted) == 8 and [v.version for v in target.list_versions(IMAGE)] == [
        "2026.1009.200000", "2026.1010.200000"]
    throttled = [f for f in world.emu.faults.injected if f[0] == "DELETE" and f[2] == 429]
    assert throttled, "the throttle never answered 429: the test would prove nothing"
    assert "deleting 8 version(s), at most 8 at a time" in log.text()
