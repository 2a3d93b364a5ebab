"""PackerOperator inside a real Airflow DAG (``dag.test()``, SQLite metadata DB) with the real packer.

Results are read the way a downstream task reads them: a second task pulls the operator's XCom
and writes it to a file; failures are read through the task's ``on_failure_callback``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import textwrap
import time
from pathlib import Path

import pytest

from bakery import processes

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "fixtures" / "templates"
SECRET = "op-secret-9d2e-VALUE"
G_SECRET = pytest.mark.guarantee("secret-nowhere")

pytestmark = pytest.mark.needs_tools("packer")


HEADER = f"""
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk import DAG, task

from bakery.operators.packer import PackerOperator

TEMPLATES = Path({str(TEMPLATES)!r})
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def save_failure(path):
    def on_failure(context):
        Path(path).write_text(f"{{type(context['exception']).__name__}}: {{context['exception']}}")

    return on_failure


@task(task_id="save_result")
def save_result(result, path):
    Path(path).write_text(json.dumps(result))
"""


def load_dag(folder: Path, dag_id: str, body: str):
    """Write a DAG file (HEADER + body, which defines ``dag``) into the DAGs folder and import it."""
    path = folder / f"{dag_id}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    spec = importlib.util.spec_from_file_location(dag_id, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _state(dr) -> str:
    return str(getattr(dr.state, "value", dr.state))


def test_build_in_a_dag_returns_artifacts_and_this_runs_manifest_entry(dags_folder, tmp_path):
    manifest = tmp_path / "manifest.json"
    saved = tmp_path / "xcom.json"
    dag = load_dag(
        dags_folder,
        "test_packer_operator_build",
        f"""
        with DAG(dag_id="test_packer_operator_build", schedule=None, start_date=START,
                 params={{"greeting": "hello, dag"}}, render_template_as_native_obj=True) as dag:
            build = PackerOperator(
                task_id="build",
                template_dir=str(TEMPLATES / "null_ok"),
                variables={{"greeting": "{{{{ params.greeting }}}}", "repeat": 2, "manifest_path": {str(manifest)!r}}},
                manifest_path={str(manifest)!r},
            )
            save_result(build.output, {str(saved)!r})
        """,
    )
    dr = dag.test()
    assert _state(dr) == "success"
    result = json.loads(saved.read_text())
    assert result["command"] == "build"
    assert result["packer_version"] == "1.6.6"
    assert result["artifacts"] == [{"build": "null.example", "builder_id": "fnoeding.null", "id": "Null", "files": []}]
    entry = result["manifest_entry"]
    assert entry["builder_type"] == "null" and entry["name"] == "example"
    assert re.fullmatch(r"[0-9a-f-]{36}", result["packer_run_uuid"])
    assert entry["packer_run_uuid"] == result["packer_run_uuid"]
    assert json.loads(manifest.read_text())["last_run_uuid"] == result["packer_run_uuid"]


def test_validate_error_fails_the_task_quoting_packer(dags_folder, tmp_path):
    failure = tmp_path / "failure.txt"
    dag = load_dag(
        dags_folder,
        "test_packer_operator_validate_error",
        f"""
        with DAG(dag_id="test_packer_operator_validate_error", schedule=None, start_date=START) as dag:
            PackerOperator(
                task_id="validate",
                command="validate",
                template_dir=str(TEMPLATES / "validate_error"),
                retries=3,
                on_failure_callback=save_failure({str(failure)!r}),
            )
        """,
    )
    dr = dag.test()
    assert _state(dr) == "failed"
    text = failure.read_text()
    # a template error is not retried: AirflowFailException
    assert text.startswith("AirflowFailException: packer validate of")
    assert 'An argument named "no_such_option" is not expected here.' in text


def test_failing_build_fails_the_task_quoting_the_provisioner(dags_folder, tmp_path):
    failure = tmp_path / "failure.txt"
    dag = load_dag(
        dags_folder,
        "test_packer_operator_build_fail",
        f"""
        with DAG(dag_id="test_packer_operator_build_fail", schedule=None, start_date=START) as dag:
            PackerOperator(
                task_id="build",
                template_dir=str(TEMPLATES / "build_fail"),
                on_failure_callback=save_failure({str(failure)!r}),
            )
        """,
    )
    dr = dag.test()
    assert _state(dr) == "failed"
    text = failure.read_text()
    assert text.startswith("PackerError: packer build of")
    assert "null.failing: Script exited with non-zero exit status: 3" in text
    assert "provisioner says: disk full" in text


@G_SECRET
def test_sensitive_variables_of_a_subclass_are_used_and_masked(dags_folder, tmp_path, capfd):
    saved = tmp_path / "xcom.json"
    dag = load_dag(
        dags_folder,
        "test_packer_operator_sensitive",
        f"""
        class TokenPackerOperator(PackerOperator):
            def get_sensitive_variables(self, context):
                return {{"api_token": {SECRET!r}}}


        with DAG(dag_id="test_packer_operator_sensitive", schedule=None, start_date=START) as dag:
            build = TokenPackerOperator(
                task_id="build",
                template_dir=str(TEMPLATES / "sensitive"),
                variables={{"sleep_seconds": 0, "region": "north"}},
            )
            save_result(build.output, {str(saved)!r})
        """,
    )
    dr = dag.test()
    assert _state(dr) == "success"
    out, err = capfd.readouterr()
    logs = out + err
    assert "region=north token=***" in logs  # the line was logged, with the secret masked
    assert "token again, with a comma: ***, done" in logs
    assert SECRET not in logs
    assert SECRET not in saved.read_text()


@pytest.mark.guarantee("packer-stopped-mid-build")
def test_execution_timeout_stops_packers_process_group(dags_folder, tmp_path, capfd):
    failure = tmp_path / "failure.txt"
    dag = load_dag(
        dags_folder,
        "test_packer_operator_timeout",
        f"""
        with DAG(dag_id="test_packer_operator_timeout", schedule=None, start_date=START) as dag:
            PackerOperator(
                task_id="build",
                template_dir=str(TEMPLATES / "streaming"),
                variables={{"sleep_seconds": 300}},
                execution_timeout=timedelta(seconds=4),
                on_failure_callback=save_failure({str(failure)!r}),
            )
        """,
    )
    t0 = time.monotonic()
    dr = dag.test()
    elapsed = time.monotonic() - t0
    assert _state(dr) == "failed"
    assert failure.read_text().startswith("AirflowTaskTimeout")
    assert elapsed < 60
    out, err = capfd.readouterr()
    logs = out + err
    assert "before the pause" in logs
    m = re.search(r"stopping Packer: SIGTERM to its process group (\d+)", logs)
    assert m, logs[-3000:]
    assert processes.group(int(m.group(1))) == []  # packer, plugin, sh and sleep are all gone
    assert "Cancelling build after receiving terminated" in logs
