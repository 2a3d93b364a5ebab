"""bakery_janitor: every hour, remove what dead bakes left behind on this machine.

Leftover Packer runs of killed build tasks, orphaned QEMU of killed smoke tests, stale work
folders, interrupted gallery entries, private temporary folders: anything older than the TTL and
not in use (see plugins/bakery/janitor.py). Trigger it with dry_run to see the report first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param
from bakery.operators.janitor import LOCAL_SWEEPERS, JanitorOperator

with DAG(
    dag_id="bakery_janitor",
    description="Remove leftovers of dead bakes (processes, folders, gallery entries) after a TTL",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    params={
        "ttl_hours": Param(
            6, type="integer", minimum=1,
            description="Leftovers younger than this are kept: they may belong to a bake in progress.",
        ),
        "dry_run": Param(False, type="boolean", description="Only report what would be removed."),
    },
    tags=["image-bakery", "janitor"],
    default_args={"owner": "image-bakery", "retries": 1, "retry_delay": timedelta(minutes=5)},
    render_template_as_native_obj=True,
    doc_md=__doc__,
) as dag:
    JanitorOperator(
        task_id="sweep",
        # another target appends its sweeper factory here, e.g. "bakery.targets.azure:janitor_sweepers"
        sweepers=[LOCAL_SWEEPERS],
        execution_timeout=timedelta(minutes=30),
    )
