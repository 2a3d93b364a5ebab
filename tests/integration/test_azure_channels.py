"""Channels on Azure (issue 9, part 4) through the real SDK against the ARM emulator, the history in
Azurite: a candidate is published with ``excludeFromLatest``; promote and rollback move what ARM's
``latest`` gives a VM (the emulator's rule: the highest version not excluded); prune keeps what a
channel points at; every change is recorded (tags, and ``<image>/channels.jsonl`` with ``azure.sbom``)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from bakery import bake
from bakery.catalogue import ChannelsSpec
from bakery.channels import Actor, ChannelError
from bakery.targets.azure import AzureTarget

from tests.azure_emulator.kinds import latest_version
from tests.azure_emulator.world import GALLERY, GALLERY_RG, AzureWorld
from tests.integration.test_azure_sbom import (  # noqa: F401 (fixtures)
    CONN,
    azurite,
    clients_with_blobs,
    container,
    wasb,
    world,
)
from tests.integration.test_azure_target import IMAGE, Log, make_spec, record

V1, V2, V3, V4 = "2026.1128.200000", "2026.1129.200000", "2026.1130.200000", "2026.1201.200000"


def spec_with_channels(world: AzureWorld, container_name: str | None):
    azure = {"sbom": {"conn_id": CONN, "container": container_name}} if container_name else {}
    return dataclasses.replace(make_spec(world, **azure), channels=ChannelsSpec(soak_hours=0))


def arm_latest(world: AzureWorld) -> str | None:
    """What ARM's `latest` gives a VM made from the image definition without a version (the emulator's rule)."""
    definition = world.emu.state.get(f"/subscriptions/{world.subscription_id}/resourceGroups/{GALLERY_RG}/providers/"
                                     f"Microsoft.Compute/galleries/{GALLERY}/images/{IMAGE}")
    v = latest_version(world.emu.arm, definition)
    return v.name if v else None


def profile(world: AzureWorld, version: str) -> dict:
    v = world.emu.state.get(f"/subscriptions/{world.subscription_id}/resourceGroups/{GALLERY_RG}/providers/"
                            f"Microsoft.Compute/galleries/{GALLERY}/images/{IMAGE}/versions/{version}")
    return {**v.properties["publishingProfile"], "tags": dict(v.tags)}


def publish(world, target, version, *, channel="candidate", by="scheduler"):
    rec = record(world, version=version, run_id=f"scheduled__{version}")
    target.publish(rec.with_(extra={"channel": channel, "triggered_by": by}), Log())
    # as if published two days ago: prune spares versions younger than azure.prune_min_age_hours
    world.emu.state.get(target.published(IMAGE, version)["published_id"]).properties["publishingProfile"][
        "publishedDate"] = (datetime.now(UTC) - timedelta(days=2)).isoformat()


def run(action, spec, target, by, **kw):
    log = Log()
    actor = Actor(by, datetime.now(UTC), f"manual__{action}")
    changes = (bake.promote(spec, actor, log, target, **kw) if action == "promote"
               else bake.rollback(spec, kw["version"], actor, log, target))
    return changes, log.text()


@pytest.mark.guarantee("prune-safety")
def test_candidates_promote_rollback_move_arms_latest_and_prune_keeps_channel_targets(world, azurite, container,
                                                                                       wasb):
    spec = spec_with_channels(world, container)
    target = AzureTarget(spec, lambda: clients_with_blobs(world), progress_interval=0.05)
    try:
        publish(world, target, V1, channel=None)  # published before the image had channels
        publish(world, target, V2)
        publish(world, target, V3, by="alice")
        assert profile(world, V3)["excludeFromLatest"] is True and profile(world, V3)["tags"]["channel"] == "candidate"
        assert profile(world, V3)["tags"]["channel_by"] == "alice"
        assert profile(world, V1)["excludeFromLatest"] is False
        assert arm_latest(world) == V1  # candidates do not move latest

        changes, text = run("promote", spec, target, "carol")  # no version: the newest soaked candidate
        assert [c.version for c in changes] == [V3]
        assert "replicated to" in text and "stable -> " + V3 in text
        assert arm_latest(world) == V3 and profile(world, V3)["tags"]["channel"] == "stable"

        changes, text = run("rollback", spec, target, "dave", version=V2)
        assert {c.version: c.channel for c in changes} == {V2: "stable", V3: "withdrawn"}
        assert arm_latest(world) == V2 and profile(world, V3)["excludeFromLatest"] is True
        # the scheduled promotion does not bring V3 back
        changes, text = run("promote", spec, target, "scheduler")
        assert changes == [] and "nothing to promote" in text and arm_latest(world) == V2
        with pytest.raises(ChannelError, match=f"below the stable version {V2}"):
            run("promote", spec, target, "erin", version=V1)

        publish(world, target, V4)
        assert arm_latest(world) == V2
        log = Log()
        deleted = target.prune(IMAGE, 1, protect=set(), dry_run=False, log=log)
        assert deleted == [V1, V3]  # V1: neither stable nor latest any more; V3: withdrawn
        kept = [v.version for v in target.list_versions(IMAGE)]
        assert V2 in kept and V4 in kept and arm_latest(world) == V2
        assert f"keeping {V2}: the stable channel points at it" in log.text()

        history = target.channel_history(IMAGE)
        assert [(h["version"], h["channel"], h["action"], h["by"]) for h in history] == [
            (V2, "candidate", "publish", "scheduler"), (V3, "candidate", "publish", "alice"),
            (V3, "stable", "promote", "carol"), (V2, "stable", "rollback", "dave"),
            (V3, "withdrawn", "rollback", "dave"), (V4, "candidate", "publish", "scheduler")]
        assert all(h["run_id"] and h["at"] for h in history)
        rows = {r["version"]: r for r in target.describe_versions(IMAGE)}
        assert rows[V2]["is_stable"] and rows[V2]["is_latest"] and rows[V4]["channel"] == "candidate"
    finally:
        target.close()


@pytest.fixture
def without_blobs(world):
    """(spec, target) of an image with channels and no azure.sbom block."""
    spec = spec_with_channels(world, None)
    target = AzureTarget(spec, world.clients, progress_interval=0.05)
    yield spec, target
    target.close()


def test_without_a_blob_container_the_history_is_each_versions_last_change(world, without_blobs):
    spec, target = without_blobs
    publish(world, target, V1)
    publish(world, target, V2)
    run("promote", spec, target, "carol", version=V1)
    history = target.channel_history(IMAGE)
    assert [(h["version"], h["channel"], h["by"]) for h in history] == [(V2, "candidate", "scheduler"),
                                                                       (V1, "stable", "carol")]
    assert arm_latest(world) == V1


def test_promotion_checks_the_version_itself_and_refuses_one_past_its_end_of_life(world, without_blobs):
    spec, target = without_blobs
    publish(world, target, V1)
    world.emu.state.get(target.published(IMAGE, V1)["published_id"]).properties["publishingProfile"][
        "endOfLifeDate"] = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    with pytest.raises(ChannelError, match=f"cannot promote {IMAGE} {V1}: past its end of life"):
        run("promote", spec, target, "carol", version=V1)
    assert arm_latest(world) is None  # nothing changed: the only version is still a candidate
