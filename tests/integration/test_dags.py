"""Every DAG in dags/ imports with no error and has the shape the catalogue promises."""

import itertools
from pathlib import Path

import pytest
from bakery.catalogue import load_catalogue

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


CHAINS = {
    "local": ["wait_turn", "prepare", "check_changes", "validate", "build", "smoke_test", "publish"],
    "azure": ["wait_turn", "prepare", "check_changes", "validate", "build", "smoke_setup", "smoke_test", "publish",
              "wait_replication"],
}


def test_one_dag_per_catalogue_image_with_the_pipeline(dagbag):
    specs = load_catalogue()
    assert {d for d in dagbag.dag_ids if d.startswith("bake_")} == {f"bake_{n.replace('-', '_')}" for n in specs}
    assert {s.target for s in specs.values()} == set(CHAINS)  # both targets are in the shipped catalogue
    for name, spec in specs.items():
        dag = dagbag.dags[f"bake_{name.replace('-', '_')}"]
        assert dag.max_active_runs == 1
        assert dag.catchup is False
        chain = CHAINS[spec.target]
        extra = {"prune", "give_back_turn"} | ({"smoke_teardown"} if spec.target == "azure" else set())
        assert sorted(dag.task_ids) == sorted([*chain, *extra])
        for i, (up, down) in enumerate(itertools.pairwise(chain)):
            # the step before it, plus the earlier steps whose XCom it takes (XComArgs: data edges)
            upstream = dag.get_task(down).upstream_task_ids
            assert up in upstream and upstream <= set(chain[:i + 1]), (down, upstream)
        # prune runs after publish, and also when check_changes skipped the bake
        assert dag.get_task("prune").upstream_task_ids == {chain[-1], "check_changes"}
        assert dag.get_task("prune").trigger_rule == "none_failed_min_one_success"
        # the image's turn: taken first, given back by a teardown whatever happened
        turn, give_back = dag.get_task("wait_turn"), dag.get_task("give_back_turn")
        assert turn.is_setup and turn.mode == "reschedule" and give_back.is_teardown
        assert give_back.upstream_task_ids == {"wait_turn", "prune"}
        assert dag.get_task("build").execution_timeout.total_seconds() == spec.build_timeout_minutes * 60
        assert dag.get_task("publish").retries >= 1  # publish is idempotent, so retrying is safe
        # the steps that may meet a passing fault retry as the catalogue says, each with a backstop timeout
        steps = ["build", "smoke_test", "publish", *(["smoke_setup", "wait_replication"] if spec.target == "azure" else [])]
        assert {t: dag.get_task(t).retries for t in steps} == dict.fromkeys(steps, spec.retries)
        for task_id in steps:
            assert dag.get_task(task_id).execution_timeout is not None, task_id
        smoke_limit = params.get_param("smoke_timeout_seconds").schema["maximum"] if (params := dag.params) else 0
        assert dag.get_task("smoke_test").execution_timeout.total_seconds() > smoke_limit
        # data flows as XComArgs, not as Jinja xcom_pull strings
        from airflow.sdk.definitions.xcom_arg import XComArg

        assert isinstance(dag.get_task("publish").record, XComArg)
        assert isinstance(dag.get_task("build").template_dir, XComArg)
        strings = [v for t in dag.tasks for f in t.template_fields if isinstance(v := getattr(t, f, None), str)
                   and (t.task_id, f) != ("wait_replication", "version")]
        assert strings and not [v for v in strings if "xcom_pull" in v]
        if spec.target == "azure":  # a trigger's kwargs are JSON: its version is the template of publish's XComArg
            wait = dag.get_task("wait_replication")
            assert isinstance(wait.record, XComArg) and wait.record.operator.task_id == "publish"
            assert wait.version == "{{ ti.xcom_pull(task_ids='publish', map_indexes=-1)['version'] }}"
            assert wait.start_from_trigger and wait.start_trigger_args.trigger_kwargs["version"] == wait.version
            assert "password" not in str(wait.start_trigger_args.trigger_kwargs).lower()
        params = dag.params
        assert params["prune_keep"] == spec.prune.keep
        assert params.get_param("prune_keep").schema["minimum"] == 1
        assert params["replace_existing"] is False and params["prune_dry_run"] is spec.prune.dry_run
        assert params["force_rebuild"] is False and params["allow_current_inputs"] is False
        if spec.target == "local":
            assert params.get_param("accelerator").schema["enum"] == ["auto", "kvm", "tcg"]
        else:
            assert "accelerator" not in params


