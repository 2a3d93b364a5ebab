"""Issue #4, the janitor in Azure: what dead bakes left in a subscription, removed after the TTL.

Real leftovers, made through the Azure SDK in the ARM emulator as the bakery and Packer make them:
smoke-test VMs with their NIC, public IP, NSG and OS disk (AzureTarget.smoke_setup, its clock set
two days back for the old one), managed images (published or not, pinned, with and without a
``created_at`` tag), Packer's temporary resource groups (with and without ``created_at``, with a
resource in them, empty). Next to them: young ones, and untagged or foreign ones that look alike.

The janitor runs as the DAG runs it: ``JanitorOperator`` with the Azure sweeper factory and the
connection of the catalogue's azure image (AIRFLOW_CONN_AZURE_EMU). A dry run first: nothing is
deleted, the report names exactly the old leftovers. Then the real run: exactly those are gone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from faultkit import REPO

from tests.azure_emulator.dagrun import CONN_ID, IMAGE, catalogue_entry, emulated_world
from tests.azure_emulator.world import (
    GALLERY,
    GALLERY_RG,
    IMAGES_RG,
    SMOKE_RG,
    AzureWorld,
)

TTL_HOURS = 1
# Ages are taken when a test makes its leftovers, not at import: the suite collects this file tens of
# minutes before it runs, and "2 hours old" must still be younger than a bake may run (build timeout +
# smoke-test timeout + 1 h) when the janitor looks.


def days_ago() -> datetime:
    return datetime.now(UTC) - timedelta(days=2)


def hours_ago() -> datetime:
    """Older than the TTL, younger than a bake may run."""
    return datetime.now(UTC) - timedelta(hours=2)
SOURCES_RG = "rg-smoke-sources"

G = pytest.mark.guarantee("janitor")


def iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def world(tmp_path, monkeypatch):
    with emulated_world() as w:
        entry = catalogue_entry(w)
        catalogue = tmp_path / "catalogue.yaml"
        catalogue.write_text(yaml.safe_dump({"version": 1, "images": {IMAGE: entry}}))
        monkeypatch.setenv("BAKERY_CATALOGUE", str(catalogue))
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", w.connection_json())
        yield w


def backdate(world: AzureWorld, resource_id: str, when: datetime) -> None:
    """The emulator's own creation time of a resource (what ARM reports as createdTime)."""
    world.emu.state.get(resource_id).created = when.timestamp()


