"""GalleryReplicationTrigger against the ARM emulator: the real trigger, the real azure.identity.aio
credential and azure.mgmt.compute.aio client, the connection read by id as in the triggerer.

The version is created as publish creates it (``AzureTarget.begin_publish``: the PUT only), then the
trigger's ``run()`` follows it: one event when it succeeded, failed, or the deadline passed.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from bakery.catalogue import load_catalogue
from bakery.record import BakeRecord
from bakery.targets.azure import AzureTarget
from bakery.triggers.replication import GalleryReplicationTrigger

from tests.azure_emulator.dagrun import CONN_ID, catalogue_entry, emulated_world
from tests.azure_emulator.world import GALLERY, GALLERY_RG, IMAGES_RG

IMAGE, VERSION = "rhel9-nginx", "2026.1126.200001"


@pytest.fixture
def world(monkeypatch):
    with emulated_world() as w:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", w.connection_json())
        yield w


@pytest.fixture
def target(world, tmp_path, monkeypatch):
    import yaml

    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump({"version": 1, "images": {IMAGE: catalogue_entry(world)}}))
    monkeypatch.setenv("BAKERY_CATALOGUE", str(catalogue))
    t = AzureTarget(load_catalogue(catalogue)[IMAGE], world.clients, progress_interval=0.05)
    yield t
    t.close()


def started(world, target) -> BakeRecord:
    rec = BakeRecord(image=IMAGE, version=VERSION, target="azure", template_digest="sha256:" + "a" * 64,
                     artifact_id=world.make_managed_image(IMAGE, VERSION, IMAGES_RG), dag_run_id="manual__r1",
                     packer_run_uuid="u1", smoke={"passed": True, "seconds": 3.0, "detail": "ok"})
    assert target.begin_publish(rec, print) is None  # the PUT is sent; nothing waited for
    return rec


def run(trigger: GalleryReplicationTrigger) -> tuple[list, float]:
    async def collect():
        return [e.payload async for e in trigger.run()]

    t0 = time.monotonic()
    events = asyncio.run(collect())
    return events, time.monotonic() - t0


def trigger(deadline_in: float = 60, poll: float = 0.2) -> GalleryReplicationTrigger:
    return GalleryReplicationTrigger(conn_id=CONN_ID, subscription_id=None, gallery=[GALLERY_RG, GALLERY, IMAGE],
                                     version=VERSION, deadline=time.time() + deadline_in, timeout=deadline_in,
                                     poll_interval=poll)


def test_the_trigger_follows_replication_to_the_end_and_stores_no_secret(world, target):
    world.emu.faults.slow_replication(2.0)
    started(world, target)
    trig = trigger()
    classpath, kwargs = trig.serialize()
    assert classpath == "bakery.triggers.replication.GalleryReplicationTrigger"
    assert world.client_secret not in json.dumps(kwargs) and "password" not in json.dumps(kwargs)
    assert GalleryReplicationTrigger(**kwargs).serialize() == (classpath, kwargs)  # round-trips
    (event,), seconds = run(trig)
    assert event["status"] == "succeeded", event
    assert 2.0 <= seconds < 30
    assert [(r["region"], r["state"], r["progress"]) for r in event["regions"]] == [
        ("East US 2", "Completed", 100), ("West Europe", "Completed", 100)]
    assert target.published(IMAGE, VERSION)["provisioning_state"] == "Succeeded"
    # the aio client read the version with its replication status, authenticated by the emulator's tokens
    reads = world.emu.requests("GET", r"/versions/2026\.1126\.200001$")
    assert len([r for r in reads if r.query.get("$expand") == "ReplicationStatus"]) >= 2
    assert world.emu.count("PUT", r"/versions/") == 1


@pytest.mark.guarantee("arm-faults")
def test_a_failed_replication_is_a_failed_event_with_azures_message(world, target):
    world.emu.faults.fail_lro(method="PUT", path=r"/versions/", code="ReplicationFailed", message="disk copy timed out")
    started(world, target)
    (event,), _ = run(trigger())
    assert event["status"] == "failed"
    assert "ended Failed" in event["message"] and "disk copy timed out" in event["message"], event
    assert world.emu.count("PUT", r"/versions/") == 1


@pytest.mark.guarantee("arm-faults")
def test_past_the_deadline_the_event_says_so_and_azure_goes_on(world, target):
    world.emu.faults.slow_replication(30.0)
    started(world, target)
    (event,), seconds = run(trigger(deadline_in=1.5, poll=0.3))
    assert event["status"] == "deadline" and seconds < 10
    assert "still replicating after 2s (the publish deadline)" in event["message"]
    assert "a retry of this task adopts the version" in event["message"]
    assert {r["state"] for r in event["regions"]} <= {"Replicating", "Completed"} and event["regions"]


def test_a_connection_the_triggerer_cannot_read_is_an_error_event(world, target, monkeypatch):
    monkeypatch.delenv(f"AIRFLOW_CONN_{CONN_ID.upper()}")
    started(world, target)
    (event,), _ = run(trigger())
    assert event["status"] == "error"
    assert f"the Airflow connection {CONN_ID!r} is not defined" in event["message"]
