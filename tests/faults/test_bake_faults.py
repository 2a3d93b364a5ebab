"""Rows 1, 2 and 4 of issue #4 with the real thing: Airflow (`airflow dags test` / `airflow tasks
test` in subprocesses, the session's Airflow home), real Packer, real QEMU (slow under TCG).

1. SIGTERM to the task during ``packer build``: Packer cleans up, nothing of the run survives (by
   process tree, Packer group, token and our folder on command lines), no output folder; the
   next DAG run of the same date succeeds and publishes.
2. SIGKILL to the task during ``packer build`` (Packer survives in its own session and keeps
   building); the retry of the build task stops that leftover group before its own Packer
   starts, and builds the artifact.
4. The smoke test fails: (a) the VM never answers HTTP (the base image: no nginx), (b) the wrong
   page (a real nginx image, a check expecting text that is not served). The smoke_test task
   fails quoting the answer, publish does not run, the gallery is unchanged, the VM and its
   processes are gone, the disk is unchanged.

Module-scoped bakery home: row 4b boots the image published by row 1 (or built by row 2) rather
than baking one more.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml
from bakery import processes
from bakery.accel import detect_accelerator
from bakery.digest import sha256_file
from bakery.packer.leftovers import STATE_NAME, TOKEN_ENV, PackerState, read_state
from bakery.record import BakeRecord
from bakery.targets.local import LocalTarget
from faultkit import (
    REPO,
    alive_of,
    descendants,
    group_pids,
    identities,
    mentioning,
    qemu_mentioning,
    start,
    wait_for,
    with_env,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.needs_tools("packer", "qemu-system-x86_64"),
]

DAG_ID, IMAGE = "bake_debian12_nginx", "debian12-nginx"
DATE1, DATE2 = "2026-11-20T02:00:00+00:00", "2026-11-21T02:00:00+00:00"


@pytest.fixture(scope="module")
def home(tmp_path_factory, base_image, airflow_db):
    home = tmp_path_factory.mktemp("bakery-home")
    (home / "base").symlink_to(base_image.parent)  # reuse the cached base image
    (home / "tmp").mkdir()  # TMPDIR of the runs: what a killed task leaves there stays in here
    yield home
    # hygiene whatever happened: nothing that mentions this home may outlive the module
    for p in mentioning(str(home)):
        os.kill(p, signal.SIGKILL)


def airflow(home: Path, args: list[str], log: Path, **env: str) -> subprocess.Popen:
    env = {**os.environ, "BAKERY_HOME": str(home), "TMPDIR": str(home / "tmp"), **env}
    return start(["airflow", *args], log, env=env, start_new_session=True)


@pytest.fixture(scope="module")
def no_retries(tmp_path_factory) -> str:
    """The shipped catalogue with ``retries: 0`` for the image: `airflow dags test` runs a task's
    retries in the same process, and this test must see the end state of the stopped attempt."""
    catalogue = yaml.safe_load((REPO / "include" / "catalogue.yaml").read_text())
    catalogue["images"][IMAGE]["retries"] = 0
    path = tmp_path_factory.mktemp("catalogue") / "catalogue.yaml"
    path.write_text(yaml.safe_dump(catalogue))
    return str(path)


def tail(path: Path, n: int = 6000) -> str:
    return path.read_text(errors="replace")[-n:]


def building(home: Path) -> tuple[Path, PackerState, list[int]]:
    """Wait until the build's QEMU (our work folder on its command line) is up."""
    qemu = wait_for(lambda: qemu_mentioning(str(home / "work")), 900, "the build's QEMU", interval=0.5)
    (state_file,) = (home / "work" / IMAGE).glob(f"*/{STATE_NAME}")
    state = read_state(state_file)
    assert state is not None and state.pid
    return state_file.parent, state, qemu


def versions(home: Path) -> list[str]:
    d = home / "gallery" / IMAGE
    return sorted(v.version for v in LocalTarget(home / "gallery").list_versions(IMAGE)) if d.is_dir() else []