def test_publish_emits_the_images_asset_and_a_rollout_example_is_scheduled_on_it(dagbag):
    from bakery.operators.assets import image_asset

    specs = load_catalogue()
    assert {d for d in dagbag.dag_ids if d.startswith("rollout_")} == {f"rollout_{n.replace('-', '_')}" for n in specs}
    for name, spec in specs.items():
        asset = image_asset(name)
        assert asset.uri == f"x-bakery://image/{name}"
        # the task that ends with the version published (and no other) has the image's Asset as its outlet
        bake = dagbag.dags[f"bake_{name.replace('-', '_')}"]
        emitter = "wait_replication" if spec.target == "azure" else "publish"
        assert {t.task_id: t.outlets for t in bake.tasks if t.outlets} == {emitter: [asset]}
        rollout = dagbag.dags[f"rollout_{name.replace('-', '_')}"]
        assert list(rollout.timetable.asset_condition.objects) == [asset]  # schedule=[the image's Asset]
        assert "example" in rollout.tags and "example for your own deployment DAGs" in rollout.doc_md
        assert rollout.is_paused_upon_creation is True and rollout.max_active_runs == 1
        (task,) = rollout.tasks
        assert type(task).__name__ == "RolloutOperator" and task.image == name
        assert task.execution_timeout.total_seconds() > spec.smoke_test.timeout_seconds


def test_azure_smoke_teardown_is_an_airflow_teardown_of_the_smoke_setup(dagbag):
    from airflow.task.trigger_rule import TriggerRule

    for name, spec in load_catalogue().items():
        if spec.target != "azure":
            continue
        dag = dagbag.dags[f"bake_{name.replace('-', '_')}"]
        setup, check, teardown = (dag.get_task(t) for t in ("smoke_setup", "smoke_test", "smoke_teardown"))
        assert setup.is_setup and teardown.is_teardown and not check.is_setup
        assert teardown.upstream_task_ids == {"smoke_setup", "smoke_test"}
        assert teardown.trigger_rule == TriggerRule.ALL_DONE_SETUP_SUCCESS  # runs whatever the check did
        assert teardown.on_failure_fail_dagrun is True  # a leftover VM fails the run loudly
        assert dag.get_task("publish").upstream_task_ids == {"smoke_test"}
        assert type(dag.get_task("build")).__name__ == "AzurePackerOperator"
        assert dag.get_task("build").conn_id == spec.azure.conn_id


# what only a running task needs: the DAG files' parse (which the scheduler repeats all the time) must not
# import it (DESIGN.md: no heavy imports at module top; issue 11 part 5)
TASK_ONLY_MODULES = ("azure.", "msal", "airflow.providers.microsoft.azure.hooks", "bakery.hooks", "bakery.targets.",
                     "bakery.bake", "bakery.packer", "bakery.packages.pool", "bakery.packages.server",
                     "bakery.sshkey", "bakery.qemu", "bakery.channels")


def test_dag_files_import_no_task_code_no_azure_sdk_and_need_no_connection():
    import subprocess
    import sys

    code = ("import sys; from airflow.dag_processing.dagbag import DagBag; "
            f"b = DagBag(dag_folder={str(REPO / 'dags')!r}); assert not b.import_errors, b.import_errors; "
            "print(sorted(m for m in sys.modules if m == 'azure' or "
            f"(m.startswith({TASK_ONLY_MODULES!r}) and m != 'bakery.targets.base')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_bad_catalogue_is_an_import_error_naming_the_field(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    bad = tmp_path / "catalogue.yaml"
    bad.write_text((REPO / "include" / "catalogue.yaml").read_text().replace("target: local", "target: nowhere"))
    monkeypatch.setenv("BAKERY_CATALOGUE", str(bad))
    bag = DagBag(dag_folder=str(REPO / "dags"))
    (err,) = bag.import_errors.values()  # the bake DAGs' file says it; the others make no DAG of it
    assert "image 'debian12-nginx', field 'target': 'nowhere' is not one of 'local'" in err
    assert not [d for d in bag.dag_ids if d.startswith(("rollout_", "promote_", "rollback_"))]


def test_images_with_channels_get_a_promote_and_a_rollback_dag(dagbag):
    specs = load_catalogue()
    with_channels = {n for n, s in specs.items() if s.channels is not None}
    assert with_channels, "the shipped catalogue shows channels on at least one image"
    names = {n.replace("-", "_") for n in with_channels}
    assert {d for d in dagbag.dag_ids if d.startswith(("promote_", "rollback_"))} == (
        {f"promote_{n}" for n in names} | {f"rollback_{n}" for n in names})
    for name in with_channels:
        spec, key = specs[name], name.replace("-", "_")
        promote, rollback = dagbag.dags[f"promote_{key}"], dagbag.dags[f"rollback_{key}"]
        assert promote.task_ids == ["promote"] and rollback.task_ids == ["rollback"]
        assert type(rollback.timetable).__name__ == "NullTimetable"  # manual only
        assert promote.max_active_runs == rollback.max_active_runs == 1
        assert promote.params["version"] == ""  # empty: the newest soaked candidate
        schema = rollback.params.get_param("version").schema
        assert schema["type"] == "string" and "pattern" in schema and schema["maxLength"] == 32
