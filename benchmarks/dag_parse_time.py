"""DAG parse time against its floor (a product feature: the scheduler re-parses dags/ all the time).

For the shipped catalogue and for catalogues of 10, 50 and 200 images, in the same run: the time
Airflow's DagBag takes to fill from dags/ (median of N fresh interpreters; Airflow's own import not
counted), and the **floor**: a DagBag filled from one generated file that makes DAGs of exactly the
same shape (the same DAG ids, schedules, task ids, dependencies and Params with their schemas, read
from the real DagBag) out of EmptyOperators, with nothing else. Prints each ratio dags/ : floor and
the per-DAG cost.

The schedule belongs to the shape: Airflow validates every Param of a scheduled DAG when it builds
it (a scheduled run has no one to fill them in), each against its JSON schema, which a DAG with
``schedule=None`` skips; and a cron schedule makes a cron timetable. The floor without schedules
(every DAG ``schedule=None``, what this benchmark measured first) is printed beside it for comparison.

Where the gap to the floor goes: one more fill of each folder, not timed with the others, counts the
deep copies of DAG Params and the CPU time spent in them. Airflow's ``apply_defaults`` (the wrapper
``BaseOperatorMeta`` puts around the ``__init__`` of every operator class that defines one) deep-copies the
DAG's Params once per such class in an operator's hierarchy: an EmptyOperator makes one copy, an operator
with its own ``__init__`` two, a subclass of that three. Printed per catalogue size: the copies and their
seconds in dags/ and in the floor, and that difference against the whole gap.

    python benchmarks/dag_parse_time.py [runs] [--cpu]

--cpu: the parsing process's CPU time (user + system) instead of wall time, for a machine whose other
work (a QEMU guest) takes cores meanwhile: the scheduler's cost of a parse, less sensitive to the neighbour.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent(
    """
    import json, time, sys
    from airflow.dag_processing.dagbag import DagBag
    w1, c1 = time.perf_counter(), time.process_time()
    bag = DagBag(dag_folder=sys.argv[1])
    w2, c2 = time.perf_counter(), time.process_time()
    assert not bag.import_errors, bag.import_errors
    print(f"RESULT {w2 - w1:.4f} {c2 - c1:.4f} {len(bag.dags)}")
    def schedule_of(d):  # a cron/preset string, None, or the assets an asset-scheduled DAG waits for
        if d.schedule is None or isinstance(d.schedule, str):
            return d.schedule
        return {"assets": [[a.name, a.uri] for a in d.schedule]}
    if len(sys.argv) > 2:  # write the DAGs' shapes for the floor
        shapes = {d.dag_id: {"tasks": {t.task_id: sorted(t.upstream_task_ids) for t in d.tasks},
                             "params": {k: [d.params.get_param(k).value, d.params.get_param(k).schema]
                                        for k in d.params.keys()},
                             "schedule": schedule_of(d)}
                  for d in bag.dags.values()}
        open(sys.argv[2], "w").write(json.dumps(shapes, default=str))
    """
)

FLOOR = textwrap.dedent(
    """
    # DAGs of the same shape as dags/ makes, of EmptyOperators (the benchmark's floor)
    import json
    from datetime import UTC, datetime

    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Asset, Param

    def _schedule(s):  # the real DAG's schedule (a cron/preset string, None, or its assets), or None for all
        if not {schedules}:
            return None
        if isinstance(s, dict):
            return [Asset(name=name, uri=uri) for name, uri in s["assets"]]
        return s

    for _dag_id, _shape in json.loads(open({shapes!r}).read()).items():
        with DAG(_dag_id, schedule=_schedule(_shape["schedule"]), start_date=datetime(2026, 1, 1, tzinfo=UTC),
                 catchup=False,
                 params={{k: Param(v, **schema) for k, (v, schema) in _shape["params"].items()}}) as _dag:
            _tasks = {{t: EmptyOperator(task_id=t) for t in _shape["tasks"]}}
            for _t, _ups in _shape["tasks"].items():
                for _u in _ups:
                    _tasks[_u] >> _tasks[_t]
        globals()[_dag_id] = _dag
    """
)


COPIES = textwrap.dedent(
    """
    # the deep copies of DAG Params a DagBag fill makes, and the CPU seconds spent in them
    import sys, time
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.dag_processing.dagbag import DagBag
    deepcopy, copies, seconds = ParamsDict.__deepcopy__, 0, 0.0
    def counted(self, memo):
        global copies, seconds
        started = time.process_time()
        try:
            return deepcopy(self, memo)
        finally:
            copies, seconds = copies + 1, seconds + time.process_time() - started
    ParamsDict.__deepcopy__ = counted
    bag = DagBag(dag_folder=sys.argv[1])
    assert not bag.import_errors, bag.import_errors
    print(f"COPIES {copies} {seconds:.4f}")
    """
)

CPU = "--cpu" in sys.argv


def probe(argv: list[str], env: dict, tag: str) -> list[str]:
    """Run a probe interpreter; the fields of its last ``<tag> ...`` line."""
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return [ln for ln in out.stdout.splitlines() if ln.startswith(f"{tag} ")][-1].split()[1:]


def fill(folder: Path, n: int, env: dict, shapes: Path | None = None) -> tuple[float, int]:
    """Median DagBag fill time of ``folder`` (wall, or CPU with --cpu) over ``n`` fresh interpreters, and its
    DAG count."""
    fills, dags = [], 0
    for i in range(n):
        argv = [sys.executable, "-c", PROBE, str(folder)] + ([str(shapes)] if shapes and i == 0 else [])
        wall, cpu, dags = probe(argv, env, "RESULT")
        fills.append(float(cpu if CPU else wall))
    return statistics.median(fills), int(dags)


def param_copies(folder: Path, env: dict) -> tuple[int, float]:
    """The deep copies of DAG Params one DagBag fill of ``folder`` makes, and their CPU seconds."""
    copies, seconds = probe([sys.executable, "-c", COPIES, str(folder)], env, "COPIES")
    return int(copies), float(seconds)


def measure(catalogue: Path | None, n: int, tmp: Path) -> tuple[float, float, float, int, dict]:
    """(dags/ fill, floor fill, floor fill without schedules, DAG count), each the median of ``n`` runs,
    interleaved in one run, and the Params copies of one more fill of dags/ and of the floor."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    if catalogue:
        env["BAKERY_CATALOGUE"] = str(catalogue)
    shapes = tmp / "shapes.json"
    real, dags = fill(REPO / "dags", 1, env, shapes)  # warms the caches and writes the shapes
    floor_dirs = {}
    for schedules in (True, False):
        floor_dirs[schedules] = tmp / f"floor-{'schedules' if schedules else 'none'}"
        floor_dirs[schedules].mkdir(exist_ok=True)
        (floor_dirs[schedules] / "floor.py").write_text(FLOOR.format(shapes=str(shapes), schedules=schedules))
    reals, floors, unscheduled = [], [], []
    for _ in range(n):  # alternate, so that a noisy neighbour hits them alike
        reals.append(fill(REPO / "dags", 1, env)[0])
        floors.append(fill(floor_dirs[True], 1, env)[0])
        unscheduled.append(fill(floor_dirs[False], 1, env)[0])
    copies = {"dags": param_copies(REPO / "dags", env), "floor": param_copies(floor_dirs[True], env)}
    return statistics.median(reals), statistics.median(floors), statistics.median(unscheduled), dags, copies


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--cpu"]
    n = int(args[0]) if args else 5
    import yaml

    base = yaml.safe_load((REPO / "include" / "catalogue.yaml").read_text())
    entry = next(iter(base["images"].values()))
    print(f"DagBag fill ({'CPU' if CPU else 'wall'} time), median of {n} runs each (Airflow's import not "
          "counted); floor: the same DAGs (ids, schedules, tasks, dependencies, Params) of EmptyOperators; "
          "unscheduled: that floor with schedule=None everywhere")
    rows = []
    for size in (None, 10, 50, 200):
        with tempfile.TemporaryDirectory() as tmp:
            cat = None
            if size:
                cat = Path(tmp) / "catalogue.yaml"
                cat.write_text(yaml.safe_dump({"version": 1, "images": {f"image-{i:03d}": dict(entry)
                                                                        for i in range(size)}}))
            real, floor, unscheduled, dags, copies = measure(cat, n, Path(tmp))
        label = "shipped catalogue" if size is None else f"{size:3d} images"
        rows.append((size, real, dags))
        print(f"{label:18s}: {dags:4d} DAGs, dags/ {real * 1000:7.0f} ms, floor {floor * 1000:7.0f} ms, "
              f"ratio {real / floor:.2f}, per DAG {real / dags * 1000:.1f} ms (floor {floor / dags * 1000:.1f} ms); "
              f"unscheduled floor {unscheduled * 1000:.0f} ms, ratio {real / unscheduled:.2f}")
        (own, own_s), (flo, flo_s) = copies["dags"], copies["floor"]
        print(f"{'':18s}  deep copies of DAG Params (one fill more, CPU): dags/ {own} in {own_s * 1000:.0f} ms, "
              f"floor {flo} in {flo_s * 1000:.0f} ms; the {own - flo} more copies take {(own_s - flo_s) * 1000:.0f} ms "
              f"of the {(real - floor) * 1000:.0f} ms gap")
    per = {size: real / dags for size, real, dags in rows if size}
    print(f"per-DAG cost 200 vs 10 images: {per[200] / per[10]:.2f}x (flat: ~1)")


if __name__ == "__main__":
    main()