@pytest.mark.guarantee("sigterm-during-build")
def test_sigterm_during_build_then_next_run_succeeds(home, reaper, no_retries):
    reaper.track_text(str(home))
    log = home / "s1-first.log"
    proc = airflow(home, ["dags", "test", DAG_ID, DATE1], log, BAKERY_CATALOGUE=no_retries)
    reaper.track(proc.pid)
    wd, state, qemu = building(home)
    reaper.track_group(state.pgid)
    time.sleep(3)  # well into the build
    tree = {proc.pid, *descendants(proc.pid), *group_pids(state.pgid)}
    ticks = identities(tree)
    assert set(qemu) <= tree and state.pid in tree, "the QEMU/Packer are not the task's"
    assert (wd / "output").is_dir()  # the build has something to clean up

    os.kill(proc.pid, signal.SIGTERM)
    rc = proc.wait(300)
    assert rc != 0, tail(log)  # the run failed: the build was stopped (no retry here, see no_retries)
    assert alive_of(tree, ticks) == [], "a process of the stopped run survived"
    assert with_env(TOKEN_ENV, state.token) == []
    assert mentioning(str(home)) == []
    assert not (wd / "output").exists(), "Packer left a partial output folder"
    assert not (wd / STATE_NAME).exists()
    assert versions(home) == []

    log2 = home / "s1-next.log"
    t0 = time.monotonic()
    nxt = airflow(home, ["dags", "test", DAG_ID, DATE1], log2)
    reaper.track(nxt.pid)
    assert nxt.wait(1800) == 0, tail(log2)
    print(f"next run: {time.monotonic() - t0:.0f}s")
    (v,) = versions(home)
    assert os.readlink(home / "gallery" / IMAGE / "latest") == v
    meta = LocalTarget(home / "gallery").metadata(IMAGE, v)
    assert meta["smoke_test"]["passed"] is True and meta["size_bytes"] > 100 * 2**20
    assert not wd.exists()  # published: the work folder is gone
    assert mentioning(str(home)) == []


class Watcher(threading.Thread):
    """While the retry runs: when (seconds since boot, at clock-tick resolution like process start
    times) was the old group last seen alive, and which Packer run did the retry record?"""

    def __init__(self, state_file: Path, old: PackerState, old_ticks: dict):
        super().__init__(daemon=True)
        self.state_file, self.old, self.old_ticks = state_file, old, old_ticks
        self.last_old_alive: float | None = None
        self.new_state: PackerState | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        tck = os.sysconf("SC_CLK_TCK")
        while not self.stop.is_set():
            now = int(processes.now() * tck) / tck
            if alive_of(self.old_ticks, self.old_ticks):
                self.last_old_alive = now
            st = read_state(self.state_file)
            if self.new_state is None and st is not None and st.token != self.old.token and st.pid:
                self.new_state = st
            time.sleep(0.01)