def make_leftovers(world: AzureWorld) -> dict[str, list[str]]:
    """Everything the janitor must remove, and everything it must leave, by resource id."""
    from bakery.catalogue import load_catalogue
    from bakery.record import BakeRecord
    from bakery.targets.azure import AzureTarget, SmokeNames, managed_image_name
    from bakery.targets.base import SmokeCheck

    spec = load_catalogue()[IMAGE]
    az = world.clients()
    sub = f"/subscriptions/{world.subscription_id}"
    old, keep = [], []
    try:
        az.resource.resource_groups.create_or_update(SOURCES_RG, {"location": world.location})
        check = SmokeCheck(path="/", port=world.emu.vm_http_port, timeout_seconds=20)

        # smoke tests whose teardown never ran: one two days old, one two hours old, one just now
        def smoke(version: str, when: datetime | None) -> list[str]:
            rec = BakeRecord(image=IMAGE, version=version, target="azure", template_digest="sha256:x",
                             dag_run_id=f"scheduled__{version}", artifact_id=world.make_managed_image(
                                 IMAGE, version, rg=SOURCES_RG))
            target = AzureTarget(spec, world.clients, **({"now": lambda: when} if when else {}))
            try:
                target.smoke_setup(rec, check, print)
            finally:
                target.close()
            base = SmokeNames.of(IMAGE, version).base
            return [rid for rid in world.leftovers() if f"/{base}-" in rid]

        old += smoke("2026.1101.200000", days_ago())
        keep += smoke("2026.1102.200000", hours_ago())   # a bake of this image may still run that long
        keep += smoke("2026.1103.200000", None)
        assert len(old) == 5 and any("/disks/" in rid for rid in old)  # VM, NIC, IP, NSG and the OS disk
        # look-alikes that are not ours: untagged, or tagged by somebody else
        for name, tags in (("team-firewall", {}), ("legacy-smoke-nsg", {"purpose": "smoke-test", "owner": "x"})):
            nsg = az.network.network_security_groups.begin_create_or_update(
                SMOKE_RG, name, {"location": world.location, "tags": tags}).result()
            backdate(world, nsg.id, days_ago())
            keep.append(nsg.id)

        # managed images
        def image(version: str, tags: dict, rg: str = IMAGES_RG, created: datetime | None = None) -> str:
            img = az.compute.images.begin_create_or_update(rg, managed_image_name(IMAGE, version), {
                "location": world.location, "tags": tags,
                "properties": {"storageProfile": {"osDisk": {"osType": "Linux", "osState": "Generalized"}}}}).result()
            if created:
                backdate(world, img.id, created)
            return img.id

        ours = {"image": IMAGE, "managed_by": "image-bakery"}
        old.append(image("2026.1001.200000", {**ours, "version": "2026.1001.200000", "created_at": iso(days_ago())}))
        old.append(image("2026.1002.200000", {**ours, "version": "2026.1002.200000"}, created=days_ago()))  # createdTime
        published = image("2026.1003.200000", {**ours, "created_at": iso(days_ago())})
        az.compute.gallery_image_versions.begin_create_or_update(GALLERY_RG, GALLERY, IMAGE, "2026.1003.200000", {
            "location": world.location, "tags": {"managed_by": "image-bakery"},
            "properties": {"storageProfile": {"source": {"id": published}}}}).result()
        keep.append(published)
        keep.append(image("2026.1004.200000", {**ours, "created_at": iso(datetime.now(UTC))}))       # young
        keep.append(image("2026.1005.200000", {**ours, "created_at": iso(days_ago()), "pinned": "true"}))
        keep.append(image("2026.1006.200000", {"image": IMAGE}, created=days_ago()))                   # not ours
        keep.append(image("2026.1007.200000", {**ours, "created_at": iso(hours_ago())}))              # maybe in use

        # Packer's temporary resource groups
        def packer_group(suffix: str, tags: dict, resource_created: datetime | None = None) -> str:
            name = f"pkr-Resource-Group-{suffix}"
            az.resource.resource_groups.create_or_update(name, {"location": world.location, "tags": tags})
            if resource_created is not None:
                pip = az.network.public_ip_addresses.begin_create_or_update(name, "pkrip" + suffix, {
                    "location": world.location, "tags": tags,
                    "properties": {"publicIPAllocationMethod": "Dynamic"}}).result()
                backdate(world, pip.id, resource_created)
            return f"{sub}/resourceGroups/{name}"

        build = {**ours, "version": "2026.1008.200000", "dag_run_id": "scheduled__2026-10-08T02:00:00+00:00"}
        old.append(packer_group("old0000001", {**build, "created_at": iso(days_ago())}, resource_created=days_ago()))
        old.append(packer_group("notime0001", build, resource_created=days_ago()))   # aged by the resource in it
        keep.append(packer_group("young00001", {**build, "created_at": iso(datetime.now(UTC))}))
        keep.append(packer_group("running001", {**build, "created_at": iso(hours_ago())}))
        keep.append(packer_group("empty00001", build))                         # age unknown: kept, reported
        keep.append(packer_group("foreign001", {}, resource_created=days_ago()))  # somebody else's Packer
        keep.append(packer_group("othimg0001", {**build, "image": "not-in-this-catalogue",
                                                "created_at": iso(days_ago())}))
    finally:
        az.close()
    return {"old": old, "keep": keep}


def janitor(dry_run: bool) -> dict:
    """The Azure sweep task of the bakery_janitor DAG, as the DAG wires it."""
    from bakery.operators.janitor import AZURE_SWEEPERS, JanitorOperator

    op = JanitorOperator(task_id=f"sweep_azure_{CONN_ID}", sweepers=[AZURE_SWEEPERS], ttl_hours=TTL_HOURS,
                         dry_run=dry_run, sweeper_kwargs={"conn_id": CONN_ID, "subscription_id": None})
    return op.execute({})


def present(world: AzureWorld, ids: list[str]) -> list[str]:
    return [rid for rid in ids if world.emu.state.get(rid) is not None]


def actions(report: dict) -> dict[str, str]:
    return {item["id"]: item["action"] for item in report["items"]}


