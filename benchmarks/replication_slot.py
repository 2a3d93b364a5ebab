"""Worker-slot seconds that publish holds while Azure replicates a gallery image version.

The ARM emulator (tests/azure_emulator) replicates one version for 600 emulated seconds (10 minutes)
on a clock ``scale`` times faster than real time (default 20: 30 real seconds; ``scale 1`` waits the
real 10 minutes). Two figures:

* **before** (the wait in the worker, as the publish task did it before issue 9): the Azure target's
  synchronous ``publish`` (PUT, then reading the replication status until it is done), which the
  operator used to call inside ``execute``; it is timed in this process. A worker slot is held for
  all of it.
* **after**: the real DAG in a real Airflow (``airflow standalone`` with a triggerer, LocalExecutor,
  private PostgreSQL; the fake packer builds at the emulator): ``publish`` sends the PUT in a worker
  and ends; ``wait_replication`` starts in the triggerer and resumes in a worker once the replication is
  over. The slot seconds are measured, not computed: every 0.1 s psutil reads the workers' process
  titles (``airflow worker -- LocalExecutor: <task instance id>``) and counts the sweeps in which one
  runs either task instance (task process start and end included); each such sweep counts until the
  next sweep started.
* **floor**, in the same Airflow with the same probe: the same two-task shape doing nothing (a no-op
  task, then a DateTimeSensorAsync started from the triggerer on a moment already past).

Both figures are real seconds under the sped-up clock. The "before" figure scales with the
replication time (at real speed it is the 600 s plus the same overhead); the "after" one does not (no
waiting happens in a worker), which the script shows by also printing how long publish was deferred.

    python benchmarks/replication_slot.py [scale] [repeats]

The bake and the floor each run ``repeats`` times (default 3) in the same Airflow; the goal (under 5 s)
is judged on the worst bake, and the median is printed beside it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

REPLICATION_S = 600.0  # emulated seconds
SAMPLE_S = 0.1
FLOOR_DAG = "bench_floor_deferral"
# the floor: the least this Airflow can hold a worker for with the same shape as publish + wait_replication:
# a task that does nothing, then one that starts in the triggerer (start_from_trigger) on a trigger that
# fires at once and resumes in a worker (execute_complete) to do nothing
FLOOR_DAG_FILE = f"""
from datetime import UTC, datetime

from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.sdk import DAG, BaseOperator


class Nothing(BaseOperator):
    def execute(self, context):
        return None


