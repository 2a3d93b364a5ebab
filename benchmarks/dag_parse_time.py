"""DAG parse time (a product feature: the scheduler re-parses dags/ all the time).

Prints the time to import dags/image_bakery.py in a fresh interpreter (median of N runs), the
time Airflow's DagBag takes to fill from dags/, and how it scales with the catalogue size.

    python benchmarks/dag_parse_time.py [runs]
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
    import time, sys
    t0 = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    t1 = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    t2 = time.perf_counter()
    assert not bag.import_errors, bag.import_errors
    print(f"RESULT {t1 - t0:.4f} {t2 - t1:.4f} {len(bag.dags)}")
    """
)


def run(catalogue: Path | None, n: int) -> tuple[float, float, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    if catalogue:
        env["BAKERY_CATALOGUE"] = str(catalogue)
    fills, dags = [], 0
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "dags")], env=env, capture_output=True, text=True, check=True)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        airflow_import, fill, dags = line.split()[1:]
        fills.append(float(fill))
    return statistics.median(fills), float(airflow_import), int(dags)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    fill, airflow_import, dags = run(None, n)
    print(f"shipped catalogue: {dags} DAG(s), DagBag fill median {fill * 1000:.0f} ms over {n} runs (airflow import {airflow_import * 1000:.0f} ms, not counted)")
    import yaml

    base = yaml.safe_load((REPO / "include" / "catalogue.yaml").read_text())
    entry = next(iter(base["images"].values()))
    for size in (10, 50, 200):
        cat = {"version": 1, "images": {f"image-{i:03d}": dict(entry) for i in range(size)}}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
            yaml.safe_dump(cat, fh)
        try:
            fill, _, dags = run(Path(fh.name), n)
        finally:
            os.unlink(fh.name)
        print(f"catalogue of {size:3d} images: {dags} DAGs, DagBag fill median {fill * 1000:.0f} ms ({fill / size * 1000:.1f} ms per DAG)")


if __name__ == "__main__":
    main()