@G
def test_the_azure_janitor_removes_old_tagged_leftovers_and_nothing_else_dry_run_first(world):
    emu = world.emu
    made = make_leftovers(world)
    # ARM's behaviour the sweep must live with: a list filtered by tag comes back without the tags
    with world.clients() as az:
        tagged = list(az.resource.resources.list_by_resource_group(
            SMOKE_RG, filter="tagName eq 'purpose' and tagValue eq 'smoke-test'"))
    assert len(tagged) >= 13 and all(r.tags is None for r in tagged)  # 3 leaked smoke tests x 4 + the look-alike
    everything = sorted(emu.state.ids())
    requests = len(emu.log)

    report = janitor(dry_run=True)
    print(json.dumps(report, indent=1))
    assert sorted(emu.state.ids()) == everything, "the dry run deleted something"
    assert [r for r in emu.log[requests:] if r.method in ("DELETE", "PUT", "PATCH", "POST")
            and r.path.startswith("/subscriptions/")] == []  # not one ARM write (a token was all it asked for)
    got = actions(report)
    smoke_old = f"{SMOKE_RG}/smoke-{IMAGE}-2026-1101-200000"
    would = sorted(i for i, a in got.items() if a == "would remove")
    expected_ids = sorted([smoke_old, *[r for r in made["old"] if "/images/" in r],
                           "pkr-Resource-Group-old0000001", "pkr-Resource-Group-notime0001"])
    assert would == expected_ids
    assert got[f"{SMOKE_RG}/smoke-{IMAGE}-2026-1102-200000"].startswith("kept: in use (a bake may still be using it")
    assert got[f"{SMOKE_RG}/smoke-{IMAGE}-2026-1103-200000"].startswith("kept: younger than the TTL")
    assert got["pkr-Resource-Group-empty00001"].startswith("kept: age unknown")
    assert got["pkr-Resource-Group-running001"].startswith("kept: in use (a bake may still be using it")
    pinned = next(i for i in got if i.endswith("/images/rhel9-nginx-2026-1005-200000"))
    assert got[pinned] == "kept: in use (tagged pinned=true)"
    for not_ours in ("pkr-Resource-Group-foreign001", "pkr-Resource-Group-othimg0001", "team-firewall",
                     "legacy-smoke-nsg", "rhel9-nginx-2026-1006-200000", "rhel9-nginx-2026-1003-200000"):
        assert not any(not_ours in i for i in got), f"{not_ours} is not the janitor's to judge: {got}"
    assert report["errors"] == 0 and report["dry_run"] is True

    report = janitor(dry_run=False)
    print(json.dumps(report, indent=1))
    got = actions(report)
    assert sorted(i for i, a in got.items() if a.startswith("removed")) == expected_ids
    assert report["errors"] == 0
    assert present(world, made["old"]) == [], "old leftovers are still there"
    assert present(world, made["keep"]) == made["keep"], "the janitor removed something it must not"
    assert "removed: deleted virtualMachines/smoke-rhel9-nginx-2026-1101-200000-vm" in got[smoke_old]
    # and a second sweep finds nothing more to do
    again = actions(janitor(dry_run=False))
    assert not any(a.startswith(("removed", "would", "failed")) for a in again.values()), again


@G
def test_a_leftover_deleted_by_someone_else_meanwhile_is_reported_already_gone(world):
    """ARM answers the DELETE of a missing image 204 (and the SDK raises nothing): only a 200/202 removed
    something, so the report does not claim a removal that did not happen."""
    from bakery.catalogue import load_catalogue
    from bakery.janitor import azure_sweepers

    spec = load_catalogue()[IMAGE]
    image_id = world.make_managed_image(IMAGE, "2026.1001.200000")
    world.emu.state.get(image_id).created = days_ago().timestamp()
    (sweeper,) = azure_sweepers([spec], world.clients)
    try:
        (found,) = [f for f in sweeper.find() if f.kind == "managed-image"]
        assert found.id.lower() == image_id.lower()
        with world.clients() as az:
            az.compute.images.begin_delete(IMAGES_RG, image_id.rsplit("/", 1)[1]).result()
        assert found.remove() == "already gone"
        assert world.emu.requests("DELETE", r"Compute/images/[^/]+$")[-1].status == 204
        image_id = world.make_managed_image(IMAGE, "2026.1002.200000")
        world.emu.state.get(image_id).created = days_ago().timestamp()
        (found,) = [f for f in sweeper.find() if f.kind == "managed-image"]
        assert found.remove() is None  # removed, for real
        assert world.emu.state.get(image_id) is None
    finally:
        sweeper.close()


@G
def test_the_janitor_dag_sweeps_every_azure_connection_of_the_catalogue(world):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "janitor.py"))
    assert bag.import_errors == {}
    dag = bag.dags["bakery_janitor"]
    assert sorted(dag.task_ids) == ["pool_gc", "sweep", f"sweep_azure_{CONN_ID}"]
    task = dag.get_task(f"sweep_azure_{CONN_ID}")
    assert task.sweepers == ["bakery.operators.janitor:azure_sweepers"]
    assert task.sweeper_kwargs == {"conn_id": CONN_ID, "subscription_id": None}
    schema = dag.params.get_param("ttl_hours").schema
    assert schema["minimum"] >= 1 and "maximum" in schema


@G
def test_an_azure_sweep_without_its_connection_is_skipped_and_a_refused_one_fails(world, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException
    from bakery.operators.janitor import azure_sweepers

    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}")
    with pytest.raises(AirflowSkipException, match=r"nothing swept in Azure for rhel9-nginx: the Airflow connection "
                                                   r"'azure_emu' is not defined"):
        azure_sweepers(CONN_ID)
    conn = world.connection()
    conn["password"] = "not-the-secret"
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    with pytest.raises(RuntimeError, match=r"could not remove 1 leftover.*Azure connection 'azure_emu': the service "
                                           r"principal .* was refused"):
        janitor(dry_run=True)
