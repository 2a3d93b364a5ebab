"""bakery_janitor: every hour, remove what dead bakes left behind on this machine and in Azure.

`sweep`: leftover Packer runs of killed build tasks, orphaned QEMU of killed smoke tests, stale
work folders, interrupted gallery entries, private temporary folders. `pool_gc`: the package pool's
indexes of versions pruned longer ago than their image's retention, and the packages nothing kept
refers to any more (reports the bytes freed). `sweep_azure_<connection>`
(one per connection of the catalogue's azure images): smoke-test VMs with their NIC, IP, NSG and
disk, unpublished managed images, Packer's temporary resource groups, all carrying the bakery's
tags. Anything older than the TTL and not in use (see plugins/bakery/janitor/). Trigger it with
dry_run to see the report first.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param
from bakery.catalogue import CatalogueError, load_catalogue
from bakery.operators.janitor import AZURE_SWEEPERS, LOCAL_SWEEPERS, JanitorOperator, PoolGcOperator


def _azure_connections() -> list[tuple[str, str | None]]:
    """(connection, subscription) of the catalogue's azure images. A broken catalogue leaves the
    local sweep running (the bake DAGs show the catalogue's error)."""
    try:
        specs = load_catalogue().values()
    except CatalogueError:
        return []
    return sorted({(s.azure.conn_id, s.azure.subscription_id) for s in specs if s.azure is not None},
                  key=lambda c: (c[0], c[1] or ""))


with DAG(
    dag_id="bakery_janitor",
    description="Remove leftovers of dead bakes (processes, folders, gallery entries) after a TTL",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    params={
        "ttl_hours": Param(
            6, type="integer", minimum=1, maximum=24 * 30,
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
        sweepers=[LOCAL_SWEEPERS],
        execution_timeout=timedelta(minutes=30),
    )
    PoolGcOperator(task_id="pool_gc", execution_timeout=timedelta(minutes=30))
    for conn_id, subscription_id in _azure_connections():
        suffix = re.sub(r"[^A-Za-z0-9_]", "_", conn_id) + (f"_{subscription_id[:8]}" if subscription_id else "")
        JanitorOperator(
            task_id=f"sweep_azure_{suffix}",
            sweepers=[AZURE_SWEEPERS],
            sweeper_kwargs={"conn_id": conn_id, "subscription_id": subscription_id},
            execution_timeout=timedelta(minutes=60),
        )