with DAG("{FLOOR_DAG}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False):
    Nothing(task_id="put") >> DateTimeSensorAsync(task_id="wait", target_time="2026-01-01T00:00:00+00:00",
                                                   start_from_trigger=True)
"""


def before(world, scale: float) -> float:
    """Seconds the old in-worker publish took (the slot it held)."""
    from bakery.catalogue import load_catalogue
    from bakery.record import BakeRecord
    from bakery.targets.azure import AzureTarget

    from tests.azure_emulator.dagrun import IMAGE, catalogue_entry
    from tests.azure_emulator.world import IMAGES_RG

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalogue.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "images": {IMAGE: catalogue_entry(world)}}))
        spec = load_catalogue(path)[IMAGE]
    version = "2026.1101.200000"
    rec = BakeRecord(image=IMAGE, version=version, target="azure", template_digest="sha256:" + "0" * 64,
                     artifact_id=world.make_managed_image(IMAGE, version, IMAGES_RG), dag_run_id="bench-before",
                     packer_run_uuid="bench", smoke={"passed": True, "seconds": 1.0, "detail": "ok"})
    # the old operator's target: progress read every 5 s (emulated), 4 h deadline
    target = AzureTarget(spec, world.clients, progress_interval=5.0 / scale, publish_timeout=4 * 3600)
    try:
        t0 = time.monotonic()
        target.publish(rec, lambda _line: None)
        return time.monotonic() - t0
    finally:
        target.close()


def dags_folder(root: Path) -> Path:
    """The repo's DAG files (symlinks) plus the floor's DAG."""
    folder = root / "dags"
    folder.mkdir(parents=True)
    for f in (REPO / "dags").glob("*.py"):
        (folder / f.name).symlink_to(f)
    (folder / "bench_floor.py").write_text(FLOOR_DAG_FILE)
    return folder


def floor(af, probe) -> float:
    """Worker-slot seconds the floor's two tasks held (the same probe, the same Airflow)."""
    run_id = af.trigger(FLOOR_DAG)["dag_run_id"]
    af.wait_run(FLOOR_DAG, run_id, timeout=300)
    tis = af.task_instances(FLOOR_DAG, run_id)
    if {t["state"] for t in tis} != {"success"}:
        raise SystemExit(f"the floor's tasks ended {[(t['task_id'], t['state']) for t in tis]}")
    return sum(probe.held_seconds(t["id"]) for t in tis)


def one_bake(af, probe, day: int) -> dict[str, float]:
    """One bake's publish + wait_replication: slot seconds held by each, seconds deferred, and a trivial
    task of the same run (give_back_turn) for reference."""
    from tests.azure_emulator.dagrun import DAG_ID

    run_id = af.trigger(DAG_ID, logical_date=f"2026-11-{day:02d}T02:00:00+00:00")["dag_run_id"]
    deferred: list[float] = []
    while True:
        ti = next(t for t in af.task_instances(DAG_ID, run_id) if t["task_id"] == "wait_replication")
        if ti["state"] == "deferred":
            deferred.append(time.monotonic())
        if ti["state"] in ("success", "failed", "upstream_failed"):
            break
        time.sleep(0.5)
    af.wait_run(DAG_ID, run_id, timeout=600)
    if ti["state"] != "success":
        raise SystemExit(f"wait_replication ended {ti['state']}:\n{af.task_log(DAG_ID, run_id, 'wait_replication')[-4000:]}")
    tis = {t["task_id"]: t for t in af.task_instances(DAG_ID, run_id)}
    return {"publish": probe.held_seconds(tis["publish"]["id"]), "wait": probe.held_seconds(ti["id"]),
            "deferred": (deferred[-1] - deferred[0]) if deferred else 0.0,
            "trivial": probe.held_seconds(tis["give_back_turn"]["id"])}


def after(world, scale: float, root: Path, repeats: int) -> tuple[list[dict[str, float]], list[float]]:
    """``repeats`` bakes, one after the other, and as many floor runs, in one Airflow with one probe."""
    from tests.airflow_stack import AirflowStandalone, PostgresServer, WorkerProbe
    from tests.azure_emulator.dagrun import DAG_ID, IMAGE, Bake

    bake = Bake(world, root / "run")
    catalogue = yaml.safe_load(bake.catalogue.read_text())
    catalogue["images"][IMAGE]["azure"]["replication"] = {"timeout_minutes": 240 / scale, "poll_seconds": 30 / scale}
    bake.catalogue.write_text(yaml.safe_dump(catalogue))
    env = {k: v for k, v in bake.env().items() if k.startswith(("BAKERY_", "AIRFLOW_CONN_", "PATH", "CHECKPOINT"))}
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder(root))
    with PostgresServer() as pg, AirflowStandalone(root / "airflow",
                                                   env={**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url}) as af:
        af.request("POST", "/api/v2/pools", {"name": "image_bakery_packer", "slots": 2})
        for dag in (DAG_ID, FLOOR_DAG):
            af.wait_dag(dag)
            af.unpause(dag)
        probe = WorkerProbe(interval=SAMPLE_S)
        probe.start()
        bakes = [one_bake(af, probe, 2 + i) for i in range(repeats)]
        floors = [floor(af, probe) for _ in range(repeats)]
        probe.stop.set()
        probe.join()
        gaps = [b - a for a, b in zip(probe.sweeps, probe.sweeps[1:], strict=False)]
        print(f"probe: {len(gaps)} sweeps, median period {sorted(gaps)[len(gaps) // 2]:.2f} s, max {max(gaps):.2f} s")
        return bakes, floors


def main() -> None:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    from statistics import median

    from tests.azure_emulator.dagrun import emulated_world

    print(f"replication: {REPLICATION_S:.0f} emulated s on an emulator clock {scale:g}x real time "
          f"({REPLICATION_S / scale:.0f} real s); {repeats} bakes and {repeats} floor runs")
    print("Airflow [workers] min_heartbeat_interval: "
          f"{os.environ.get('AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL', '5 (the default: source scripts/env.sh)')} s "
          "(a task's worker slot can stay taken up to this long after its process ended)")
    with emulated_world(time_scale=scale) as world:
        world.emu.faults.slow_replication(REPLICATION_S)
        old = before(world, scale)
        print(f"before (wait in the worker): worker slot held {old:.1f} s real "
              f"(= {old * scale:.0f} s at real speed: it is the replication time)")
        with tempfile.TemporaryDirectory(prefix="bakery-bench-") as tmp:
            bakes, floors = after(world, scale, Path(tmp), repeats)
    for i, (b, f) in enumerate(zip(bakes, floors, strict=True), 1):
        print(f"bake {i}: publish held a worker {b['publish']:.1f} s, wait_replication {b['wait']:.1f} s "
              f"(deferred {b['deferred']:.1f} s real = ~{b['deferred'] * scale:.0f} emulated s); "
              f"a trivial task of the run {b['trivial']:.1f} s; floor run {i}: {f:.1f} s")
    held = [b["publish"] + b["wait"] for b in bakes]
    mid, worst, flo = median(held), max(held), median(floors)
    print(f"after (deferred to the triggerer): worker slot held per bake {', '.join(f'{h:.1f}' for h in held)} s "
          f"(median {mid:.1f} s, max {worst:.1f} s)")
    print(f"floor (a task that does nothing, then one started in the triggerer that resumes to do nothing; same "
          f"Airflow, same probe): median {flo:.1f} s; after / floor = {mid / max(flo, SAMPLE_S):.2f}")
    print(f"goal under 5 s: {'met' if worst < 5 else 'met by the median only' if mid < 5 else 'NOT met'} "
          f"(max {worst:.1f} s, median {mid:.1f} s); before/after at real speed: {old * scale / max(mid, SAMPLE_S):.0f}x")


if __name__ == "__main__":
    main()
