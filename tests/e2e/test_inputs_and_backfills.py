"""End to end with a real Airflow (``airflow standalone``: scheduler, LocalExecutor, API server), real
Packer + QEMU bakes of debian12-nginx, and a loopback package archive the test controls as "the live
mirror" (tests/pkgmirror: the real bookworm packages nginx needs plus ``bakery-canary``, 1.0 on day 1
and 2.0 from day 2). The test catalogue schedules the image every five minutes, so the scheduler
makes real *scheduled* runs, one after the other (``max_active_runs=1``; a bake takes less than two
periods, so two runs are five minutes apart):

1. nightly S1 (mirror day 1): its manifest has canary 1.0, its inputs are ``current@``;
   the mirror moves; nightly S2: canary 2.0, the publish log and ``bakery diff`` show 1.0 -> 2.0.
   Each publish emitted the image's asset event with its version; the rollout example (unpaused
   after S1, paused again once it ran) ran from S2's (taking S1's too: the newest wins) and booted
   S2's published disk as a canary.
2. prune S1 (a manual run with prune_keep=1: nothing changed, so it only prunes), then one backfill
   with the default settings (10 active runs) over three dates: the period before S1 (no pool:
   ``allow_current_inputs``), S1 (rebuilt from the pool: its manifest equals the pruned S1's exactly,
   though the mirror serves only canary 2.0) and S2 (still in the gallery: reported and skipped).
   The three backfill runs ran at the same time, yet no two builds or smoke tests of the image ever
   overlapped (task-instance times over every run).
3. the following nightly, with the mirror unchanged: build, smoke test and publish skipped, nothing
   published, no asset event, the run succeeded, the decision and its reasons in XCom; its prune
   (keep=2) keeps the backfill's rebuilds (protected, said why).
4. a backfill of a date before any pool (and no snapshot archive): fails in prepare with the message,
   nothing built.

This replaces the earlier two-bake e2e test: the first two nightlies check what it checked
(metadata, latest, work folder removed, no QEMU left).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest
import yaml
from bakery.assets import asset_uri, event_extra
from bakery.packages.manifest import Manifest
from bakery.record import BakeRecord
from bakery.versioning import version_for_run, version_key

from tests.airflow_stack import AirflowStandalone, PostgresServer
from tests.pkgmirror import ClosureError, LoopbackMirror, deb_cache_dir, debian_closure, make_deb

REPO = Path(__file__).resolve().parents[2]
IMAGE, DAG = "debian12-nginx", "bake_debian12_nginx"
ROLLOUT = "rollout_debian12_nginx"
BAKE_TASKS = ("build", "smoke_test")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.needs_tools("packer", "qemu-system-x86_64"),
]


class Story:
    """What the phases found, for the phases after them (each phase needs the one before)."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.data: dict = {}

    def need(self, phase: str) -> None:
        if phase not in self.done:
            pytest.fail(f"phase {phase!r} did not complete; this phase builds on it")


def iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def world(tmp_path_factory, base_image):
    root = tmp_path_factory.mktemp("inputs-e2e")
    try:
        closure = debian_closure(["nginx"], deb_cache_dir())
    except ClosureError as exc:
        pytest.fail(f"the nginx closure could not be fetched (network to deb.debian.org needed): {exc}")
    canary = {v: make_deb("bakery-canary", v, root / "debs") for v in ("1.0", "2.0")}
    home = root / "bakery"
    home.mkdir()
    (home / "base").symlink_to(base_image.parent)  # reuse the cached base image
    with LoopbackMirror(root / "mirror") as mirror:
        mirror.publish([*closure, canary["1.0"]], when=datetime.now(timezone.utc) - timedelta(hours=1))
        entry = yaml.safe_load((REPO / "include" / "catalogue.yaml").read_text())["images"][IMAGE]
        entry.update({
            "schedule": "*/5 * * * *",  # one scheduled run after the other, as nightlies would be
            "variables": {"packages": "nginx bakery-canary"},
            "packages": {"mirrors": [{"url": mirror.url, "suites": ["bookworm"], "components": ["main"],
                                      "trusted": True}], "retention_days": 90},
            "prune": {"keep": 2, "dry_run": False},
            "backfill": {"protect_days": 7},
            "retries": 0,
        })
        catalogue = root / "catalogue.yaml"
        catalogue.write_text(yaml.safe_dump({"version": 1, "images": {IMAGE: entry}}))
        env = {"BAKERY_HOME": str(home), "BAKERY_CATALOGUE": str(catalogue), "TMPDIR": str(root)}
        with PostgresServer() as pg, AirflowStandalone(
                root / "airflow", env={**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url}) as af:
            af.request("POST", "/api/v2/pools", {"name": "image_bakery_packer", "slots": 2})  # as setup.sh does
            af.wait_dag(DAG)
            af.wait_dag(ROLLOUT)
            yield {"af": af, "mirror": mirror, "home": home, "closure": closure, "canary": canary, "env": env,
                   "story": Story()}
        left = [p.pid for p in psutil.process_iter(["name", "cmdline"])
                if "qemu-system" in (p.info["name"] or "") and str(home) in " ".join(p.info["cmdline"] or [])]
        assert not left, f"QEMU processes of the test outlived the Airflow stack: {left}"


def gallery(world) -> Path:
    return world["home"] / "gallery" / IMAGE


def published(world) -> list[str]:
    g = gallery(world)
    return sorted((p.name for p in g.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")),
                  key=version_key) if g.is_dir() else []


def meta(world, version: str) -> dict:
    return json.loads((gallery(world) / version / "metadata.json").read_text())


def manifest(world, version: str) -> Manifest:
    return Manifest.load(gallery(world) / version / "packages.json")


def canary_of(m: Manifest) -> str:
    return {p.name: p.version for p in m.packages}["bakery-canary"]


def tis(af, run_id: str) -> dict[str, dict]:
    return {t["task_id"]: t for t in af.task_instances(DAG, run_id)}


def log_of(af, run_id: str, task: str) -> str:
    """The task's log of its latest try (a backfill that reprocesses a run starts new tries)."""
    return af.task_log(DAG, run_id, task, try_number=max(1, tis(af, run_id)[task]["try_number"]))


def xcom(af, run_id: str, task: str):
    return af.xcom(DAG, run_id, task)


def scheduled_runs(af) -> list[dict]:
    return [r for r in af.runs(DAG) if r["run_type"] == "scheduled"]


def next_scheduled(af, after: datetime | None, what: str) -> dict:
    """The first scheduled run with a logical date after ``after``, waited for until it finished."""
    def find():
        for r in scheduled_runs(af):
            if after is None or parse(r["logical_date"]) > after:
                return r
        return None
    run = af.wait_for(what, find, timeout=600)
    return af.wait_run(DAG, run["dag_run_id"], timeout=1800)


def bake_windows(af, run_ids) -> list[tuple[datetime, datetime, str]]:
    out = []
    for run_id in run_ids:
        for task_id, ti in tis(af, run_id).items():
            if task_id in BAKE_TASKS and ti["state"] == "success" and ti["start_date"] and ti["end_date"]:
                out.append((parse(ti["start_date"]), parse(ti["end_date"]), f"{run_id}:{task_id}"))
    return sorted(out)


def turn_windows(af, run_ids) -> list[tuple[datetime, datetime, str]]:
    """When each run held the image's turn: from wait_turn's end to give_back_turn's start."""
    out = []
    for run_id in run_ids:
        t = tis(af, run_id)
        took, gave = t.get("wait_turn", {}), t.get("give_back_turn", {})
        if took.get("state") == "success" and gave.get("start_date") and took.get("end_date"):
            out.append((parse(took["end_date"]), parse(gave["start_date"]), f"{run_id}:turn"))
    return sorted(out)


def assert_never_overlapping(windows) -> None:
    for (s1, e1, a), (s2, e2, b) in zip(windows, windows[1:]):
        assert e1 <= s2, f"{a} ({s1:%T}-{e1:%T}) overlapped {b} ({s2:%T}-{e2:%T})"


def bakery_cli(world, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bakery.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **world["env"]}, timeout=120)


