"""Issue 9, part 5: on Azure, the replication is waited for in the triggerer, not in a worker.

A real Airflow (``airflow standalone``: scheduler, triggerer, API server, LocalExecutor, on a private
PostgreSQL) runs the real Azure DAG against the ARM emulator with the fake ``packer`` (as in
test_bake_azure.py). The emulator replicates slowly. ``publish`` sends the version's PUT and ends;
``wait_replication`` starts in the triggerer (``start_from_trigger``: the triggerer renders the version
from publish's XCom): while Azure replicates, its task instance is ``deferred`` (REST API) and no worker
process has run it at all: LocalExecutor's workers name the task instance they run in their process
title (``airflow worker -- LocalExecutor: <ti id>``, read with psutil); the same probe sees publish's
worker, and the wait's once the replication is over (``execute_complete``), so it can see one.
Then a replication that fails and one past the deadline each end the wait with a clear error, one PUT.

The wait that resumed emits the image's asset event, the published version in its extra (set in
``execute_complete``), and the rollout example (``rollout_<image>``, unpaused while the wait waits)
runs from it and reads that version; the waits that fail emit no event.
"""

from __future__ import annotations

import re
import time

import pytest
import yaml
from bakery.assets import asset_uri, event_extra
from bakery.record import BakeRecord

from tests.airflow_stack import AirflowStandalone, PostgresServer, WorkerProbe
from tests.azure_emulator.dagrun import DAG_ID, IMAGE, Bake, emulated_world

pytestmark = pytest.mark.needs_tools("packer")
ROLLOUT = f"rollout_{IMAGE.replace('-', '_')}"
G_EVENT = pytest.mark.guarantee("asset-event-only-when-published")

REPLICATION_TIMEOUT_S = 60
WAIT = "wait_replication"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("deferred")
    with emulated_world() as world:
        bake = Bake(world, root / "run")
        catalogue = yaml.safe_load(bake.catalogue.read_text())
        entry = catalogue["images"][IMAGE]
        entry["retries"] = 0  # each scenario's end state is that of its one try
        entry["azure"]["replication"] = {"timeout_minutes": REPLICATION_TIMEOUT_S / 60, "poll_seconds": 2}
        bake.catalogue.write_text(yaml.safe_dump(catalogue))
        env = {k: v for k, v in bake.env().items() if k.startswith(("BAKERY_", "AIRFLOW_CONN_", "PATH", "CHECKPOINT"))}
        with PostgresServer() as pg, AirflowStandalone(
                root / "airflow", env={**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url}) as af:
            af.request("POST", "/api/v2/pools", {"name": "image_bakery_packer", "slots": 2})
            af.wait_dag(DAG_ID)
            af.wait_dag(ROLLOUT)  # paused until the first test's publish waits (no rollout of the scheduled run)
            af.unpause(DAG_ID)
            probe = WorkerProbe()
            probe.start()
            yield {"af": af, "world": world, "probe": probe}
            probe.stop.set()


def task_ti(af: AirflowStandalone, run_id: str, task_id: str = WAIT) -> dict:
    return next(t for t in af.task_instances(DAG_ID, run_id) if t["task_id"] == task_id)


def bake(stack, logical_date: str) -> tuple[str, dict]:
    af = stack["af"]
    run_id = af.trigger(DAG_ID, logical_date=logical_date)["dag_run_id"]
    deferred_from = None
    give_up = time.monotonic() + 900
    while time.monotonic() < give_up:  # until the wait ends
        ti = task_ti(af, run_id)
        if ti["state"] == "deferred" and deferred_from is None:
            deferred_from = time.monotonic()
        if ti["state"] in ("success", "failed", "upstream_failed"):
            break
        if af.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"] in ("success", "failed") and ti["state"] is None:
            break
        time.sleep(0.5)
    af.wait_run(DAG_ID, run_id, timeout=300)
    return run_id, {"ti": task_ti(af, run_id), "deferred_from": deferred_from}


def version_puts(world, version: str = "[^/]+") -> list:
    """The gallery image version PUTs ARM answered (of one version; unpausing the DAG also starts its
    scheduled run, which publishes a version of its own)."""
    return [r for r in world.emu.requests("PUT", rf"/galleries/[^/]+/images/[^/]+/versions/{version}$") if not r.fault]


