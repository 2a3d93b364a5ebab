"""DAG factory: one DAG per image in the catalogue (include/catalogue.yaml).

    prepare -> validate -> build -> smoke_test -> publish -> prune

Kept small and fast to parse: it reads the catalogue and wires operators; all work happens in
the `bakery` package under plugins/.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.sdk import DAG, Param

from bakery.catalogue import ImageSpec, load_catalogue
from bakery.operators.bake import (
    PrepareBakeOperator,
    PruneOperator,
    PublishOperator,
    QemuPackerOperator,
    SmokeTestOperator,
)

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
PACKER_VARIABLES = "{{ ti.xcom_pull(task_ids='prepare')['packer_variables'] }}"


def build_dag(spec: ImageSpec) -> DAG:
    params = {
        "accelerator": Param(
            "auto",
            enum=["auto", "kvm", "tcg"],
            description="QEMU accelerator for the local target: auto-detect (KVM only where it "
            "can really run a guest), or force one.",
        ),
        "smoke_timeout_seconds": Param(
            spec.smoke_test.timeout_seconds,
            type="integer",
            minimum=30,
            maximum=7200,
            description="How long the smoke test waits for the expected HTTP answer.",
        ),
        "prune_keep": Param(
            spec.prune.keep,
            type="integer",
            minimum=1,
            maximum=100,
            description="How many of the newest versions to keep (the new one and `latest` always stay).",
        ),
        "prune_dry_run": Param(
            spec.prune.dry_run,
            type="boolean",
            description="Only report what prune would delete.",
        ),
    }
    with DAG(
        dag_id=f"bake_{spec.name.replace('-', '_')}",
        description=spec.description or f"Bake, smoke-test, publish and prune {spec.name}",
        schedule=spec.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        params=params,
        tags=["image-bakery", spec.target, *spec.tags],
        render_template_as_native_obj=True,
        default_args={"owner": "image-bakery", "retries": 0, "retry_delay": timedelta(seconds=30)},
        doc_md=__doc__,
    ) as dag:
        prepare = PrepareBakeOperator(task_id="prepare", image=spec.name, retries=1)
        validate = QemuPackerOperator(
            task_id="validate",
            command="validate",
            template_dir=str(spec.template_dir),
            variables=PACKER_VARIABLES,
            retries=1,
        )
        build = QemuPackerOperator(
            task_id="build",
            command="build",
            template_dir=str(spec.template_dir),
            variables=PACKER_VARIABLES,
            manifest_path="{{ ti.xcom_pull(task_ids='prepare')['packer_variables']['manifest_path'] }}",
            retries=spec.retries,
            execution_timeout=timedelta(minutes=spec.build_timeout_minutes),
        )
        smoke = SmokeTestOperator(task_id="smoke_test", image=spec.name, retries=1)
        publish = PublishOperator(task_id="publish", retries=3)
        prune = PruneOperator(task_id="prune", retries=2)
        prepare >> validate >> build >> smoke >> publish >> prune
    return dag


for _spec in load_catalogue().values():
    globals()[f"bake_{_spec.name.replace('-', '_')}"] = build_dag(_spec)