def test_nightlies_record_their_packages_and_the_diff(world):
    af, mirror, story = world["af"], world["mirror"], world["story"]
    af.unpause(DAG)
    # S1 on day 1; the mirror moves to day 2 as soon as S1's build is done (S2 cannot start before
    # S1 ended: one active run)
    s1 = af.wait_for("the first scheduled run", lambda: (scheduled_runs(af) or [None])[0], timeout=300)
    af.wait_for("S1's build", lambda: tis(af, s1["dag_run_id"]).get("build", {}).get("state") in ("success", "failed",
                                                                                                    "upstream_failed"),
                timeout=1800)
    mirror.publish([*world["closure"], world["canary"]["2.0"]], when=datetime.now(timezone.utc))
    s1 = af.wait_run(DAG, s1["dag_run_id"])
    assert s1["state"] == "success", af.tail()
    af.unpause(ROLLOUT)  # S1 published already: the rollout example runs from S2's event
    v1 = version_for_run(run_type="scheduled", logical_date=parse(s1["logical_date"]), run_after=None)
    assert published(world) == [v1]
    m1, meta1 = manifest(world, v1), meta(world, v1)
    assert canary_of(m1) == "1.0" and "nginx" in m1.names()
    assert meta1["inputs"]["kind"] == "current" and meta1["run_type"] == "scheduled" and meta1["rebuilt_at"] is None
    assert meta1["manifest_digest"] == m1.digest and meta1["smoke_test"]["passed"] is True
    assert (gallery(world) / v1 / "sbom.cdx.json").is_file()
    assert os.readlink(gallery(world) / "latest") == v1
    assert not (world["home"] / "work" / IMAGE / v1).exists(), "the work folder was not cleaned after publish"

    s2 = next_scheduled(af, parse(s1["logical_date"]), "the second scheduled run")
    assert s2["state"] == "success", af.tail()
    v2 = version_for_run(run_type="scheduled", logical_date=parse(s2["logical_date"]), run_after=None)
    assert published(world) == [v1, v2] and os.readlink(gallery(world) / "latest") == v2
    assert canary_of(manifest(world, v2)) == "2.0"
    publish_log = log_of(af, s2["dag_run_id"], "publish")
    assert f"packages {v1} -> {v2}" in publish_log and "^ bakery-canary 1.0 -> 2.0 (all)" in publish_log
    cli = bakery_cli(world, "diff", IMAGE, v1, v2)
    assert cli.returncode == 0 and "bakery-canary 1.0 -> 2.0" in cli.stdout, cli.stdout + cli.stderr
    decision2 = xcom(af, s2["dag_run_id"], "check_changes")
    assert decision2["build"] is True and any("bakery-canary 1.0 -> 2.0" in r for r in decision2["reasons"])

    # each publish emitted the image's asset event with its version; the rollout example (paused while
    # S1 published) ran from S2's: its first run took both events, read v2, the newest, and booted v2's
    # published disk as a canary
    t0 = time.monotonic()
    event2, rollout = af.run_from_event(asset_uri(IMAGE), s2["dag_run_id"], ROLLOUT, timeout=900)
    print(f"the rollout example's canary ended {time.monotonic() - t0:.0f}s after S2")
    af.unpause(ROLLOUT, paused=True)  # no more canary boots while the backfill bakes
    assert event2["extra"]["version"] == v2 and event2["extra"]["published_id"] == str(gallery(world) / v2)
    (event1,) = af.asset_events(asset_uri(IMAGE), source_run_id=s1["dag_run_id"])
    assert event1["extra"] == event_extra(BakeRecord.from_dict(xcom(af, s1["dag_run_id"], "publish")))
    assert event1["extra"]["version"] == v1
    assert [(r["dag_id"], r["triggering"]) for r in event1["created_dagruns"]] == [(ROLLOUT, False)]  # consumed only
    log = af.task_log(ROLLOUT, rollout["dag_run_id"], "canary")
    assert rollout["state"] == "success" and rollout["run_type"] == "asset_triggered", log[-4000:]
    assert f"asset event 1/2 of {asset_uri(IMAGE)}: version {v1} (channel latest, target local)" in log
    assert f"asset event 2/2 of {asset_uri(IMAGE)}: version {v2} (channel latest, target local)" in log
    assert f"booting {gallery(world) / v2 / 'disk.qcow2'} read-only (-snapshot)" in log
    canary = af.xcom(ROLLOUT, rollout["dag_run_id"], "canary")
    assert canary["version"] == v2 and canary["canary"]["passed"] is True, canary
    assert f"canary of {IMAGE} {v2} passed: HTTP 200" in log

    story.data.update(s1=s1, s2=s2, v1=v1, v2=v2, m1=m1, s2_windows=bake_windows(af, [s1["dag_run_id"], s2["dag_run_id"]]))
    story.done.add("nightlies")