@G_EVENT
def test_the_replication_wait_starts_in_the_triggerer_and_holds_no_worker(stack):
    af, world, probe = stack["af"], stack["world"], stack["probe"]
    world.emu.faults.clear()
    world.emu.faults.slow_replication(45.0)
    run_id = af.trigger(DAG_ID, logical_date="2026-11-26T02:00:00+00:00")["dag_run_id"]
    ti = af.wait_for("wait_replication deferred", lambda: (t := task_ti(af, run_id))["state"] == "deferred" and t,
                     timeout=900, interval=0.5)
    deferred_at = time.monotonic()
    # this run holds the image's turn: the scheduled run published before it or publishes after it
    af.unpause(ROLLOUT)
    observed = []
    while (state := task_ti(af, run_id)["state"]) == "deferred":  # the whole replication
        observed.append(time.monotonic())
        time.sleep(0.5)
    resumed_at = observed[-1]
    run = af.wait_run(DAG_ID, run_id, timeout=300)
    assert run["state"] == "success", af.task_log(DAG_ID, run_id, WAIT)
    assert state in ("scheduled", "queued", "running", "success")
    assert resumed_at - deferred_at >= 30, "the replication (45 s) was waited for while deferred"
    # no worker ever ran the wait until the replication was over: it started in the triggerer; the probe
    # saw publish's worker (the PUT), and the wait's once it resumed (execute_complete)
    assert probe.held(ti["id"], 0, resumed_at - 1) == []
    assert probe.held(ti["id"], resumed_at - 1)
    publish = task_ti(af, run_id, "publish")
    assert probe.held(publish["id"]) and publish["state"] == "success"
    log = af.task_log(DAG_ID, run_id, "publish")
    assert "wait_replication follows its replication in the triggerer" in log, log[-3000:]
    log = af.task_log(DAG_ID, run_id, WAIT)
    assert "waiting in the triggerer for" in log and "2026.1126.200001" in log, log[-3000:]
    assert "publish: West Europe: Completed 100%" in log
    assert "published after" in log
    (put,) = version_puts(world, r"2026\.1126\.200001")  # this run's version: one PUT
    assert world.emu.get(put.path)["properties"]["provisioningState"] == "Succeeded"
    assert task_ti(af, run_id)["try_number"] == 1
    from urllib.parse import quote

    record = af.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{WAIT}/xcomEntries/"
                    "return_value?deserialize=true")["value"]
    assert record["published_id"] == world.emu.get(put.path)["id"]

    # the publish that resumed from the deferral emitted the image's asset event, with its version ...
    t0 = time.monotonic()
    event, rollout = af.run_from_event(asset_uri(IMAGE), run_id, ROLLOUT)
    print(f"the rollout example ran from the asset event: {time.monotonic() - t0:.1f}s after the bake")
    published = BakeRecord.from_dict(af.xcom(DAG_ID, run_id, WAIT))
    assert event["extra"] == event_extra(published)
    assert event["extra"]["version"] == "2026.1126.200001" and event["extra"]["channel"] == "latest"
    assert event["extra"]["published_id"].lower() == world.emu.get(put.path)["id"].lower()
    assert event["source_task_id"] == WAIT
    # ... and the rollout example ran from it and read that version (Azure: no boot)
    log = af.task_log(ROLLOUT, rollout["dag_run_id"], "canary")
    assert rollout["state"] == "success" and rollout["run_type"] == "asset_triggered", log[-3000:]
    assert af.xcom(ROLLOUT, rollout["dag_run_id"], "canary")["version"] == "2026.1126.200001"
    # the newest of the events it consumed (the first run takes all since the DAG was parsed: the
    # scheduled run's too, when that one published first)
    newest = rf"asset event (\d+)/\1 of x-bakery://image/rhel9-nginx: version 2026\.1126\.200001 \(channel latest, " \
             rf"target azure\) published by {DAG_ID} run {re.escape(run_id)} at "
    assert re.search(newest, log), log[-3000:]
    assert "rhel9-nginx 2026.1126.200001 is published on the azure target" in log
    assert "no canary boot on the azure target" in log


@pytest.mark.guarantee("arm-faults")
@G_EVENT
def test_a_failed_replication_fails_the_wait_clearly_with_one_put(stack):
    af, world = stack["af"], stack["world"]
    world.emu.faults.clear()
    world.emu.faults.slow_replication(5.0)
    world.emu.faults.fail_lro(method="PUT", path=r"/versions/", code="ReplicationFailed",
                              message="copying the OS disk to West Europe timed out")
    before = len(version_puts(world))
    run_id, out = bake(stack, "2026-11-27T02:00:00+00:00")
    assert out["ti"]["state"] == "failed" and out["deferred_from"] is not None
    log = af.task_log(DAG_ID, run_id, WAIT)
    assert "ended Failed; replication: " in log and "copying the OS disk to West Europe timed out" in log, log[-3000:]
    assert len(version_puts(world)) == before + 1
    assert af.asset_events(asset_uri(IMAGE), source_run_id=run_id) == []


@pytest.mark.guarantee("arm-faults")
@G_EVENT
def test_replication_past_the_deadline_fails_the_wait_clearly_with_one_put(stack):
    af, world = stack["af"], stack["world"]
    world.emu.faults.clear()
    world.emu.faults.slow_replication(600.0)
    before = len(version_puts(world))
    t0 = time.monotonic()
    run_id, out = bake(stack, "2026-11-28T02:00:00+00:00")
    assert out["ti"]["state"] == "failed" and out["deferred_from"] is not None
    assert time.monotonic() - out["deferred_from"] < REPLICATION_TIMEOUT_S + 120 and time.monotonic() - t0 < 900
    log = af.task_log(DAG_ID, run_id, WAIT)
    assert f"is still replicating after {REPLICATION_TIMEOUT_S}s (the publish deadline)" in log, log[-3000:]
    assert "a retry of this task adopts the version" in log
    assert len(version_puts(world)) == before + 1
    assert af.asset_events(asset_uri(IMAGE), source_run_id=run_id) == []
