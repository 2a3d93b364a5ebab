"""Release channels (include/catalogue.yaml, an image's ``channels`` block): for each such image

- ``promote_<image>``: on the catalogue's ``channels.promote_schedule`` makes the newest candidate that
  has soaked ``channels.soak_hours`` stable (and what ``latest`` resolves to), after its own check of the
  version (local: the published disk is whole; Azure: replicated to every target region); triggered
  by hand with the Param ``version``, promotes that version whatever its soak.
- ``rollback_<image>`` (manual, Param ``version``): makes that older version stable and ``latest``;
  the versions above it are withdrawn (Azure: ``excludeFromLatest``) until a later promotion.

Each change is recorded (who, when, which run) and shown on the gallery page (Browse > Image gallery).
Kept small: the work is in ``bakery.channels`` and the targets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param
from bakery.catalogue import CatalogueError, ImageSpec, load_catalogue
from bakery.operators.channels import ChannelOperator

VERSION = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$"


def _dag(spec: ImageSpec, action: str) -> DAG:
    name = spec.name.replace("-", "_")
    promote = action == "promote"
    version = Param(
        "" if promote else None,  # rollback: no default, the run must name the version
        type="string",
        pattern=f"({VERSION})|^$" if promote else VERSION,
        maxLength=32,
        description=("Promote this version (Major.Minor.Patch) whatever its soak; empty: the newest candidate "
                     f"that has soaked {spec.channels.soak_hours:g} h." if promote else
                     "The published version (Major.Minor.Patch) to make stable and `latest` again."),
    )
    with DAG(
        dag_id=f"{action}_{name}",
        description=(f"Promote a candidate of {spec.name} to stable" if promote
                     else f"Roll {spec.name} back to an older version"),
        schedule=spec.channels.promote_schedule if promote else None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=1,
        params={"version": version},
        tags=["image-bakery", "channels", spec.target],
        default_args={"owner": "image-bakery", "retries": 2, "retry_delay": timedelta(seconds=30)},
        doc_md=__doc__,
    ) as dag:
        ChannelOperator(task_id=action, image=spec.name, action=action, execution_timeout=timedelta(minutes=30))
    return dag


def _specs() -> list[ImageSpec]:
    try:
        return [s for s in load_catalogue().values() if s.channels is not None]
    except CatalogueError:  # the bake DAGs show the catalogue's error
        return []


for _spec in _specs():
    for _action in ("promote", "rollback"):
        _d = _dag(_spec, _action)
        globals()[_d.dag_id] = _d
