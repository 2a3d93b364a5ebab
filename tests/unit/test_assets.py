"""The image's Asset as plain data (bakery.assets) and the rollout's checks before a canary
(bakery.rollout) against a real local gallery."""

from __future__ import annotations

import json

import pytest
from bakery.assets import (
    EXTRA_KEYS,
    NoImageEvent,
    asset_uri,
    channel_of,
    event_extra,
    newest_event,
)
from bakery.catalogue import get_image
from bakery.record import BakeRecord
from bakery.rollout import RolloutError, roll_out
from bakery.targets.base import SmokeCheck
from bakery.targets.local import LocalTarget

IMAGE = "debian12-nginx"


def record(**changes) -> BakeRecord:
    rec = BakeRecord(image=IMAGE, version="2026.1128.200000", target="local", template_digest="sha256:t",
                     dag_run_id="scheduled__2026-11-28T02:00:00+00:00", packer_run_uuid="u1",
                     published_id=f"/var/gallery/{IMAGE}/2026.1128.200000",
                     packages={"manifest": "/w/packages.json", "digest": "sha256:m", "count": 321})
    return rec.with_(**changes)


def test_the_event_extra_says_what_was_published_where_and_by_which_run():
    assert event_extra(record()) == {
        "image": IMAGE, "version": "2026.1128.200000", "published_id": f"/var/gallery/{IMAGE}/2026.1128.200000",
        "manifest_digest": "sha256:m", "channel": "latest", "dag_run_id": "scheduled__2026-11-28T02:00:00+00:00",
        "target": "local"}
    assert tuple(event_extra(record())) == EXTRA_KEYS
    # a version baked before manifests were captured: no digest, the rest as ever
    assert event_extra(record(packages=None))["manifest_digest"] is None


def test_the_channel_is_the_records_when_publish_set_one_else_latest():
    assert channel_of(record()) == "latest"
    assert channel_of(record(extra={"channel": "candidate"})) == "candidate"
    assert event_extra(record(extra={"channel": "stable", "accelerator": "tcg"}))["channel"] == "stable"


def event(version: str, at: str, image: str = IMAGE) -> dict:
    return {"timestamp": at, "extra": event_extra(record(version=version, image=image)),
            "source_dag_id": "bake_debian12_nginx", "source_run_id": f"run-{version}"}


def test_the_newest_event_wins_and_every_event_is_logged():
    logged: list[str] = []
    events = [event("2026.1129.200000", "2026-11-29T02:40:00+00:00"),
              event("2026.1127.200000", "2026-11-29T02:50:00+00:00"),  # a backfill's, published last
              event("2026.1128.200000", "2026-11-28T02:40:00+00:00")]
    assert newest_event(IMAGE, events, logged.append)["extra"]["version"] == "2026.1127.200000"
    assert len(logged) == 3
    assert logged[0].startswith(f"asset event 1/3 of {asset_uri(IMAGE)}: version 2026.1128.200000 (channel latest")
    assert "published by bake_debian12_nginx run run-2026.1127.200000 at 2026-11-29T02:50:00+00:00" in logged[2]


@pytest.mark.parametrize(("events", "message"), [
    ([], "has no asset event of x-bakery://image/debian12-nginx: it is meant to run when a bake of debian12-nginx"),
    ([event("2026.1128.200000", "2026-11-28T02:40:00+00:00", image="other")], "names image 'other'"),
    ([event("../../etc", "2026-11-28T02:40:00+00:00")], "has no valid version"),
])
def test_no_usable_event_is_a_clear_error(events, message):
    with pytest.raises(NoImageEvent, match=message.replace(".", r"\.").replace("(", r"\(")):
        newest_event(IMAGE, events, lambda m: None)


def published_gallery(tmp_path) -> LocalTarget:
    target = LocalTarget(tmp_path / "gallery")
    disk = tmp_path / "built.qcow2"
    disk.write_bytes(b"a published disk")
    target.publish(record(artifact_id=str(disk), packages=None, smoke={"passed": True, "seconds": 20, "status": 200,
                                                                       "detail": "ok"}), lambda m: None)
    return target


def test_a_version_no_longer_published_is_not_rolled_out(tmp_path):
    target = published_gallery(tmp_path)
    with pytest.raises(RolloutError, match="debian12-nginx 2026.1129.200000 is no longer published on the local target"):
        roll_out(get_image(IMAGE), event("2026.1129.200000", "2026-11-29T02:40:00+00:00"), target, SmokeCheck(),
                 lambda m: None)


def test_a_version_replaced_since_its_event_is_not_rolled_out(tmp_path):
    target = published_gallery(tmp_path)
    meta = target.published(IMAGE, "2026.1128.200000")
    path = tmp_path / "gallery" / IMAGE / "2026.1128.200000" / "metadata.json"
    path.write_text(json.dumps({**meta, "manifest_digest": "sha256:other"}))  # as a replace_existing would
    with pytest.raises(RolloutError, match="was replaced since its asset event: its manifest digest is sha256:other, "
                                           "the event announced sha256:m"):
        roll_out(get_image(IMAGE), event("2026.1128.200000", "2026-11-28T02:40:00+00:00"), target, SmokeCheck(),
                 lambda m: None)


def test_the_canary_refuses_a_version_that_is_not_a_version(tmp_path):
    from bakery.versioning import VersionError

    with pytest.raises(VersionError):
        published_gallery(tmp_path).canary(IMAGE, "../latest", SmokeCheck(), lambda m: None)
