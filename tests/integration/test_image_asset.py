"""The image's Asset inside a real Airflow (``dag.test()``, SQLite metadata DB): the real
PublishOperator with the image's Asset as outlet, on the local target (a small disk, a gallery of
the test's own). A publish emits one asset event whose extra is the published record's
(``bakery.assets.event_extra``); a publish that fails emits none. The rollout DAG's task, run by hand
(no asset event), fails saying what it is for.

The Azure publish (which defers, and emits the event from ``execute_complete``) and the rollout DAG
run from the event by a scheduler are in tests/e2e/test_publish_deferred.py; the local canary boot in
tests/e2e/test_inputs_and_backfills.py.
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
import warnings

import pytest
from bakery.assets import asset_uri, event_extra
from bakery.record import BakeRecord

IMAGE = "debian12-nginx"
G_EVENT = pytest.mark.guarantee("asset-event-only-when-published")


def test_the_image_asset_is_a_plain_x_uri_airflow_keeps_as_it_is():
    from bakery.operators.assets import image_asset

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asset = image_asset(IMAGE)
    assert (asset.uri, asset.name, asset.group) == ("x-bakery://image/debian12-nginx", "image-bakery/debian12-nginx",
                                                    "image-bakery")
    assert asset == image_asset(IMAGE)  # one definition: the outlet and the consumers' schedule match


@pytest.fixture
def bake_env(dags_folder, tmp_path, monkeypatch) -> dict:
    """A DAGs folder and a bakery home of the test's own."""
    monkeypatch.setenv("BAKERY_HOME", str(tmp_path / "home"))
    return {"dags": dags_folder, "home": tmp_path / "home", "tmp": tmp_path}


DAG_FILE = """
import json
from datetime import datetime, timezone

from airflow.sdk import DAG

from bakery.operators.assets import image_asset
from bakery.operators.bake import PublishOperator
from bakery.operators.rollout import RolloutOperator

with DAG(dag_id={dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
    {task}
"""


def run_dag(env: dict, dag_id: str, task: str):
    path = env["dags"] / f"{dag_id}.py"
    path.write_text(textwrap.dedent(DAG_FILE).format(dag_id=dag_id, task=task))
    spec = importlib.util.spec_from_file_location(dag_id, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dr = module.dag.test()
    return dr, {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}


def events_of(run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(AssetEvent.extra, AssetEvent.source_task_id).join(
            AssetModel, AssetModel.id == AssetEvent.asset_id).where(
            AssetModel.uri == asset_uri(IMAGE), AssetEvent.source_run_id == run_id)).all()
    return [{"extra": extra, "task": task} for extra, task in rows]


def smoked(env: dict, version: str, passed: bool) -> BakeRecord:
    disk = env["tmp"] / f"{version}.qcow2"
    disk.write_bytes(b"a smoke-tested disk")
    return BakeRecord(image=IMAGE, version=version, target="local", template_digest="sha256:t",
                      dag_run_id=f"manual__{version}", packer_run_uuid=f"u-{version}", artifact_id=str(disk),
                      smoke={"passed": passed, "seconds": 20, "status": 200 if passed else 502, "detail": "d"})


def publish_task(rec: BakeRecord) -> str:
    return (f"PublishOperator(task_id='publish', record=json.loads({json.dumps(rec.to_dict())!r}), retries=0, "
            f"outlets=[image_asset({IMAGE!r})])")


@G_EVENT
def test_publish_emits_one_event_of_the_image_with_the_published_version(bake_env):
    rec = smoked(bake_env, "2026.1128.1030001", passed=True)
    dr, states = run_dag(bake_env, "asset_publish_ok", publish_task(rec))
    assert states == {"publish": "success"}
    published = rec.with_(published_id=str(bake_env["home"] / "gallery" / IMAGE / rec.version))
    assert (bake_env["home"] / "gallery" / IMAGE / rec.version / "disk.qcow2").is_file()
    assert events_of(dr.run_id) == [{"extra": event_extra(published), "task": "publish"}]
    assert events_of(dr.run_id)[0]["extra"]["channel"] == "latest"


@G_EVENT
def test_a_publish_that_fails_emits_no_event(bake_env):
    rec = smoked(bake_env, "2026.1128.1040001", passed=False)  # the local target refuses to publish it
    dr, states = run_dag(bake_env, "asset_publish_refused", publish_task(rec))
    assert states == {"publish": "failed"}
    assert not (bake_env["home"] / "gallery" / IMAGE / rec.version).exists()
    assert events_of(dr.run_id) == []


def test_the_rollout_run_by_hand_fails_saying_it_runs_from_the_images_asset(bake_env):
    failure = bake_env["tmp"] / "failure.txt"
    task = (f"RolloutOperator(task_id='canary', image={IMAGE!r}, on_failure_callback=lambda c: "
            f"__import__('pathlib').Path({str(failure)!r}).write_text(str(c['exception'])))")
    _, states = run_dag(bake_env, "asset_rollout_by_hand", task)
    assert states == {"canary": "failed"}
    assert failure.read_text().startswith(f"this run has no asset event of {asset_uri(IMAGE)}: it is meant to run "
                                          f"when a bake of {IMAGE} publishes a version")
