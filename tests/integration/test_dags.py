"""Every DAG in dags/ imports with no error and has the shape the catalogue promises."""

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


def test_one_dag_per_catalogue_image_with_the_pipeline(dagbag):
    specs = load_catalogue()
    assert set(dagbag.dag_ids) == {f"bake_{n.replace('-', '_')}" for n in specs}
    for name, spec in specs.items():
        dag = dagbag.dags[f"bake_{name.replace('-', '_')}"]
        assert dag.max_active_runs == 1
        assert dag.catchup is False
        chain = ["prepare", "validate", "build", "smoke_test", "publish", "prune"]
        assert sorted(dag.task_ids) == sorted(chain)
        for up, down in zip(chain, chain[1:]):
            assert dag.get_task(down).upstream_task_ids == {up}
        assert dag.get_task("build").execution_timeout.total_seconds() == spec.build_timeout_minutes * 60
        assert dag.get_task("publish").retries >= 1  # publish is idempotent, so retrying is safe
        params = dag.params
        assert params["prune_keep"] == spec.prune.keep
        assert params.get_param("accelerator").schema["enum"] == ["auto", "kvm", "tcg"]
        assert params.get_param("prune_keep").schema["minimum"] == 1


def test_bad_catalogue_is_an_import_error_naming_the_field(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    bad = tmp_path / "catalogue.yaml"
    bad.write_text((REPO / "include" / "catalogue.yaml").read_text().replace("target: local", "target: nowhere"))
    monkeypatch.setenv("BAKERY_CATALOGUE", str(bad))
    bag = DagBag(dag_folder=str(REPO / "dags"))
    (err,) = bag.import_errors.values()
    assert "image 'debian12-nginx', field 'target': 'nowhere' is not one of 'local'" in err
