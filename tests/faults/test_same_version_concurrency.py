"""Row 6 of issue #4: two runs of the same image at once.

* Airflow: every bake DAG has ``max_active_runs=1`` and the build task runs in the
  ``image_bakery_packer`` pool (capping concurrent Packer builds across images), which setup and
  docker-compose's init create;
* the bakery itself (whatever Airflow does: ``airflow tasks test``, two deployments, a backfill
  and a manual run of the same date): a second build, smoke test or publish of the same image
  version is refused at once with a clear error while the first holds the version's work folder,
  and the first one is not disturbed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from bakery.packer.leftovers import STATE_NAME, read_state
from bakery.packer.runner import PackerRunner
from bakery.record import BakeRecord
from bakery.targets.base import SmokeCheck
from bakery.targets.local import LocalTarget
from bakery.worklock import WorkBusyError
from faultkit import REPO, TEMPLATES, group_pids, mentioning, py, python_script, start, wait_for

POOL = "image_bakery_packer"
IMAGE, VERSION = "debian12-nginx", "2026.1128.200000"

G_AIRFLOW = pytest.mark.guarantee("concurrent-runs")
G_LOCK = pytest.mark.guarantee("concurrent-runs")
needs_packer = pytest.mark.needs_tools("packer", "qemu-img")  # qemu-img: publish reads the qcow2 it stores


# -- Airflow -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def bake_dags(dagbag):
    dags = [d for i, d in dagbag.dags.items() if i.startswith("bake_")]
    assert dags, dagbag.import_errors
    return dags


@G_AIRFLOW
def test_every_bake_dag_runs_one_at_a_time(dagbag):
    for dag in bake_dags(dagbag):
        assert dag.max_active_runs == 1, dag.dag_id


@G_AIRFLOW
def test_the_build_task_runs_in_the_packer_pool(dagbag):
    for dag in bake_dags(dagbag):
        assert dag.get_task("build").pool == POOL, dag.dag_id


def _pool_command(text: str, where: str) -> str:
    m = re.search(rf"airflow pools set {POOL}\b[^\n]*", text)
    assert m, f"{where} does not create the {POOL} pool (`airflow pools set {POOL} <slots> ...`)"
    return m.group(0)


@G_AIRFLOW
def test_setup_creates_the_packer_pool(airflow_db):
    line = _pool_command((REPO / "scripts" / "setup.sh").read_text(), "scripts/setup.sh")
    # run setup's own command against the session's Airflow DB, then read the pool back
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_db)}
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    got = subprocess.run(["airflow", "pools", "get", POOL, "-o", "json"], capture_output=True, text=True,
                         env=env, timeout=300, check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    (pool,) = json.loads(got.stdout)
    assert pool["pool"] == POOL and int(pool["slots"]) >= 1


@G_AIRFLOW
def test_compose_init_creates_the_packer_pool():
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    init = compose["services"]["airflow-init"]
    command = init["command"] if isinstance(init["command"], str) else "\n".join(init["command"])
    line = _pool_command(command, "docker-compose.yaml's airflow-init")
    assert int(line.split()[4]) >= 1


# -- the bakery ----------------------------------------------------------------------------------


def holder_script(tmp_path: Path, work: Path) -> Path:
    """A real Packer build (null builder, a long shell-local sleep) owning ``work``."""
    return python_script(
        tmp_path / "holder.py",
        "from bakery.packer.runner import PackerRunner\n"
        f"PackerRunner({str(TEMPLATES / 'streaming')!r}, variables={{'sleep_seconds': 600}},\n"
        f"             work_dir={str(work)!r}, log=lambda l: print(l, flush=True)).build()\n",
    )


@pytest.fixture
def running_build(tmp_path, monkeypatch, reaper):
    """A first build of IMAGE VERSION holding its work folder under a private BAKERY_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("BAKERY_HOME", str(home))
    work = home / "work" / IMAGE / VERSION
    log = tmp_path / "holder.log"
    proc = start(py(holder_script(tmp_path, work)), log, env={**os.environ, "TMPDIR": str(tmp_path)})
    reaper.track(proc.pid)
    wait_for(lambda: "before the pause" in log.read_text(), 60, "the first build to be running")
    state = read_state(work / STATE_NAME)
    reaper.track_group(state.pgid)
    members = group_pids(state.pgid)
    yield {"home": home, "work": work, "proc": proc, "state": state, "members": members}
    proc.terminate()  # SIGTERM: the runner stops its Packer first
    proc.wait(60)


def undisturbed(build) -> None:
    assert build["proc"].poll() is None
    assert group_pids(build["state"].pgid) == build["members"]
    assert read_state(build["work"] / STATE_NAME).token == build["state"].token


@G_LOCK
@needs_packer
def test_a_second_build_of_the_same_version_is_refused_and_the_first_keeps_running(running_build):
    lines: list[str] = []
    second = PackerRunner(TEMPLATES / "streaming", variables={"sleep_seconds": 0}, work_dir=running_build["work"],
                          log=lines.append)
    with pytest.raises(WorkBusyError) as err:
        second.build()
    msg = str(err.value)
    assert f"packer build of {TEMPLATES / 'streaming'}" in msg and f"pid {running_build['proc'].pid}" in msg
    assert "wait for that run to finish" in msg
    assert second.last_result is None  # no Packer was started for it
    undisturbed(running_build)


def record_in_work(work: Path) -> BakeRecord:
    disk = work / "output" / f"{IMAGE}-{VERSION}.qcow2"
    disk.parent.mkdir(parents=True, exist_ok=True)
    # a real (empty) qcow2: publish stores a qcow2 with qemu-img convert, which reads it
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    return BakeRecord(image=IMAGE, version=VERSION, target="local", template_digest="sha256:t",
                      dag_run_id="run-2", packer_run_uuid="u-2", artifact_id=str(disk),
                      smoke={"passed": True, "seconds": 1.0, "status": 200, "detail": "ok"})


@G_LOCK
@needs_packer
def test_publish_and_smoke_test_of_a_version_being_built_are_refused(running_build, tmp_path):
    rec = record_in_work(running_build["work"])
    gallery = tmp_path / "gallery"
    target = LocalTarget(gallery)
    with pytest.raises(WorkBusyError, match=rf"cannot start the publish of {IMAGE} {VERSION} .* in use by packer build"):
        target.publish(rec, print)
    assert not (gallery / IMAGE).exists() or target.list_versions(IMAGE) == []
    with pytest.raises(WorkBusyError, match="cannot start the smoke test"):
        target.smoke_test(rec, SmokeCheck(timeout_seconds=5), print)
    assert mentioning(rec.artifact_id) == []  # no VM booted
    undisturbed(running_build)


@G_LOCK
@needs_packer
def test_once_the_first_run_is_gone_the_second_proceeds(running_build, tmp_path):
    running_build["proc"].kill()  # even killed hard: the kernel releases its lock
    running_build["proc"].wait(10)
    runner = PackerRunner(TEMPLATES / "streaming", variables={"sleep_seconds": 0}, work_dir=running_build["work"],
                          log=print, kill_grace_seconds=30)
    assert runner.build().ok  # and its leftover Packer was stopped first (test_packer_leftovers.py)
    assert group_pids(running_build["state"].pgid) == []
    target = LocalTarget(tmp_path / "gallery")
    target.publish(record_in_work(running_build["work"]), print)
    assert [v.version for v in target.list_versions(IMAGE)] == [VERSION]