@pytest.mark.guarantee("build-killed-then-retried")
def test_sigkill_during_build_then_retry_of_the_task(home, reaper):
    reaper.track_text(str(home))
    log = home / "s2-first.log"
    # row 1 published a version a moment ago and nothing changed since: force the bake
    proc = airflow(home, ["dags", "test", DAG_ID, DATE2, "--conf", '{"force_rebuild": true}'], log)
    reaper.track(proc.pid)
    wd, old, qemu = building(home)
    reaper.track_group(old.pgid)
    time.sleep(3)
    old_pids = with_env(TOKEN_ENV, old.token)
    old_ticks = identities(old_pids)
    assert set(qemu) <= set(old_pids) and old.pid in old_pids

    proc.kill()  # the worker dies: no on_kill, no signal handler, nothing
    proc.wait(30)
    time.sleep(5)
    assert sorted(alive_of(old_pids, old_ticks)) == sorted(old_pids), "Packer did not survive its task"
    assert (wd / STATE_NAME).exists() and (wd / "output").is_dir()

    watcher = Watcher(wd / STATE_NAME, old, old_ticks)
    watcher.start()
    log2 = home / "s2-retry.log"
    t0 = time.monotonic()
    retry = airflow(home, ["tasks", "test", DAG_ID, "build", DATE2], log2)
    reaper.track(retry.pid)
    try:
        assert retry.wait(1800) == 0, tail(log2)
    finally:
        watcher.stop.set()
        watcher.join(5)
    print(f"retry: {time.monotonic() - t0:.0f}s")
    assert alive_of(old_pids, old_ticks) == []
    assert watcher.new_state is not None, f"the retry never started Packer:\n{tail(log2)}"
    assert watcher.last_old_alive is not None
    assert watcher.new_state.start_time >= watcher.last_old_alive, "the retry's Packer started before the leftover was gone"
    (artifact,) = (wd / "output").glob("*.qcow2")
    check = subprocess.run(["qemu-img", "check", str(artifact)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert artifact.stat().st_size > 100 * 2**20
    assert not (wd / STATE_NAME).exists()
    assert mentioning(str(home)) == []


# -- row 4: the smoke test fails -------------------------------------------------------------------

DAG_FILE = """
import json
from datetime import datetime, timezone
from pathlib import Path

from airflow.sdk import DAG, Param, task

from bakery.operators.bake import PublishOperator, SmokeTestOperator

INPUT = json.loads(Path({input!r}).read_text())


def save_failure(context):
    Path({failure!r}).write_text(f"{{type(context['exception']).__name__}}: {{context['exception']}}")


with DAG(dag_id={dag_id!r}, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
         params={{"smoke_timeout_seconds": Param({timeout}, type="integer")}}) as dag:

    @task(task_id="prepare")
    def prepare():  # stands in for the prepare task: its XCom only
        return INPUT["prepared"]

    @task(task_id="build")
    def build():  # stands in for the Packer build: its XCom only
        return INPUT["built"]

    prepared, built = prepare(), build()
    prepared >> built
    smoke = SmokeTestOperator(task_id="smoke_test", image={image!r}, prepared=prepared, built=built, retries=0,
                              on_failure_callback=save_failure)
    PublishOperator(task_id="publish", record=smoke.output, retries=0)  # smoke >> publish, by the XComArg
"""


@pytest.fixture
def smoke_env(tmp_path, monkeypatch, airflow_db):
    """A private dags folder, bakery home (gallery with one published version), QEMU temp dir."""
    from airflow import settings

    dags = tmp_path / "dags"
    dags.mkdir()
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(dags))
    sm_home = tmp_path / "home"
    monkeypatch.setenv("BAKERY_HOME", str(sm_home))
    qtmp = tmp_path / "qemu-tmp"
    qtmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(qtmp))
    target = LocalTarget(sm_home / "gallery")
    src = tmp_path / "old.qcow2"
    src.write_bytes(b"the version published before")
    target.publish(BakeRecord(image=IMAGE, version="2026.1101.200000", target="local", template_digest="sha256:t",
                              dag_run_id="r0", packer_run_uuid="u0", artifact_id=str(src),
                              smoke={"passed": True, "seconds": 20, "status": 200, "detail": "ok"}), print)
    return {"dags": dags, "home": sm_home, "qtmp": qtmp, "target": target, "tmp": tmp_path}


def gallery_state(root: Path) -> list[tuple[str, str]]:
    out = []
    for p in sorted(root.rglob("*")):
        if p.name == ".lock":
            continue
        kind = f"-> {os.readlink(p)}" if p.is_symlink() else (sha256_file(p) if p.is_file() else "dir")
        out.append((str(p.relative_to(root)), kind))
    return out


def overlay(backing: Path, path: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing.resolve()), "-F", "qcow2", str(path)],
                   check=True)
    return path