@pytest.mark.guarantee("concurrent-runs")
def test_a_backfill_rebuilds_a_pruned_date_exactly_and_never_runs_two_bakes_at_once(world):
    af, story = world["af"], world["story"]
    story.need("nightlies")
    s1, s2, v1, v2, m1 = (story.data[k] for k in ("s1", "s2", "v1", "v2", "m1"))
    # prune S1: a manual run (nothing changed, so it only prunes) keeping one version
    pruner = af.trigger(DAG, conf={"prune_keep": 1})
    assert af.wait_run(DAG, pruner["dag_run_id"])["state"] == "success"
    assert published(world) == [v2]
    assert "deleted " + v1 in log_of(af, pruner["dag_run_id"], "prune")

    t1, t2 = parse(s1["logical_date"]), parse(s2["logical_date"])
    dates = [t1 - timedelta(minutes=5), t1, t2]
    assert t2 - t1 == timedelta(minutes=5), f"expected consecutive scheduled periods, got {t1} and {t2}"
    backfill = af.backfill(DAG, iso(dates[0]), iso(dates[-1]), reprocess_behavior="completed",
                           dag_run_conf={"allow_current_inputs": True})
    assert backfill["max_active_runs"] == 10  # the default: all three runs are let start at once
    # and two manual triggers on top (nothing changed for them: they take the turn, check, prune)
    manual = [af.trigger(DAG)["dag_run_id"] for _ in range(2)]

    def backfill_runs():
        runs = [r for r in af.runs(DAG) if r["run_type"] == "backfill"]
        return runs if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs) else None
    runs = af.wait_for("the three backfill runs", backfill_runs, timeout=3600, interval=10)
    assert [r["state"] for r in runs] == ["success"] * 3, af.tail()

    v0 = version_for_run(run_type="backfill", logical_date=dates[0], run_after=None)
    assert published(world) == [v0, v1, v2]
    rebuilt = meta(world, v1)
    assert rebuilt["inputs"]["label"] == f"pool@{v1}" and rebuilt["run_type"] == "backfill" and rebuilt["rebuilt_at"]
    assert manifest(world, v1) == m1, "the rebuild from the pool differs from the pruned version's manifest"
    assert canary_of(manifest(world, v1)) == "1.0"  # though the mirror serves only 2.0 now
    build_log = log_of(af, next(r for r in runs if parse(r["logical_date"]) == t1)["dag_run_id"], "build")
    assert "exact rebuild: all" in build_log and f"packages of {v1}'s pool index installed as recorded" in build_log
    assert meta(world, v0)["inputs"]["kind"] == "current" and canary_of(manifest(world, v0)) == "2.0"
    s2_again = next(r for r in runs if parse(r["logical_date"]) == t2)
    decision = xcom(af, s2_again["dag_run_id"], "check_changes")
    assert decision["build"] is False and "already in the gallery" in decision["reasons"][0]
    assert meta(world, v2)["run_type"] == "scheduled", "the existing version was replaced"

    # the runs were active at the same time, yet their bakes took turns
    starts = sorted(parse(r["start_date"]) for r in runs)
    ends = sorted(parse(r["end_date"]) for r in runs)
    assert starts[1] < ends[0], "the backfill runs did not run at the same time: the test proves nothing"
    for run_id in manual:
        assert af.wait_run(DAG, run_id)["state"] == "success"
    all_runs = [r["dag_run_id"] for r in af.runs(DAG)]
    windows = sorted(story.data["s2_windows"] + bake_windows(af, all_runs))
    assert len([w for w in windows if w[2].endswith(":build")]) >= 4
    assert_never_overlapping(sorted(set(windows)))
    turns = turn_windows(af, all_runs)  # scheduled, manual and backfill runs held the turn one after the other
    assert {w[2].rsplit(":", 1)[0] for w in turns} >= {*manual, *(r["dag_run_id"] for r in runs)}
    assert_never_overlapping(turns)
    story.data.update(v0=v0, backfill_end=max(ends))
    story.done.add("backfill")


