"""Print the wall time of each task of the latest run of a bake DAG (from the Airflow metadata DB).

    python benchmarks/stage_times.py bake_debian12_nginx
"""

from __future__ import annotations

import sys

ORDER = ["wait_turn", "prepare", "check_changes", "validate", "build", "smoke_test", "publish", "prune",
         "give_back_turn"]


def latest_run(dag_id: str) -> tuple[str, str, dict[str, tuple[float, str]]] | None:
    """(run id, run state, {task id: (seconds, state)}) of the DAG's latest run, tasks in pipeline
    order; None when it has no run."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        ).first()
        if run is None:
            return None
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        ).all()
        tis = sorted(tis, key=lambda t: (ORDER.index(t.task_id) if t.task_id in ORDER else 99, t.task_id))
        return run.run_id, str(run.state), {ti.task_id: (ti.duration or 0.0, str(ti.state)) for ti in tis}


def main(dag_id: str) -> int:
    latest = latest_run(dag_id)
    if latest is None:
        print(f"no run of {dag_id}", file=sys.stderr)
        return 1
    run_id, state, tasks = latest
    print(f"stage times of {dag_id} run {run_id} ({state}):")
    for task_id, (secs, ti_state) in tasks.items():
        print(f"  {task_id:<12} {secs:7.1f} s  {ti_state}")
    print(f"  {'total':<12} {sum(s for s, _ in tasks.values()):7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "bake_debian12_nginx"))
