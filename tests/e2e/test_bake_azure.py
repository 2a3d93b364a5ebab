"""End to end: the real Azure DAG (`airflow dags test`, dags/image_bakery.py) against the ARM emulator.

Everything is the product's real code path: the catalogue (a test copy pointing at the emulator's
resource groups), an ordinary ``azure`` connection given as ``AIRFLOW_CONN_AZURE_EMU`` (client id /
secret / tenant; ``resource_manager_endpoint``, ``authority_host`` and ``connection_verify`` aim it at
the emulator, which issues the tokens and refuses any other), the real Packer validating the real
template, and the fake ``packer`` (first on PATH) doing the azure-arm build at the emulator (its
provisioners too: the package list the template downloads from the "build VM"). The SBOM and the
package manifest go to Azurite (the real Azure Storage emulator, started here) through an ordinary
``wasb`` connection (``AIRFLOW_CONN_SBOM_AZURITE``, a connection string) and the provider's WasbHook.

Assertions are on the emulator's state and request log and on Airflow's metadata DB (task states,
XCom), and on every log the run produced (the client secret must appear in none).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock
from urllib.parse import quote

import pytest
from bakery.packages.manifest import Manifest, parse_capture
from bakery.packages.sbom import validate_sbom
from bakery.targets.azure import SmokeNames, blob_names, managed_image_name

from tests.airflow_stack import ApiServer, free_port
from tests.azure_emulator.azurite import Azurite
from tests.azure_emulator.dagrun import DAG_ID, IMAGE, Bake, emulated_world, version_of
from tests.azure_emulator.fake_packer import package_list
from tests.azure_emulator.world import (
    GALLERY,
    GALLERY_RG,
    IMAGES_RG,
    SMOKE_CIDR,
    AzureWorld,
)
from tests.rpmrepo import LoopbackRpmRepos, almalinux_repos

pytestmark = pytest.mark.needs_tools("packer")  # the real one validates; the fake (first on PATH) builds


@pytest.fixture
def world():
    with emulated_world() as w:
        yield w


SBOM_CONN = "sbom_azurite"
SBOM_CONTAINER = "image-sboms"
ALMALINUX = {"image_publisher": "almalinux"}  # what the fake build VM of rhel9-nginx lists
ALMALINUX_PLAN = {"name": "9-gen2", "product": "almalinux-x86_64", "publisher": "almalinux"}
NGINX_UPDATE = "1:1.20.1-16.el9_4.1"


@pytest.fixture
def azurite(tmp_path):
    with Azurite(tmp_path / "azurite") as a:
        a.create_container(SBOM_CONTAINER)
        yield a
    assert not a.running


def sbom_bake(world: AzureWorld, home: Path, azurite: Azurite, *, mirrors: list[dict] | None = None,
              **env: str) -> Bake:
    """A Bake whose catalogue stores SBOMs in Azurite through the wasb connection SBOM_CONN (``mirrors``:
    its packages.mirrors)."""
    return Bake(world, home, sbom={"conn_id": SBOM_CONN, "container": SBOM_CONTAINER},
                env={f"AIRFLOW_CONN_{SBOM_CONN.upper()}": azurite.wasb_connection_json(), **env}, mirrors=mirrors)


def expected_manifest(**env: str) -> Manifest:
    """The manifest of what the fake build VM lists (computed here, not by the product)."""
    with mock.patch.dict(os.environ, env):
        return parse_capture(package_list(ALMALINUX))


def stored_packages(azurite: Azurite, version: str) -> tuple[Manifest, str]:
    sbom_blob, manifest_blob = blob_names(IMAGE, version)
    return (Manifest.from_dict(json.loads(azurite.read_blob(SBOM_CONTAINER, manifest_blob))),
            azurite.read_blob(SBOM_CONTAINER, sbom_blob).decode())


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
@pytest.mark.guarantee("prune-safety")
def test_azure_dag_validates_builds_smoke_tests_publishes_and_prunes(world, tmp_path, airflow_db, azurite):
    emu = world.emu
    seed_versions(world)
    api_port = free_port()  # the API server that reads the run afterwards: the links name its base URL
    bake = sbom_bake(world, tmp_path / "run", azurite, AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{api_port}")
    state = bake.run("2026-11-26T02:00:00+00:00")
    assert state == "success", bake.output[-8000:]
    assert set(bake.states().values()) == {"success"}, bake.states()
    assert sorted(bake.states()) == ["build", "check_changes", "give_back_turn", "prepare", "prune", "publish",
                                     "smoke_setup", "smoke_teardown", "smoke_test", "validate", "wait_replication",
                                     "wait_turn"]
    version = version_of(bake)
    assert version == "2026.1126.200001"
    assert bake.xcom("check_changes")["build"] is True

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
    (vm_put,) = [r for r in emu.requests("PUT", r"/virtualMachines/smoke-") if not r.fault]
    assert vm_put.body["properties"]["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
    assert vm_put.body["tags"]["dag_run_id"] == bake.run_id and vm_put.body["tags"]["purpose"] == "smoke-test"
    # AlmaLinux's purchase plan: the build VM (Packer's plan_info) and the smoke VM from the image captured
    # from it (prepare's plan, from the template's plan_* variables) both send it; Azure, and the emulator,
    # refuse either without it (VMMarketplaceInvalidInput)
    (build_vm_put,) = [r for r in emu.requests("PUT", r"/virtualMachines/pkrvm") if not r.fault]
    assert build_vm_put.body["plan"] == vm_put.body["plan"] == ALMALINUX_PLAN
    assert bake.xcom("prepare")["record"]["extra"]["purchase_plan"] == ALMALINUX_PLAN
    assert world.leftovers() == []
    assert world.created_twice() == []

    # publish: the gallery version, with its profile and provenance tags
    published = bake.xcom("wait_replication")  # publish sent the PUT; the wait saw it Succeeded
    assert bake.xcom("publish")["published_id"] is None
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

    # the package manifest: captured in the "build VM" before deprovisioning, downloaded by Packer's file
    # provisioner, its digest a tag of the version; SBOM and manifest in Azurite through the wasb hook
    want = expected_manifest()
    assert build["packages"]["digest"] == want.digest and build["packages"]["count"] == len(want) == 19
    assert build["packages"]["family"] == "rpm"
    assert v["tags"]["manifest_digest"] == want.digest
    prepared = bake.xcom("prepare")["record"]
    assert v["tags"]["inputs"] == prepared["inputs"]["label"] and v["tags"]["inputs"].startswith("current@")
    assert v["tags"]["variables_digest"] == prepared["variables_digest"]
    assert "rebuilt_at" not in v["tags"]  # a manual run, not a backfill
    assert all(len(value) <= 256 for value in v["tags"].values())
    stored, sbom = stored_packages(azurite, version)
    assert stored == want and stored.digest == v["tags"]["manifest_digest"]
    validate_sbom(sbom)
    doc = json.loads(sbom)
    assert doc["metadata"]["component"]["name"] == IMAGE and doc["metadata"]["component"]["version"] == version
    assert len(doc["components"]) == 19
    assert "pkg:rpm/almalinux/nginx@1.20.1-14.el9_2.1?arch=x86_64&distro=almalinux-9.4&epoch=1" in {
        c["purl"] for c in doc["components"]}
    assert azurite.requests("PUT", f"/{SBOM_CONTAINER}/{IMAGE}/{version}/sbom.cdx.json")
    assert f"SBOM (CycloneDX, 19 packages) and package manifest stored in blob container '{SBOM_CONTAINER}'" in bake.output
    assert "capture-packages: 19 packages listed in /tmp/bakery-packages.tsv" in bake.output

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

    # read through the REST API of an API server on the run's metadata DB: the tasks' extra links, and the
    # gallery page's JSON of the image (the Azure target read through the same interface as the local one)
    with ApiServer(tmp_path / "api-server.log", env=bake.env(), port=api_port) as api:
        base = api.url
        build_links = api.links(DAG_ID, bake.run_id, "build")
        publish_links = api.links(DAG_ID, bake.run_id, "wait_replication")
        gallery = api.get(f"/image-gallery/api/images/{IMAGE}")
    run = quote(bake.run_id, safe="")
    assert build_links == {
        "Packer log": f"{base}/dags/{DAG_ID}/runs/{run}/tasks/build?try_number=1",
        "Packer artifact": f"https://portal.azure.com/#resource{build['artifacts'][0]['id']}",
    }
    assert publish_links == {
        "Image gallery": f"{base}/image-gallery/images/{IMAGE}#v-{version}",
        "Azure portal": f"https://portal.azure.com/#resource{published['published_id']}",
    }
    assert published["published_id"].startswith(f"/subscriptions/{world.subscription_id}/resourceGroups/")
    assert gallery["error"] is None and gallery["target"] == "azure"
    rows = {v["version"]: v for v in gallery["versions"]}
    assert sorted(rows) == remaining
    row = rows[version]
    assert (row["dag_run_id"], row["run_type"], row["published_id"]) == (bake.run_id, "manual", published["published_id"])
    assert row["inputs"] == prepared["inputs"]["label"]
    assert row["smoke_passed"] is True and row["smoke_seconds"] == smoke["seconds"]
    assert row["has_sbom"] is True and row["package_count"] == 19
    assert row["build_seconds"] is not None and row["build_seconds"] > 0  # the build task's duration in Airflow
    assert rows["2026.1003.200000"]["pinned"] is True and rows["2026.1003.200000"]["has_sbom"] is False


@pytest.mark.guarantee("arm-faults")
def test_with_throttling_and_server_errors_the_run_succeeds_creating_nothing_twice(world, tmp_path, airflow_db):
    emu = world.emu
    seed_versions(world)
    before = len(emu.log)
    # a fifth of all ARM calls answer 429 or 503 (a request at most twice in a row) ...
    emu.faults.random(0.2, statuses=(429, 503), seed=20261126, retry_after=0, max_per_request=2)
    # ... and, whatever the dice say, every kind of create and delete is refused once first
    for method, path in [("PUT", r"/images/rhel9-nginx-"), ("PUT", r"/networkSecurityGroups/"),
                         ("PUT", r"/publicIPAddresses/"), ("PUT", r"/networkInterfaces/smoke-"),
                         ("PUT", r"/virtualMachines/pkrvm"), ("PUT", r"/virtualMachines/smoke-"),
                         ("DELETE", r"/virtualMachines/"),
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


@pytest.mark.guarantee("smoke-test-fails")
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


def test_a_second_bake_with_an_nginx_update_gets_a_new_manifest_digest_and_logs_the_diff(world, tmp_path, airflow_db,
                                                                                         azurite):
    emu = world.emu
    first = sbom_bake(world, tmp_path / "day1", azurite)
    assert first.run("2026-11-26T02:00:00+00:00") == "success", first.output[-8000:]
    v1 = version_of(first)
    assert "no earlier version with a package manifest" in first.output
    # the next day's build VM has a newer nginx; force_rebuild: bake whatever check_changes concludes
    second = sbom_bake(world, tmp_path / "day2", azurite, BAKERY_FAKE_PACKER_NGINX_VERSION=NGINX_UPDATE)
    assert second.run("2026-11-27T02:00:00+00:00", conf={"force_rebuild": True}) == "success", second.output[-8000:]
    v2 = version_of(second)
    assert v2 != v1
    assert second.xcom("check_changes")["build"] is True
    assert "check_changes: force_rebuild is set" in second.output

    tags = {r.name: r.tags for r in emu.state.of_type("Microsoft.Compute/galleries/images/versions")}
    old, new = expected_manifest(), expected_manifest(BAKERY_FAKE_PACKER_NGINX_VERSION=NGINX_UPDATE)
    assert tags[v1]["manifest_digest"] == old.digest
    assert tags[v2]["manifest_digest"] == new.digest != old.digest
    assert stored_packages(azurite, v2)[0] == new
    assert stored_packages(azurite, v1)[0] == old  # the earlier version's blobs are untouched
    # the publish log: the package diff to the previous version, read back from its packages.json blob
    assert f"packages {v1} -> {v2}: 0 added, 0 removed, 3 upgraded, 0 downgraded" in second.output
    assert f"^ nginx 1:1.20.1-14.el9_2.1 -> {NGINX_UPDATE} (x86_64)" in second.output
    assert azurite.requests("GET", f"/{SBOM_CONTAINER}/{IMAGE}/{v1}/packages.json")



# --- skip when nothing changed ------------------------------------------------------------------------
BASE = "marketplace:almalinux:almalinux-x86_64:9-gen2:9.5.202411260"  # the emulator's latest AlmaLinux 9 gen2
NEW_BASE_VERSION = "9.6.2025052001"
BAKE_STEPS = ("validate", "build", "smoke_setup", "smoke_test", "publish", "wait_replication")


@pytest.fixture
def rpm_repos(tmp_path):
    with LoopbackRpmRepos(tmp_path / "rpm-repos") as repos:
        yield repos


def gallery_versions(world: AzureWorld) -> dict[str, dict]:
    return {r.name: dict(r.tags) for r in world.emu.state.of_type("Microsoft.Compute/galleries/images/versions")}


def test_an_unchanged_nightly_is_skipped_and_a_package_or_base_image_update_bakes(world, tmp_path, airflow_db,
                                                                                 azurite, rpm_repos):
    """The rhel9 DAG with AlmaLinux's BaseOS and AppStream on loopback as its packages.mirrors (holding what
    the fake build VM installs, older builds, and a module stream's newer nginx, which dnf would not offer):
    bake; nothing changed: SKIPPED; nginx update + a new Marketplace image: bake, the reasons naming both."""
    emu = world.emu
    installed = [(p.name, p.version, p.arch) for p in expected_manifest().packages]

    def sync(**kw) -> None:
        for name, packages in almalinux_repos(installed, **kw).items():
            rpm_repos.publish(name, packages)

    sync()
    mirrors = [{"url": rpm_repos.url("BaseOS")}, {"url": rpm_repos.url("AppStream")}]
    urls = f"{rpm_repos.url('BaseOS')}, {rpm_repos.url('AppStream')}"

    # night 1: nothing published yet: bake; the version records the Marketplace image it was built from
    first = sbom_bake(world, tmp_path / "night1", azurite, mirrors=mirrors)
    assert first.run("2026-11-26T03:00:00+00:00") == "success", first.output[-8000:]
    v1 = version_of(first)
    assert first.xcom("check_changes")["reasons"] == [f"{IMAGE} has no published version yet"]
    assert first.xcom("prepare")["record"]["base_digest"] == BASE
    assert gallery_versions(world)[v1]["base_digest"] == BASE
    (build_vm,) = [r for r in emu.requests("PUT", r"/virtualMachines/pkrvm") if not r.fault]
    assert build_vm.body["properties"]["storageProfile"]["imageReference"]["version"] == "9.5.202411260"

    # night 2: same template, base image, variables; no package newer on the repositories: SKIPPED
    vm_puts, before = len(emu.requests("PUT", r"/virtualMachines/")), gallery_versions(world)
    second = sbom_bake(world, tmp_path / "night2", azurite, mirrors=mirrors)
    assert second.run("2026-11-27T03:00:00+00:00") == "success", second.output[-8000:]
    states = second.states()
    assert {t: states[t] for t in BAKE_STEPS} == dict.fromkeys(BAKE_STEPS, "skipped"), states
    assert (states["check_changes"], states["prune"], states["give_back_turn"]) == ("success", "success", "success")
    decision = second.xcom("check_changes")
    assert decision["build"] is False and decision["compared_with"] == v1 and decision["pending"] == []
    (reason,) = decision["reasons"]
    assert reason.startswith(f"nothing changed since {v1}: same template (sha256:")
    assert reason.endswith(f"base image ({BASE}), catalogue variables, and none of its 19 packages has a newer "
                           f"version on {urls}")
    assert [i.rsplit("/", 1)[0] for i in decision["compared"]["indices"]] == [
        f"{rpm_repos.url('BaseOS')}/repodata", f"{rpm_repos.url('AppStream')}/repodata"]
    assert f"check_changes: SKIP (build, smoke test and publish are skipped) {IMAGE} " in second.output
    assert gallery_versions(world) == before  # nothing new in the gallery
    assert len(emu.requests("PUT", r"/virtualMachines/")) == vm_puts  # no build VM, no smoke VM
    assert not second.packer_log.exists()  # Packer never ran
    assert second.xcom("prune") == []

    # night 3: AppStream has a newer nginx, and the Marketplace a newer AlmaLinux 9 image: bake, from that image
    sync(nginx=NGINX_UPDATE)
    emu.publish_marketplace_version("almalinux", "almalinux-x86_64", "9-gen2", NEW_BASE_VERSION)
    third = sbom_bake(world, tmp_path / "night3", azurite, mirrors=mirrors,
                      BAKERY_FAKE_PACKER_NGINX_VERSION=NGINX_UPDATE)
    assert third.run("2026-11-28T03:00:00+00:00") == "success", third.output[-8000:]
    assert set(third.states().values()) == {"success"}, third.states()
    decision = third.xcom("check_changes")
    new_base = f"marketplace:almalinux:almalinux-x86_64:9-gen2:{NEW_BASE_VERSION}"
    assert decision["build"] is True and decision["reasons"] == [
        f"base image changed since {v1}: {BASE} -> {new_base}",
        f"3 package update(s) pending on the mirrors since {v1}: nginx 1:1.20.1-14.el9_2.1 -> {NGINX_UPDATE} (x86_64); "
        f"nginx-core 1:1.20.1-14.el9_2.1 -> {NGINX_UPDATE} (x86_64); nginx-filesystem 1:1.20.1-14.el9_2.1 -> "
        f"{NGINX_UPDATE} (noarch)"]
    v3 = version_of(third)
    assert gallery_versions(world)[v3]["base_digest"] == new_base
    build_vm = [r for r in emu.requests("PUT", r"/virtualMachines/pkrvm") if not r.fault][-1]
    assert build_vm.body["properties"]["storageProfile"]["imageReference"]["version"] == NEW_BASE_VERSION
    assert stored_packages(azurite, v3)[0] == expected_manifest(BAKERY_FAKE_PACKER_NGINX_VERSION=NGINX_UPDATE)
    assert world.leftovers() == []