def run_smoke_dag(env: dict, disk: Path, timeout: int, name: str):
    rec = BakeRecord(image=IMAGE, version="2026.1128.200001", target="local", template_digest="sha256:t",
                     base_digest="sha256:b", dag_run_id=f"manual__{name}", run_type="manual",
                     extra={"accelerator": detect_accelerator()})
    data = {"prepared": {"record": rec.to_dict(), "packer_variables": {}},
            "built": {"packer_run_uuid": "run-uuid-" + name,
                      "artifacts": [{"build": "qemu.debian12", "builder_id": "transcend.qemu", "id": "x",
                                     "files": [str(disk)]}]}}
    (env["tmp"] / "input.json").write_text(json.dumps(data))
    dag_id = f"smoke_fault_{name}"
    path = env["dags"] / f"{dag_id}.py"
    path.write_text(textwrap.dedent(DAG_FILE.format(input=str(env["tmp"] / "input.json"), failure=str(env["tmp"] / "failure.txt"),
                                                    dag_id=dag_id, timeout=timeout, image=IMAGE)))
    spec = importlib.util.spec_from_file_location(dag_id, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dr = module.dag.test()
    return dr, {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}


def assert_failed_cleanly(env: dict, disk: Path, states: dict, before: dict) -> str:
    assert states["smoke_test"] == "failed" and states["publish"] == "upstream_failed", states
    assert gallery_state(env["home"] / "gallery") == before["gallery"], "the gallery changed"
    assert qemu_mentioning(str(disk)) == [] and mentioning(str(disk)) == [], "the VM outlived the smoke test"
    assert list(env["qtmp"].iterdir()) == [], "the VM's private folder was left"
    assert sha256_file(disk) == before["disk"]
    return (env["tmp"] / "failure.txt").read_text()


@pytest.mark.guarantee("smoke-test-fails")
def test_smoke_test_of_an_image_without_nginx_fails_and_publishes_nothing(smoke_env, base_image):
    disk = overlay(base_image, smoke_env["tmp"] / "no-nginx.qcow2")
    before = {"gallery": gallery_state(smoke_env["home"] / "gallery"), "disk": sha256_file(disk),
              "backing": sha256_file(base_image.resolve())}
    t0 = time.monotonic()
    _, states = run_smoke_dag(smoke_env, disk, 25, "no_nginx")
    print(f"smoke test (no nginx): {time.monotonic() - t0:.0f}s")
    error = assert_failed_cleanly(smoke_env, disk, states, before)
    assert error.startswith("AirflowFailException: smoke test of debian12-nginx 2026.1128.200001 failed")
    assert "no good answer within 25s" in error and "no HTTP answer" in error
    assert sha256_file(base_image.resolve()) == before["backing"]


@pytest.fixture(scope="module")
def nginx_image(home) -> Path:
    """A real debian12-nginx disk: published by row 1, else built by row 2, else built now."""
    found = sorted((home / "gallery" / IMAGE).glob("*/disk.qcow2")) + sorted((home / "work" / IMAGE).glob("*/output/*.qcow2"))
    if found:
        return found[0]
    proc = subprocess.run(["airflow", "dags", "test", DAG_ID, "2026-11-22T02:00:00+00:00", "--conf",
                           '{"force_rebuild": true}'], capture_output=True,
                          text=True, env={**os.environ, "BAKERY_HOME": str(home), "TMPDIR": str(home / "tmp")},
                          timeout=1800, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    (disk,) = [d for d in (home / "gallery" / IMAGE).glob("*/disk.qcow2") if d.parent.name != "latest"]
    return disk


@pytest.mark.guarantee("smoke-test-fails")
def test_smoke_test_expecting_a_text_not_served_fails_and_publishes_nothing(smoke_env, nginx_image, monkeypatch):
    catalogue = yaml.safe_load((REPO / "include" / "catalogue.yaml").read_text())
    catalogue["images"][IMAGE]["smoke_test"]["expect_text"] = "bakery-canary-not-on-the-page"
    path = smoke_env["tmp"] / "catalogue.yaml"
    path.write_text(yaml.safe_dump(catalogue))
    monkeypatch.setenv("BAKERY_CATALOGUE", str(path))
    disk = overlay(nginx_image, smoke_env["tmp"] / "nginx.qcow2")
    before = {"gallery": gallery_state(smoke_env["home"] / "gallery"), "disk": sha256_file(disk),
              "backing": sha256_file(nginx_image)}
    t0 = time.monotonic()
    _, states = run_smoke_dag(smoke_env, disk, 150, "wrong_page")
    print(f"smoke test (wrong page): {time.monotonic() - t0:.0f}s")
    error = assert_failed_cleanly(smoke_env, disk, states, before)
    assert "expected HTTP 200 containing 'bakery-canary-not-on-the-page', got HTTP 200" in error, error
    assert "Welcome to nginx" in error  # the body excerpt
    assert sha256_file(nginx_image) == before["backing"]
