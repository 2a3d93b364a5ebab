"""DAG factory: one DAG per image in the catalogue (include/catalogue.yaml).

    local:  wait_turn -> prepare -> check_changes -> validate -> build -> smoke_test -> publish -> prune -> give_back_turn
    azure:  wait_turn -> prepare -> check_changes -> validate -> build -> smoke_setup -> smoke_test -> publish
                -> wait_replication -> prune -> give_back_turn
            smoke_setup ... smoke_teardown, wait_turn ... give_back_turn (Airflow teardowns: always run)

Data flows as XComArgs (``task.output``): prepare's dict is pushed key by key too (multiple_outputs),
so the Packer tasks take ``prepare.output["template_dir"]`` (the folder prepare rendered) and
``prepare.output["packer_variables"]``; each later step takes the record of the one before it.

Retries: ``retries`` of the catalogue entry for every step that may meet a passing fault and is safe to
repeat (build, the smoke steps, publish); a failed smoke check is a verdict and fails without retrying.
The smoke steps and publish have an ``execution_timeout`` as a backstop. On Azure publish only sends the
version's PUT; wait_replication starts in the triggerer (start_from_trigger) and waits there for the
replication, up to azure.replication.timeout_minutes: no worker slot is held until it is over.

check_changes skips validate .. publish when nothing changed since the latest version (prune still
runs); wait_turn makes every bake of one image wait for the one in flight, backfills included.

publish (Azure: wait_replication) emits an event of the image's Asset (``x-bakery://image/<image>``) with
the version it published in the extra; a run that publishes nothing emits none. Deployment DAGs are scheduled on it
(dags/rollout_example.py).

Kept small and fast to parse: it reads the catalogue and wires operators; all work happens in
the `bakery` package under plugins/.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param
from bakery.catalogue import ImageSpec, load_catalogue
from bakery.operators.assets import image_asset
from bakery.operators.azure import (
    AzurePackerOperator,
    AzureSmokeCheckOperator,
    AzureSmokeSetupOperator,
    AzureSmokeTeardownOperator,
)
from bakery.operators.bake import (
    CheckChangesOperator,
    PrepareBakeOperator,
    PruneOperator,
    PublishOperator,
    QemuPackerOperator,
    ReplicationWaitOperator,
    SmokeTestOperator,
)
from bakery.operators.turn import GiveBackTurnOperator, WaitForTurnSensor

START = datetime(2026, 1, 1, tzinfo=UTC)
PACKER_POOL = "image_bakery_packer"  # caps concurrent Packer builds across images (scripts/setup.sh makes it)
# Backstops, fixed when the DAG is parsed. The smoke check's own limit is the run's Param
# smoke_timeout_seconds (at most SMOKE_PARAM_MAX): the task's must stay above any value it may take,
# plus a VM's boot (local) and the teardown of what failed.
SMOKE_PARAM_MAX = 7200
SMOKE_TIMEOUT = timedelta(seconds=SMOKE_PARAM_MAX + 15 * 60)
SMOKE_SETUP_TIMEOUT = timedelta(minutes=30)  # Azure: NSG, IP, NIC and VM (or their deletion)
PUBLISH_TIMEOUT = timedelta(minutes=60)  # local: the disk copy; Azure: SBOM upload and PUT, or the finish


def build_dag(spec: ImageSpec) -> DAG:
    azure = spec.target == "azure"
    params = {
        "smoke_timeout_seconds": Param(
            spec.smoke_test.timeout_seconds,
            type="integer",
            minimum=10,
            maximum=SMOKE_PARAM_MAX,
            description="How long the smoke test waits for the expected HTTP answer.",
        ),
        "prune_keep": Param(
            spec.prune.keep,
            type="integer",
            minimum=1,
            maximum=100,
            description="How many of the newest versions to keep (the new one and the highest always stay).",
        ),
        "prune_dry_run": Param(
            spec.prune.dry_run,
            type="boolean",
            description="Only report what prune would delete.",
        ),
        "force_rebuild": Param(
            False,
            type="boolean",
            description="Bake even when nothing changed since the latest version (template, base image, "
            "catalogue variables and packages all the same).",
        ),
        "allow_current_inputs": Param(
            False,
            type="boolean",
            description="Backfill of a date the bakery cannot rebuild exactly (no pool index, no snapshot "
            "archive): bake today's packages under that date's version; its metadata says so.",
        ),
        "replace_existing": Param(
            False,
            type="boolean",
            description="Rebuild and replace a version of the same number that is already in the gallery "
            "(published versions are kept as they are otherwise).",
        ),
    }
    if not azure:
        params["accelerator"] = Param(
            "auto",
            enum=["auto", "kvm", "tcg"],
            description="QEMU accelerator for the local target: auto-detect (KVM only where it "
            "can really run a guest), or force one.",
        )
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
        retries = spec.retries
        turn = WaitForTurnSensor(task_id="wait_turn", image=spec.name)
        give_back = GiveBackTurnOperator(task_id="give_back_turn", image=spec.name, retries=2)
        prepare = PrepareBakeOperator(task_id="prepare", image=spec.name, retries=1, multiple_outputs=True,
                                      **({"accelerator": "auto"} if azure else {}))
        check = CheckChangesOperator(task_id="check_changes", image=spec.name, prepared=prepare.output, retries=1)
        packer = {"template_dir": prepare.output["template_dir"], "variables": prepare.output["packer_variables"]}
        build_args = {"manifest_path": prepare.output["manifest_path"], "prepared": prepare.output,
                      "pool": PACKER_POOL, "retries": retries,
                      "execution_timeout": timedelta(minutes=spec.build_timeout_minutes)}
        if azure:
            auth = {"conn_id": spec.azure.conn_id, "subscription_id": spec.azure.subscription_id}
            validate = AzurePackerOperator(task_id="validate", command="validate", **auth, **packer, retries=1)
            build = AzurePackerOperator(task_id="build", command="build", **auth, **packer, **build_args)
            setup = AzureSmokeSetupOperator(task_id="smoke_setup", image=spec.name, prepared=prepare.output,
                                            built=build.output, retries=retries, execution_timeout=SMOKE_SETUP_TIMEOUT)
            smoke = AzureSmokeCheckOperator(task_id="smoke_test", image=spec.name, setup=setup.output,
                                            retries=retries, execution_timeout=SMOKE_TIMEOUT)
            teardown = AzureSmokeTeardownOperator(task_id="smoke_teardown", image=spec.name, setup=setup.output,
                                                  retries=2, execution_timeout=SMOKE_SETUP_TIMEOUT)
            check >> validate >> build >> setup >> smoke >> teardown.as_teardown(setups=setup, on_failure_fail_dagrun=True)
        else:
            validate = QemuPackerOperator(task_id="validate", command="validate", **packer, retries=1)
            build = QemuPackerOperator(task_id="build", command="build", **packer, **build_args)
            smoke = SmokeTestOperator(task_id="smoke_test", image=spec.name, prepared=prepare.output,
                                      built=build.output, retries=retries, execution_timeout=SMOKE_TIMEOUT)
            check >> validate >> build >> smoke
        # the image's Asset: the task that ends with the version published emits its event
        outlets = [image_asset(spec.name)]
        publish = PublishOperator(task_id="publish", record=smoke.output, replace_existing="{{ params.replace_existing }}",
                                  retries=retries, execution_timeout=PUBLISH_TIMEOUT, outlets=[] if azure else outlets)
        published = publish
        if azure:  # the replication is waited for in the triggerer: no worker slot is held meanwhile
            published = ReplicationWaitOperator(
                task_id="wait_replication", image=spec.name, record=publish.output, azure=spec.azure, retries=retries,
                execution_timeout=timedelta(minutes=spec.azure.replication_timeout_minutes) + PUBLISH_TIMEOUT,
                outlets=outlets)
        prune = PruneOperator(task_id="prune", image=spec.name, published=published.output, retries=2)
        turn >> prepare >> check
        check >> prune  # prune also runs when check_changes skipped the bake
        prune >> give_back.as_teardown(setups=turn)
    return dag


for _spec in load_catalogue().values():
    globals()[f"bake_{_spec.name.replace('-', '_')}"] = build_dag(_spec)
