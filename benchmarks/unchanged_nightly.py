"""A nightly with nothing to do: wall time, and proof that no VM was started.

Runs the image's DAG with `airflow dags test` (the same as scripts/bake.sh) against an image that
already has a published version with a package manifest (bake one first: scripts/bake.sh), and
against its floor in the same run: a DAG of the same shape whose tasks do nothing (EmptyOperator,
same task ids and dependencies, same `airflow dags test`). While the nightly runs, every process on
the machine is watched for a QEMU with this bakery's home on its command line.

    python benchmarks/unchanged_nightly.py [image] [runs]

Prints the wall time of each run, the median, the ratio to the floor, the check_changes decision
and its reasons, and the number of QEMU processes seen (must be 0). Exits non-zero if the nightly
baked anything or a VM was seen.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

FLOOR_DAG = textwrap.dedent('''
    from datetime import datetime, timezone
    from airflow.sdk import DAG
    from airflow.providers.standard.operators.empty import EmptyOperator
    with DAG("floor_nightly", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc), catchup=False) as dag:
        t = {{n: EmptyOperator(task_id=n) for n in {tasks!r}}}
        for up, down in {edges!r}:
            t[up] >> t[down]
''')


def watch_qemu(home: str, stop: threading.Event, seen: set[int]) -> None:
    while not stop.is_set():
        for p in psutil.process_iter(["name", "cmdline"]):
            try:
                if "qemu-system" in (p.info["name"] or "") and home in " ".join(p.info["cmdline"] or []):
                    seen.add(p.pid)
            except psutil.Error:
                continue
        time.sleep(0.2)


def dags_test(dag_id: str, env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(["airflow", "dags", "test", dag_id], capture_output=True, text=True, env=env, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"airflow dags test {dag_id} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return wall, proc.stdout + proc.stderr


def floor_runs(dag_id: str, env: dict[str, str], runs: int) -> list[float]:
    """Wall times of ``airflow dags test`` of the floor: ``dag_id``'s task graph (task ids and dependencies)
    of EmptyOperators, after one warm-up run (first parse, DB rows)."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    tasks = [t.task_id for t in dag.tasks]
    edges = [(t.task_id, d) for t in dag.tasks for d in sorted(t.downstream_task_ids)]
    with tempfile.TemporaryDirectory() as floor_dir:
        Path(floor_dir, "floor.py").write_text(FLOOR_DAG.format(tasks=tasks, edges=edges))
        floor_env = {**env, "AIRFLOW__CORE__DAGS_FOLDER": floor_dir}
        dags_test("floor_nightly", floor_env)
        return [dags_test("floor_nightly", floor_env)[0] for _ in range(runs)]


def main() -> int:
    image = sys.argv[1] if len(sys.argv) > 1 else "debian12-nginx"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    from bakery.gallery import dag_id_of
    from bakery.paths import bakery_home
    from bakery.targets.local import LocalTarget

    target = LocalTarget()
    versions = target.list_versions(image)
    if not versions or target.manifest(image, versions[-1].version) is None:
        print(f"{image} has no published version with a package manifest in {target.gallery}: run "
              "scripts/bake.sh first", file=sys.stderr)
        return 2
    dag_id = dag_id_of(image)
    env = dict(os.environ)
    floors = floor_runs(dag_id, env, runs)

    seen: set[int] = set()
    walls, out = [], ""
    for _ in range(runs):
        stop = threading.Event()
        watcher = threading.Thread(target=watch_qemu, args=(str(bakery_home()), stop, seen), daemon=True)
        watcher.start()
        wall, out = dags_test(dag_id, env)
        stop.set()
        watcher.join()
        walls.append(wall)
    reasons = [line.split("check_changes: ", 1)[1].split(" [airflow", 1)[0] for line in out.splitlines()
               if "check_changes: " in line]
    after = [v.version for v in target.list_versions(image)]
    print(f"unchanged nightly of {image} (`airflow dags test {dag_id}`, {runs} runs):")
    print(f"  wall time           {', '.join(f'{w:.1f}' for w in walls)} s   median {statistics.median(walls):.1f} s")
    print(f"  floor (same graph,  {', '.join(f'{w:.1f}' for w in floors)} s   median {statistics.median(floors):.1f} s")
    print("   EmptyOperators)")
    print(f"  ratio nightly/floor {statistics.median(walls) / statistics.median(floors):.2f}")
    print(f"  QEMU processes seen {len(seen)}")
    print(f"  versions before/after: {len(versions)} / {len(after)}")
    for r in reasons:
        print(f"  check_changes: {r}")
    baked = len(after) != len(versions) or not any("SKIP" in r for r in reasons)
    if seen or baked:
        print("FAIL: the unchanged nightly started a VM or baked a version", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
