"""Channels (issue 9, part 4): the policy (bakery.channels) and the local target's links, record and prune."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bakery.channels import (
    CANDIDATE,
    STABLE,
    SUPERSEDED,
    WITHDRAWN,
    Actor,
    ChannelError,
    VersionState,
    latest_of,
    ordered,
    pinned_by_channels,
    plan_promote,
    plan_rollback,
    stable_of,
)
from bakery.record import BakeRecord
from bakery.targets.local import LocalTarget

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
V1, V2, V3, V4 = "2026.1128.200000", "2026.1129.200000", "2026.1130.200000", "2026.1201.200000"


def state(version, channel=CANDIDATE, hours_ago=48, excluded=None, **kw):
    return VersionState(version, channel, channel in (CANDIDATE, WITHDRAWN) if excluded is None else excluded,
                        NOW - timedelta(hours=hours_ago), **kw)


def apply(states, changes):
    """The states after ``changes`` (what the targets then write)."""
    out = {s.version: s for s in states}
    for c in changes:
        out[c.version] = replace(out[c.version], channel=c.channel, exclude_from_latest=c.exclude_from_latest)
    return ordered(out.values())


def actor(by="alice", run="manual__1", at=NOW):
    return Actor(by, at, run)


# ---- the policy ---------------------------------------------------------------------------------
def test_latest_is_the_highest_version_not_excluded_and_stable_its_own_mark():
    states = [state(V1, STABLE), state(V2), state(V3)]
    assert latest_of(states) == V1 and stable_of(states) == V1
    assert latest_of([state(V1, None), state(V2)]) == V1  # a version from before channels is in latest
    assert latest_of([state(V1)]) is None  # only candidates: nothing in latest (Azure: a VM needs a version)
    assert latest_of([state(V1, STABLE), VersionState(V2, None, usable=False)]) == V1  # Failed: never latest


def test_scheduled_promotion_takes_the_newest_soaked_candidate_above_stable():
    states = [state(V1, STABLE, 96), state(V2, hours_ago=72), state(V3, hours_ago=30), state(V4, hours_ago=2)]
    changes, summary = plan_promote(states, actor("scheduler", "scheduled__x"), soak_hours=24)
    assert [(c.version, c.channel, c.exclude_from_latest) for c in changes] == [(V3, STABLE, False),
                                                                              (V1, SUPERSEDED, False)]
    assert "soaked 24 h" in summary and all(c.by == "scheduler" and c.run_id == "scheduled__x" for c in changes)
    after = apply(states, changes)
    assert latest_of(after) == V3 and stable_of(after) == V3  # V4 (2 h old) waits, excluded


def test_nothing_soaked_or_nothing_waiting_changes_nothing_and_says_why():
    changes, summary = plan_promote([state(V1, STABLE), state(V2, hours_ago=3)], actor(), soak_hours=24)
    assert changes == [] and "no candidate has soaked 24 h yet" in summary and V2 in summary
    changes, summary = plan_promote([state(V1, STABLE)], actor(), soak_hours=24)
    assert changes == [] and "nothing to promote" in summary


def test_manual_promotion_of_a_named_version_ignores_the_soak_but_never_goes_below_stable():
    states = [state(V1), state(V2, STABLE), state(V3, hours_ago=1)]
    changes, _ = plan_promote(states, actor(), soak_hours=24, version=V3)
    assert changes[0].version == V3 and changes[0].channel == STABLE
    with pytest.raises(ChannelError, match=f"below the stable version {V2}.*rollback"):
        plan_promote(states, actor(), soak_hours=24, version=V1)
    with pytest.raises(ChannelError, match="no such published version"):
        plan_promote(states, actor(), soak_hours=24, version=V4)
    with pytest.raises(ChannelError, match="smoke test did not pass"):
        plan_promote([state(V1, smoke_passed=False)], actor(), soak_hours=0, version=V1)


def test_rollback_withdraws_every_newer_version_and_sticks_until_a_new_candidate_is_promoted():
    states = [state(V1, SUPERSEDED, excluded=False), state(V2, STABLE), state(V3, hours_ago=30)]
    changes, _ = plan_rollback(states, actor("bob", "manual__rb"), version=V1)
    after = apply(states, changes)
    assert latest_of(after) == V1 and stable_of(after) == V1
    assert {c.version: c.channel for c in changes} == {V1: STABLE, V2: WITHDRAWN, V3: WITHDRAWN}
    # the scheduled promotion does not bring a withdrawn version back, although V3 has soaked
    again, summary = plan_promote(after, Actor("scheduler", NOW + timedelta(hours=5)), soak_hours=24)
    assert again == [] and "no candidate above the stable version" in summary
    # a version baked after the rollback is the next promotion; latest moves to it
    after.append(state(V4, hours_ago=25))
    promoted, _ = plan_promote(after, actor(), soak_hours=24)
    assert latest_of(apply(after, promoted)) == V4
    with pytest.raises(ChannelError, match="no such published version"):
        plan_rollback(states, actor(), version=V4)


def test_prune_pins_stable_latest_and_waiting_candidates_not_withdrawn_ones():
    states = [state(V1, SUPERSEDED, excluded=False), state(V2, STABLE), state(V3, WITHDRAWN), state(V4)]
    assert set(pinned_by_channels(states)) == {V2, V4}
    assert set(pinned_by_channels([state(V1, None, excluded=False), state(V2)])) == {V1, V2}


# ---- the local target ---------------------------------------------------------------------------
def publish(tmp_path, target, version, *, channel=CANDIDATE, by="scheduler", image="img"):
    disk = tmp_path / "work" / version / "out.qcow2"
    disk.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
    rec = BakeRecord(image=image, version=version, target="local", template_digest="sha256:t",
                     dag_run_id=f"scheduled__{version}", run_type="scheduled", packer_run_uuid="u",
                     artifact_id=str(disk), smoke={"passed": True, "seconds": 1.0, "status": 200, "detail": "ok"},
                     extra={"channel": channel, "triggered_by": by})
    target.publish(rec, print)


def links(target):
    d = target.gallery / "img"
    return tuple(os.readlink(d / n) if (d / n).is_symlink() else None for n in ("stable", "latest"))


@pytest.mark.guarantee("prune-safety")
@pytest.mark.needs_tools("qemu-img")
def test_local_candidates_promote_rollback_links_history_and_prune(tmp_path):
    target = LocalTarget(tmp_path / "gallery")
    publish(tmp_path, target, V1, channel=None)  # from before the image had channels: in latest
    publish(tmp_path, target, V2)
    publish(tmp_path, target, V3)
    assert links(target) == (None, V1)  # candidates do not move latest
    promote = lambda version: target.change_channels(  # noqa: E731
        "img", lambda s: plan_promote(s, actor("alice", "manual__p", datetime.now(UTC)), soak_hours=0, version=version), print)
    assert [c.version for c in promote(V3)] == [V3]
    assert links(target) == (V3, V3)
    target.change_channels("img", lambda s: plan_rollback(s, actor("bob", "manual__rb", datetime.now(UTC)), version=V2), print)
    assert links(target) == (V2, V2)
    publish(tmp_path, target, V4)
    assert links(target) == (V2, V2)
    # prune to 1: keeps stable/latest (V2) and the waiting candidate (the highest, V4); V1 and withdrawn V3 go
    deleted = target.prune("img", 1, protect=set(), dry_run=False, log=print)
    assert sorted(deleted) == [V1, V3] and [v.version for v in target.list_versions("img")] == [V2, V4]
    history = target.channel_history("img")
    assert [(h["version"], h["channel"], h["action"], h["by"]) for h in history][-3:] == [
        (V2, STABLE, "rollback", "bob"), (V3, WITHDRAWN, "rollback", "bob"), (V4, CANDIDATE, "publish", "scheduler")]
    assert any(h["version"] == V3 and h["action"] == "promote" and h["run_id"] == "manual__p" for h in history)
    rows = {r["version"]: r for r in target.describe_versions("img")}
    assert rows[V2]["is_stable"] and rows[V2]["is_latest"] and rows[V4]["channel"] == CANDIDATE
    # a pruned version of the same number published again starts from its own publish, not "withdrawn"
    publish(tmp_path, target, V3)
    assert {s.version: s.channel for s in target.channel_states("img")}[V3] == CANDIDATE
    assert json.loads((target.gallery / "img" / "channels.json").read_text())["versions"].get(V3) is None


@pytest.mark.needs_tools("qemu-img")
def test_local_promotion_check_refuses_a_damaged_disk(tmp_path):
    target = LocalTarget(tmp_path / "gallery")
    publish(tmp_path, target, V1)
    assert target.check_promotable("img", V1, print) == []
    disk = target.gallery / "img" / V1 / "disk.qcow2"
    disk.write_bytes(b"not a qcow2 any more" + disk.read_bytes()[20:])
    problems = target.check_promotable("img", V1, print)
    assert problems and "qemu-img check" in problems[0]
