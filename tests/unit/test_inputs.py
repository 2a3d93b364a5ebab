"""Where a bake's packages come from (bakery.packages.inputs): the rule, the messages, the guest's apt
configuration; and the image's turn (bakery.turns)."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from bakery.packages.inputs import Inputs, InputsError, Mirror, b64, guest_apt_config, resolve_inputs
from bakery.packages.pool import PackagePool, PoolIndex
from bakery.turns import Holder, ImageTurn

NOW = datetime(2026, 12, 2, 2, 0, tzinfo=timezone.utc)
PAST = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)
DEBIAN = Mirror("http://deb.debian.org/debian", ("bookworm", "bookworm-updates"))
SECURITY = Mirror("http://deb.debian.org/debian-security", ("bookworm-security",))
SNAP = Mirror("http://deb.debian.org/debian", ("bookworm",), snapshot="http://snap.example/archive/debian/{timestamp}/")


def resolve(pool: PackagePool, *, run_type: str = "scheduled", version: str = "2026.1120.200000",
            mirrors=(DEBIAN, SECURITY), allow: bool = False, when=PAST) -> Inputs:
    return resolve_inputs(image="img", version=version, run_type=run_type, logical_date=when, now=NOW,
                          mirrors=mirrors, pool=pool, retention_days=90, allow_current_inputs=allow)


def commit(pool: PackagePool, version: str, *, pruned_days_ago: float | None = None) -> None:
    idx = PoolIndex("img", version, NOW.isoformat(), "sha256:" + "b" * 64, {}, "", [])
    pool.commit_index(idx)
    if pruned_days_ago is not None:
        pool.mark_pruned("img", version, NOW - timedelta(days=pruned_days_ago))


def test_scheduled_and_manual_runs_use_the_live_mirrors_now(tmp_path):
    pool = PackagePool(tmp_path)
    for run_type in ("scheduled", "manual"):
        got = resolve(pool, run_type=run_type)
        assert got.kind == "current" and got.label == "current@20261202T020000Z"
        assert got.mirror_urls == (DEBIAN.url, SECURITY.url)


def test_a_version_the_pool_knows_is_rebuilt_from_the_pool_whatever_the_run(tmp_path):
    pool = PackagePool(tmp_path)
    commit(pool, "2026.1120.200000")
    for run_type in ("backfill", "scheduled", "manual"):
        got = resolve(pool, run_type=run_type)
        assert (got.kind, got.ref, got.base_digest) == ("pool", "2026.1120.200000", "sha256:" + "b" * 64)
    # pruned 10 days ago: still inside the 90-day retention
    commit(pool, "2026.1119.200000", pruned_days_ago=10)
    assert resolve(pool, run_type="backfill", version="2026.1119.200000").kind == "pool"


@pytest.mark.guarantee("bad-input")
def test_a_backfill_of_an_unknown_date_fails_with_what_to_do(tmp_path):
    pool = PackagePool(tmp_path)
    with pytest.raises(InputsError) as err:
        resolve(pool, run_type="backfill")
    msg = str(err.value)
    assert "cannot rebuild img 2026.1120.200000 as of 2026-11-20 02:00 UTC" in msg
    assert "the bakery never baked it (no pool index)" in msg
    assert "allow_current_inputs=true" in msg and "snapshot" in msg and "Nothing was built" in msg
    # an expired index says so
    commit(pool, "2026.1120.200000", pruned_days_ago=100)
    with pytest.raises(InputsError, match=r"its pool index expired on 2026-11-22 \(90 days after"):
        resolve(pool, run_type="backfill")


def test_allow_current_inputs_rebuilds_with_todays_packages_and_says_so(tmp_path):
    got = resolve(PackagePool(tmp_path), run_type="backfill", allow=True)
    assert got.kind == "current" and got.label.startswith("current@2026")


def test_a_backfill_uses_the_dated_snapshot_when_every_mirror_has_one(tmp_path):
    pool = PackagePool(tmp_path)
    got = resolve(pool, run_type="backfill", mirrors=(SNAP,))
    assert got.label == "snapshot@20261120T020000Z"
    assert got.mirror_urls == ("http://snap.example/archive/debian/20261120T020000Z",)
    with pytest.raises(InputsError, match="http://deb.debian.org/debian-security"):
        resolve(pool, run_type="backfill", mirrors=(SNAP, SECURITY))  # one mirror has no snapshot


def test_guest_apt_config_points_every_source_at_the_package_server():
    srv = "http://10.0.2.2:4242"
    trusted = Mirror("http://127.0.0.1:9/debian", ("bookworm",), ("main", "contrib"), trusted=True)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    signed = Mirror("http://127.0.0.1:8/debian", ("bookworm",), signed_by=keyring)
    sources, conf = guest_apt_config(Inputs("current", "x"), (DEBIAN, SECURITY, trusted, signed), srv)
    assert sources.splitlines() == [
        "deb http://10.0.2.2:4242/u/0/ bookworm main",
        "deb http://10.0.2.2:4242/u/0/ bookworm-updates main",
        "deb http://10.0.2.2:4242/u/1/ bookworm-security main",
        "deb [trusted=yes] http://10.0.2.2:4242/u/2/ bookworm main contrib",
        f"deb [signed-by={keyring}] http://10.0.2.2:4242/u/3/ bookworm main",
    ]
    assert "Check-Valid-Until" not in conf
    _, snap_conf = guest_apt_config(Inputs("snapshot", "x"), (SNAP,), srv)
    assert 'Acquire::Check-Valid-Until "false";' in snap_conf
    pool_sources, _ = guest_apt_config(Inputs("pool", "1.2.3"), (DEBIAN,), srv)
    assert pool_sources == "deb [trusted=yes] http://10.0.2.2:4242/r/ ./\n"
    assert base64.b64decode(b64(sources)).decode() == sources


def test_inputs_round_trip_through_the_xcom_dict():
    i = Inputs("snapshot", "20261120T020000Z", mirror_urls=("http://a/20261120T020000Z",))
    assert Inputs.from_dict(i.to_dict()) == i and i.to_dict()["label"] == "snapshot@20261120T020000Z"


# ---- the image's turn --------------------------------------------------------------------------------
def test_one_run_holds_an_images_turn_until_it_gives_it_back(tmp_path):
    turn = ImageTurn("img", tmp_path)
    a, b = Holder("bake_img", "run-a"), Holder("bake_img", "run-b")
    active = {"run-a", "run-b"}
    assert turn.take(a, lambda h: h.run_id in active) == (True, None)
    taken, other = turn.take(b, lambda h: h.run_id in active)
    assert not taken and other.run_id == "run-a"
    assert turn.take(a, lambda h: h.run_id in active)[0], "the holder takes its own turn again (a retry)"
    assert not turn.give_back(b), "a run that does not hold the turn cannot give it back"
    assert turn.give_back(a)
    assert turn.take(b, lambda h: h.run_id in active) == (True, None)


def test_a_turn_held_by_a_run_that_ended_is_taken_over(tmp_path):
    turn = ImageTurn("img", tmp_path)
    turn.take(Holder("bake_img", "dead"), lambda h: True)
    taken, replaced = turn.take(Holder("bake_img", "alive"), lambda h: h.run_id != "dead")
    assert taken and replaced.run_id == "dead"
    assert turn.holder().run_id == "alive"