@pytest.mark.guarantee("asset-event-only-when-published")
def test_the_following_nightly_skips_unchanged_and_keeps_the_backfills_rebuilds(world):
    af, story = world["af"], world["story"]
    story.need("backfill")
    v0, v1, v2 = (story.data[k] for k in ("v0", "v1", "v2"))

    def following():
        for r in scheduled_runs(af):
            if r["state"] in ("success", "failed") and r["start_date"] and parse(r["start_date"]) > story.data["backfill_end"]:
                return r
        return None
    run = af.wait_for("a nightly after the backfill", following, timeout=900)
    assert run["state"] == "success"
    states = {t: ti["state"] for t, ti in tis(af, run["dag_run_id"]).items()}
    assert {states[t] for t in ("validate", "build", "smoke_test", "publish")} == {"skipped"}, states
    assert states["check_changes"] == states["prune"] == states["give_back_turn"] == "success"
    assert af.asset_events(asset_uri(IMAGE), source_run_id=run["dag_run_id"]) == []  # nothing published, no event
    decision = xcom(af, run["dag_run_id"], "check_changes")
    assert decision["build"] is False and decision["compared_with"] == v2
    assert "nothing changed since" in decision["reasons"][0]
    prune_log = log_of(af, run["dag_run_id"], "prune")
    assert published(world) == [v0, v1, v2], prune_log[-2000:]
    assert f"keeping {v0} (rebuilt by a backfill at" in prune_log


@pytest.mark.guarantee("bad-input")
def test_a_backfill_of_a_date_the_bakery_cannot_rebuild_fails_before_any_build(world):
    af, story = world["af"], world["story"]
    story.need("nightlies")
    day = parse(story.data["s1"]["logical_date"]) - timedelta(minutes=30)
    before = published(world)
    af.backfill(DAG, iso(day), iso(day))
    version = version_for_run(run_type="backfill", logical_date=day, run_after=None)

    def done():
        runs = [r for r in af.runs(DAG) if r["run_type"] == "backfill" and parse(r["logical_date"]) == day]
        return runs[0] if runs and runs[0]["state"] in ("success", "failed") else None
    run = af.wait_for("the backfill of a date before any pool", done, timeout=600)
    assert run["state"] == "failed"
    states = {t: ti["state"] for t, ti in tis(af, run["dag_run_id"]).items()}
    assert states["prepare"] == "failed" and states["build"] in ("upstream_failed", None), states
    log = log_of(af, run["dag_run_id"], "prepare")
    assert f"cannot rebuild {IMAGE} {version} as of {day:%Y-%m-%d %H:%M} UTC" in log
    assert "Nothing was built" in log and "allow_current_inputs=true" in log
    assert published(world) == before
