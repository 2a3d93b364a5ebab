"""Example: a deployment DAG that consumes new images (one ``rollout_<image>`` per catalogue image).

It is an **example for your own deployment DAGs**: it runs when the image's bake publishes a
version, because its schedule is the image's Asset, ``x-bakery://image/<image>``
(``bakery.operators.assets.image_asset``). The asset event's extra says what was published:
``image``, ``version``, ``published_id``, ``manifest_digest``, ``channel``, ``dag_run_id``, ``target``.

    canary: read the version from the newest triggering asset event (every event seen is logged)
            -> check it is still published (the target's own record)
            -> local target: boot the published disk once more, read-only, with the image's catalogue
               smoke check (a failed canary fails the task); Azure: no boot, the published check only

A run gets every event since the previous run (its first: since the DAG was first parsed, events
of paused times included; ``max_active_runs=1``: events during a run wait for the next one), so it
takes the newest. Where this boots a canary, yours would deploy the version (``context["triggering_asset_events"]``,
see plugins/bakery/operators/rollout.py). Paused when created, whatever the installation's default:
unpause it to try it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG
from bakery.catalogue import CatalogueError, ImageSpec, load_catalogue
from bakery.operators.assets import image_asset
from bakery.operators.rollout import RolloutOperator

START = datetime(2026, 1, 1, tzinfo=UTC)
BOOT_MARGIN = timedelta(minutes=15)  # the canary's backstop: the catalogue's smoke check timeout plus a boot


def build_rollout(spec: ImageSpec) -> DAG:
    with DAG(
        dag_id=f"rollout_{spec.name.replace('-', '_')}",
        description=f"Example deployment DAG: rolls out each version of {spec.name} its bake publishes",
        schedule=[image_asset(spec.name)],
        start_date=START,
        catchup=False,
        max_active_runs=1,  # events that arrive meanwhile wait for the next run, which takes the newest
        is_paused_upon_creation=True,
        tags=["example", "image-bakery", spec.target],
        default_args={"owner": "image-bakery", "retries": 0},
        doc_md=__doc__,
    ) as dag:
        RolloutOperator(task_id="canary", image=spec.name,
                        execution_timeout=timedelta(seconds=spec.smoke_test.timeout_seconds) + BOOT_MARGIN)
    return dag


def _catalogue() -> list[ImageSpec]:
    """The catalogue's images; none when it is broken (the bake DAGs' file shows its error)."""
    try:
        return list(load_catalogue().values())
    except CatalogueError:
        return []


for _spec in _catalogue():
    globals()[f"rollout_{_spec.name.replace('-', '_')}"] = build_rollout(_spec)
