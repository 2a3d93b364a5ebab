"""End to end: the real Azure DAG (`airflow dags test`, dags/image_bakery.py) against the ARM emulator.

Everything is the product's real code path: the catalogue (a test copy pointing at the emulator's
resource groups), an ordinary ``azure`` connection given as ``AIRFLOW_CONN_AZURE_EMU`` (client id /
secret / tenant; ``resource_manager_endpoint``, ``authority_host`` and ``connection_verify`` aim it at
the emulator, which issues the tokens and refuses any other), the real Packer validating the real
template, and the fake ``packer`` (first on PATH) doing the azure-arm build at the emulator.

Assertions are on the emulator's state and request log and on Airflow's metadata DB (task states,
XCom), and on every log the run produced (the client secret must appear in none).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bakery.targets.azure import SmokeNames, managed_image_name

from tests.azure_emulator.dagrun import IMAGE, Bake, emulated_world, version_of
from tests.azure_emulator.world import (
    GALLERY,
    GALLERY_RG,
    IMAGES_RG,
    SMOKE_CIDR,
    AzureWorld,
)

pytestmark = pytest.mark.skipif(not os.access("/usr/bin/packer", os.X_OK), reason="needs the real packer (validate)")


@pytest.fixture
def world():
    with emulated_world() as w:
        yield w


OLD = datetime.now(UTC) - timedelta(days=40)


def seed_versions(world: AzureWorld) -> None:
    """Earlier bakes: versions published weeks ago (and one minutes ago), from their managed images."""
    az = world.clients()
    try:
        def seed(version: str, *, published=OLD, tags=None, regions=("eastus2",), safety=None, rg=IMAGES_RG,
                 image=IMAGE):
            img = az.compute.images.begin_create_or_update(rg, managed_image_name(image, version), {
                "location": world.location, "properties": {"storageProfile": {"osDisk": {
                    "osType": "Linux", "osState": "Generalized"}}}}).result()
            props = {"publishingProfile": {"targetRegions": [{"name": r} for r in regions]},
                     "storageProfile": {"source": {"id": img.id}}}
            if safety is not None:
                props["safetyProfile"] = safety
            v = az.compute.gallery_image_versions.begin_create_or_update(GALLERY_RG, GALLERY, IMAGE, version, {
                "location": world.location, "tags": {"managed_by": "image-bakery", **(tags or {})},
                "properties": props}).result()
            world.emu.state.get(v.id).properties["publishingProfile"]["publishedDate"] = published.isoformat()

        az.resource.resource_groups.create_or_update("rg-other-team", {"location": world.location})
        seed("2026.1001.200000")                                                      # old: deleted (+ its image)
        seed("2026.1002.200000", rg="rg-other-team", image="theirs")                  # old: deleted, image not ours
        seed("2026.1003.200000", tags={"pinned": "true"})                             # pinned: kept
        seed("2026.1004.200000", regions=("eastus2", "westeurope"),
             safety={"allowDeletionOfReplicatedLocations": False})                   # Azure would refuse: kept
        seed("2026.1005.200000", published=datetime.now(UTC))              # younger than 24 h: kept
        seed("2026.1006.200000")                                                      # 2nd newest (keep 2): kept
    finally:
        az.close()


def assert_no_secret_anywhere(bake: Bake) -> None:
    secret = bake.world.client_secret
    assert secret not in bake.all_logs_text()
    assert secret not in bake.all_xcom_text()
    for inv in bake.packer_invocations():
        assert secret not in " ".join(inv["argv"])  # never on the command line ...
        if inv["argv"][:1] in (["validate"], ["build"]):
            assert inv["pkr_vars"].get("client_secret") == secret  # ... only in PKR_VAR_client_secret
    var_files = bake.var_files()
    assert var_files and all(not Path(f).exists() for f in var_files)  # the private var-file is gone


# --- the whole pipeline -----------------------------------------------------------------------------
def test_azure_dag_validates_builds_smoke_tests_publishes_and_prunes(world, tmp_path, airflow_db):
    emu = world.emu
    seed_versions(world)
    bake = Bake(world, tmp_path / "run")
    state = bake.run("2026-11-26T02:00:00+00:00")
    assert state == "success", bake.output[-8000:]
    assert set(bake.states().values()) == {"success"}, bake.states()
    assert sorted(bake.states()) == ["build", "prepare", "prune", "publish", "smoke_setup", "smoke_teardown",
                                     "smoke_test", "validate"]
    version = version_of(bake)
    assert version == "2026.1126.200001"

    # validate: the REAL packer validated the real template (the fake hands validate over)
    invocations = bake.packer_invocations()
    assert [inv["argv"][0] for inv in invocations if inv["argv"][0] in ("validate", "build")] == ["validate", "build"]
    assert "is valid" in bake.output

    # build: the managed image was made by the fake azure-arm build with the template's tags ...
    image_id = (f"/subscriptions/{world.subscription_id}/resourceGroups/{IMAGES_RG}/providers/Microsoft.Compute/"
                f"images/{managed_image_name(IMAGE, version)}")
    assert image_id.lower() in [i.lower() for i in emu.state.created_ids("Microsoft.Compute/images")]
    (image_put,) = [r for r in emu.requests("PUT", r"/images/rhel9-nginx-2026-1126-200001$") if not r.fault]
    image_tags = dict(image_put.body["tags"])
    built_at = datetime.fromisoformat(image_tags.pop("created_at"))  # the build's start: the janitor ages by it
    assert abs(datetime.now(UTC) - built_at) < timedelta(minutes=15)
    assert image_tags == {"image": IMAGE, "version": version, "dag_run_id": bake.run_id, "managed_by": "image-bakery"}
    build = bake.xcom("build")
    assert build["artifacts"][0]["id"].lower() == image_id.lower()
    assert build["manifest_entry"]["packer_run_uuid"] == build["packer_run_uuid"]

    # smoke test: a locked-down VM answered nginx's page; every smoke resource is gone
    smoke = bake.xcom("smoke_test")["smoke"]
    assert smoke["passed"] is True and smoke["status"] == 200 and "Welcome to nginx" in smoke["detail"]
    names = SmokeNames.of(IMAGE, version)
    created = {rid.rsplit("/", 1)[1] for rid in emu.state.created_ids()}
    assert {names.vm, names.nic, names.public_ip, names.nsg, names.os_disk} <= created
    (nsg_put,) = [r for r in emu.requests("PUT", r"/networkSecurityGroups/") if not r.fault]
    (rule, deny) = nsg_put.body["properties"]["securityRules"]
    assert deny["properties"]["access"] == "Deny" and deny["properties"]["sourceAddressPrefix"] == "*"
    assert rule["properties"]["sourceAddressPrefix"] == SMOKE_CIDR
    assert rule["properties"]["destinationPortRange"] == str(emu.vm_http_port)
    (vm_put,) = [r for r in emu.requests("PUT", r"/virtualMachines/") if not r.fault]
    assert vm_put.body["properties"]["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
    assert vm_put.body["tags"]["dag_run_id"] == bake.run_id and vm_put.body["tags"]["purpose"] == "smoke-test"
    assert world.leftovers() == []
    assert world.created_twice() == []

    # publish: the gallery version, with its profile and provenance tags
    published = bake.xcom("publish")
    v = emu.get(published["published_id"])
    assert v["name"] == version and v["properties"]["provisioningState"] == "Succeeded"
    profile = v["properties"]["publishingProfile"]
    assert [(t["name"], t["regionalReplicaCount"], t["storageAccountType"]) for t in profile["targetRegions"]] == [
        ("East US 2", 2, "Standard_ZRS"), ("West Europe", 1, "Standard_LRS")]
    assert profile["excludeFromLatest"] is False and profile["endOfLifeDate"].startswith("2027-")
    assert v["properties"]["storageProfile"]["source"]["id"].lower() == image_id.lower()
    assert v["tags"]["dag_run_id"] == bake.run_id
    assert v["tags"]["packer_run_uuid"] == build["packer_run_uuid"]
    assert v["tags"]["template_digest"] == bake.xcom("prepare")["record"]["template_digest"]
    assert v["tags"]["smoke_test"] == "passed"
    assert "publish: replication to East US 2" in bake.output

    # prune: keep 2 newest + protected; the intermediate managed images of published versions are gone
    assert bake.xcom("prune") == ["2026.1001.200000", "2026.1002.200000"]
    remaining = sorted(r.name for r in emu.state.of_type("Microsoft.Compute/galleries/images/versions"))
    assert remaining == ["2026.1003.200000", "2026.1004.200000", "2026.1005.200000", "2026.1006.200000", version]
    assert sorted(i.rsplit("/", 1)[1] for i in emu.state.ids("Microsoft.Compute/images")) == [
        "theirs-2026-1002-200000"]
    assert "keeping 2026.1004.200000: safetyProfile.allowDeletionOfReplicatedLocations is false" in bake.output

    # authentication: tokens only from the client secret, for ARM's scope; Packer's temp group gone
    requests = emu.identity.token_requests
    assert requests and {(r.client_id, r.status) for r in requests} == {(world.client_id, 200)}
    assert {r.scope for r in requests} == {emu.endpoint + ".default"}
    assert [r.name for r in emu.state.of_type("Microsoft.Resources/resourceGroups")
            if r.name.startswith("pkr-")] == []
    assert_no_secret_anywhere(bake)


@pytest.mark.guarantee("Azure: a fifth of ARM calls throttled or failing (429/503)",
                        expected="the bake succeeds without an Airflow retry; nothing created twice; nothing left")
def test_with_throttling_and_server_errors_the_run_succeeds_creating_nothing_twice(world, tmp_path, airflow_db):
    emu = world.emu
    seed_versions(world)
    before = len(emu.log)
    # a fifth of all ARM calls answer 429 or 503 (a request at most twice in a row) ...
    emu.faults.random(0.2, statuses=(429, 503), seed=20261126, retry_after=0, max_per_request=2)
    # ... and, whatever the dice say, every kind of create and delete is refused once first
    for method, path in [("PUT", r"/images/rhel9-nginx-"), ("PUT", r"/networkSecurityGroups/"),
                         ("PUT", r"/publicIPAddresses/"), ("PUT", r"/networkInterfaces/"),
                         ("PUT", r"/virtualMachines/"), ("DELETE", r"/virtualMachines/"),
                         ("PUT", r"/versions/[0-9.]+$"), ("DELETE", r"/versions/[0-9.]+$"),
                         ("DELETE", r"/images/rhel9-nginx-")]:
        emu.faults.add(503 if method == "PUT" else 429, method=method, path=path, times=1, retry_after=0)
    bake = Bake(world, tmp_path / "run")
    state = bake.run("2026-11-27T02:00:00+00:00")
    assert state == "success", bake.output[-8000:]
    assert set(bake.tries().values()) == {1}, bake.tries()  # the SDK (and Packer) retried, not Airflow
    arm = [r for r in emu.log[before:] if r.path.startswith("/subscriptions/")]
    faulted = [r for r in arm if r.fault]
    print(f"{len(faulted)} of {len(arm)} ARM requests answered 429/503")
    assert {r.status for r in faulted} == {429, 503}
    assert len(faulted) / len(arm) > 0.15
    assert all(rule.fired == 1 for rule in emu.faults.http), [(r.method, r.path, r.fired) for r in emu.faults.http]
    assert world.created_twice() == []
    assert world.leftovers() == []
    version = version_of(bake)
    versions = sorted(r.name for r in emu.state.of_type("Microsoft.Compute/galleries/images/versions"))
    assert versions == ["2026.1003.200000", "2026.1004.200000", "2026.1005.200000", "2026.1006.200000", version]
    assert bake.xcom("prune") == ["2026.1001.200000", "2026.1002.200000"]
    assert len([i for i in emu.state.created_ids("Microsoft.Compute/galleries/images/versions")
                if i.endswith(version)]) == 1
    assert bake.xcom("smoke_test")["smoke"]["passed"] is True


@pytest.mark.guarantee("Azure: smoke test fails (wrong page, no answer)",
                        expected="nothing published; VM, disk, NIC, IP, NSG and the failed image deleted")
@pytest.mark.parametrize("behaviour", [
    pytest.param({"body": "<html><body><h1>It works!</h1></body></html>"}, id="wrong-page"),
    pytest.param({"never_answers": True}, id="never-answers"),
])
def test_a_failed_smoke_test_publishes_nothing_and_leaves_nothing_behind(world, tmp_path, airflow_db, behaviour):
    emu = world.emu
    emu.set_image_behaviour(f"{IMAGE}-*", **behaviour)
    bake = Bake(world, tmp_path / "run", smoke_timeout=10)
    state = bake.run("2026-11-28T02:00:00+00:00")
    assert state == "failed"
    states = bake.states()
    assert states["smoke_setup"] == "success"
    assert states["smoke_test"] == "failed"
    assert states["smoke_teardown"] == "success"
    assert states["publish"] == "upstream_failed" and states["prune"] == "upstream_failed"
    assert bake.xcom("smoke_test", "smoke_verdict") == "failed"
    assert "smoke test of rhel9-nginx 2026.1128.200001 failed" in bake.output
    assert emu.state.of_type("Microsoft.Compute/galleries/images/versions") == []
    assert emu.requests("PUT", r"/versions/") == []
    assert world.leftovers() == []
    assert emu.state.ids("Microsoft.Compute/images") == []  # the failed bake's image is deleted too
    assert_no_secret_anywhere(bake)
