"""Print the wall time of each task of the latest run of a bake DAG (from the Airflow metadata DB).

    python benchmarks/stage_times.py bake_debian12_nginx
"""

from __future__ import annotations

import sys


def main(dag_id: str) -> int:
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        ).first()
        if run is None:
            print(f"no run of {dag_id}", file=sys.stderr)
            return 1
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        ).all()
        order = ["prepare", "validate", "build", "smoke_test", "publish", "prune"]
        tis = sorted(tis, key=lambda t: (order.index(t.task_id) if t.task_id in order else 99, t.task_id))
        print(f"stage times of {dag_id} run {run.run_id} ({run.state}):")
        total = 0.0
        for ti in tis:
            secs = ti.duration or 0.0
            total += secs
            print(f"  {ti.task_id:<12} {secs:7.1f} s  {ti.state}")
        print(f"  {'total':<12} {total:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bake_debian12_nginx"))
