"""Row 7 of issue #4: the janitor (local) with real leftovers.

Real leftovers under a private bakery home: an orphaned ``qemu-system-x86_64`` started by
``QemuVM`` (its owner SIGKILLed), a Packer run whose caller was SIGKILLed (the real packer
binary), an old work folder, stale ``.staging-*`` / ``.trash-*`` gallery entries, a stale
ephemeral-key folder; next to them young ones, a locked one and QEMUs the bakery did not start.
A dry run removes nothing and reports them; the real run removes exactly the old, unused ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from bakery import processes
from bakery.janitor import local_sweepers, sweep
from bakery.packer.leftovers import STATE_NAME, TOKEN_ENV, read_state
from bakery.record import BakeRecord
from bakery.targets.local import LocalTarget
from faultkit import REPO, TEMPLATES, alive, group_pids, name, py, python_script, start, wait_for, with_env

TTL = 10.0
IMAGE = "img"
POOL_IMAGE = "debian12-nginx"
V0, V1, V2, V3, V5, V6 = (f"2026.110{i}.200000" for i in (0, 1, 2, 3, 5, 6))
OLD = time.time() - 3 * 3600

G = pytest.mark.guarantee("janitor")
needs_tools = pytest.mark.needs_tools("qemu-system-x86_64", "packer")

QEMU_OWNER = """
import time
from bakery.qemu import QemuVM
vm = QemuVM(sys.argv[1], memory_mb=64, cpus=1, accelerator="tcg", extra_args=["-S"], name=sys.argv[2])
vm.start()
print(vm.pid, flush=True)
time.sleep(600)
"""

PACKER_OWNER = f"""
from bakery.packer.runner import PackerRunner
PackerRunner({str(TEMPLATES / 'streaming')!r}, variables={{"sleep_seconds": 600}}, work_dir=sys.argv[1],
             log=lambda l: print(l, flush=True)).build()
"""

LOCK_HOLDER = """
import time
from bakery.worklock import work_lock
with work_lock(sys.argv[1], "publish"):
    print("locked", flush=True)
    time.sleep(600)
"""


def age_tree(path: Path, when: float = OLD) -> None:
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.utime(os.path.join(root, n), (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)


def disk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return path


def orphaned_qemu_vm(tmp_path: Path, home: Path, disk_path: Path, name: str, reaper) -> int:
    """A QEMU started by QemuVM whose owner is then SIGKILLed: re-parented to init, still running."""
    log = tmp_path / f"owner-{name}.log"
    env = {**os.environ, "TMPDIR": str(home / "tmp")}
    owner = start(py(python_script(tmp_path / f"owner-{name}.py", QEMU_OWNER), str(disk_path), name), log, env=env)
    reaper.track(owner.pid)
    pid = int(wait_for(lambda: log.read_text().strip(), 60, "QemuVM to start"))
    reaper.track(pid)
    owner.kill()
    owner.wait(10)
    wait_for(lambda: psutil.Process(pid).ppid() == 1, 10, "the QEMU to be re-parented")
    return pid


def foreign_qemu(args: list[str], reaper) -> int:
    """A QEMU the bakery did not start (double fork: orphaned, like ours)."""
    out = subprocess.run(["sh", "-c", 'qemu-system-x86_64 "$@" >/dev/null 2>&1 & echo $!', "sh", *args],
                         capture_output=True, text=True, check=True, start_new_session=True)
    pid = int(out.stdout)
    reaper.track(pid)
    wait_for(lambda: name(pid).startswith("qemu-system"), 10, "the foreign QEMU")
    return pid


def age(pid: int) -> float:
    proc = processes.find(pid)
    return (processes.age(proc) if proc is not None else None) or 0.0


def by_id(report: dict) -> dict[str, dict]:
    return {i["id"]: i for i in report["items"]}


@G
@needs_tools
def test_janitor_dry_run_then_removal(tmp_path, reaper):
    home = tmp_path / "home"
    work, gallery, tmp = home / "work" / IMAGE, home / "gallery", home / "tmp"
    tmp.mkdir(parents=True)
    reaper.track_text(str(home))

    # --- old leftovers ---------------------------------------------------------------------------
    old_qemu = orphaned_qemu_vm(tmp_path, home, disk(work / V5 / "output" / "disk.qcow2"), "bakery-smoke-old", reaper)
    packer_log = tmp_path / "packer.log"
    owner = start(py(python_script(tmp_path / "packer_owner.py", PACKER_OWNER), str(work / V6)), packer_log,
                  env={**os.environ, "TMPDIR": str(tmp)})
    reaper.track(owner.pid)
    wait_for(lambda: "before the pause" in packer_log.read_text(), 60, "the Packer run")
    state = read_state(work / V6 / STATE_NAME)
    reaper.track_group(state.pgid)
    owner.kill()
    owner.wait(10)
    packer_pids = with_env(TOKEN_ENV, state.token)
    assert state.pid in packer_pids  # Packer survived its killed caller

    (work / V1 / "output").mkdir(parents=True)
    (work / V1 / "output" / "half.qcow2").write_bytes(b"x" * 4096)
    age_tree(work / V1)
    (work / V3).mkdir(parents=True)
    (work / V3 / "manifest.json").write_text("{}")
    holder_log = tmp_path / "holder.log"
    holder = start(py(python_script(tmp_path / "holder.py", LOCK_HOLDER), str(work / V3)), holder_log)
    reaper.track(holder.pid)
    wait_for(lambda: "locked" in holder_log.read_text(), 30, "the lock holder")
    age_tree(work / V3)

    target = LocalTarget(gallery)
    src = tmp_path / "v0.qcow2"
    src.write_bytes(b"published")
    target.publish(BakeRecord(image=IMAGE, version=V0, target="local", template_digest="sha256:t", dag_run_id="r0",
                              packer_run_uuid="u0", artifact_id=str(src),
                              smoke={"passed": True, "seconds": 1, "status": 200, "detail": "ok"}), print)
    dead_staging = gallery / IMAGE / ".staging-2026.1107.200000-dead0001"
    dead_trash = gallery / IMAGE / ".trash-2026.1009.200000-dead0002"
    for d in (dead_staging, dead_trash):
        d.mkdir()
        (d / "disk.qcow2").write_bytes(b"partial")
        age_tree(d)
    old_key = tmp / "bakery-key-dead"
    old_key.mkdir()
    (old_key / "id_ed25519").write_text("an ephemeral private key of a killed task")
    age_tree(old_key)

    # --- never ours ------------------------------------------------------------------------------
    elsewhere = disk(tmp_path / "elsewhere" / "disk.qcow2")
    base_args = ["-machine", "none", "-S", "-display", "none", "-monitor", "none", "-nodefaults"]
    not_marked = foreign_qemu(base_args + ["-name", "someones-vm", "-drive",
                                           f"file={gallery / IMAGE / V0 / 'disk.qcow2'},if=none,format=raw,readonly=on"], reaper)
    not_our_path = foreign_qemu(base_args + ["-name", "bakery-smoke-other-home", "-drive",
                                             f"file={elsewhere},if=none,format=qcow2,readonly=on"], reaper)

    # --- age the processes past the TTL, then make young ones ------------------------------------
    wait_for(lambda: min(age(old_qemu), age(state.pid)) > TTL + 1, 60, "the TTL to pass")
    young_qemu = orphaned_qemu_vm(tmp_path, home, disk(work / V2 / "output" / "disk.qcow2"), "bakery-smoke-young", reaper)
    young_staging = gallery / IMAGE / ".staging-2026.1108.200000-live0003"
    young_staging.mkdir()
    (young_staging / "disk.qcow2").write_bytes(b"copying")
    temp_dirs = {p.name: p for p in tmp.iterdir()}
    old_qemu_tmp = next(p for p in temp_dirs.values()
                        if processes.environ_value(psutil.Process(old_qemu), "TMPDIR") == str(p))
    packer_tmp = next(p for n, p in temp_dirs.items() if n.startswith("bakery-packer-"))
    age_tree(old_qemu_tmp)
    age_tree(packer_tmp)

    everything = [work / v for v in (V1, V2, V3, V5, V6)] + [dead_staging, dead_trash, young_staging, old_key,
                                                            old_qemu_tmp, packer_tmp]
    pids = [old_qemu, young_qemu, not_marked, not_our_path, *packer_pids]

    def sweepers():
        return local_sweepers(home, tmp_root=tmp, grace_seconds=20)

    # --- dry run ---------------------------------------------------------------------------------
    t0 = time.monotonic()
    dry = sweep(sweepers(), ttl_seconds=TTL, dry_run=True, log=print)
    assert time.monotonic() - t0 < 10
    json.dumps(dry)  # JSON-able
    assert all(p.exists() for p in everything), "the dry run removed something"
    assert all(alive(p) for p in pids), "the dry run stopped a process"
    items = by_id(dry)
    assert items[f"pid {old_qemu}"]["action"] == "would remove"
    assert items[f"pid {young_qemu}"]["action"].startswith("kept: younger than the TTL")
    assert f"pid {not_marked}" not in items and f"pid {not_our_path}" not in items
    (packer_item,) = [i for i in dry["items"] if i["kind"] == "packer-run"]
    assert packer_item["action"] == "would remove" and str(state.pid) in packer_item["id"]
    assert items[str(work / V1)]["action"] == "would remove"
    assert items[str(work / V5)]["action"] == "would remove"
    assert items[str(work / V2)]["action"].startswith("kept: younger")
    assert items[str(work / V3)]["action"].startswith("kept: in use")
    assert items[str(work / V6)]["action"].startswith("kept: in use")  # its Packer is alive (dry run)
    assert items[str(dead_staging)]["action"] == "would remove"
    assert items[str(dead_trash)]["action"] == "would remove"
    assert items[str(young_staging)]["action"].startswith("kept: younger")
    assert items[str(old_key)]["action"] == "would remove"
    assert items[str(old_qemu_tmp)]["action"].startswith("kept: in use")  # the old QEMU still uses it
    assert items[str(packer_tmp)]["action"].startswith("kept: in use")

    # --- real run --------------------------------------------------------------------------------
    real = sweep(sweepers(), ttl_seconds=TTL, dry_run=False, log=print)
    json.dumps(real)
    assert real["errors"] == 0, real
    assert not alive(old_qemu)
    assert with_env(TOKEN_ENV, state.token) == [] and group_pids(state.pgid) == []
    for p in (work / V1, work / V5, work / V6, dead_staging, dead_trash, old_key, old_qemu_tmp, packer_tmp):
        assert not p.exists(), f"{p} was not removed"
    for p in (work / V2, work / V3, young_staging):
        assert p.exists(), f"{p} was removed"
    assert alive(young_qemu) and alive(not_marked) and alive(not_our_path)
    assert holder.poll() is None
    assert [v.version for v in target.list_versions(IMAGE)] == [V0] and target.latest(IMAGE) == V0
    assert (gallery / IMAGE / V0 / "disk.qcow2").read_bytes() == b"published"
    kinds = {i["id"]: i["action"] for i in real["items"]}
    assert kinds[f"pid {old_qemu}"].startswith("removed")


# -- the DAG ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def janitor_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "janitor.py"))
    assert bag.import_errors == {}
    return bag.dags["bakery_janitor"]


@G
def test_janitor_dag_shape(janitor_dag):
    from bakery.operators.janitor import LOCAL_SWEEPERS, JanitorOperator

    dag = janitor_dag
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.schedule == "@hourly" and dag.timetable.expression in ("@hourly", "0 * * * *")
    task = dag.get_task("sweep")
    assert isinstance(task, JanitorOperator) and task.sweepers == [LOCAL_SWEEPERS]
    assert type(dag.get_task("pool_gc")).__name__ == "PoolGcOperator"
    # plus one Azure sweep per connection of the catalogue's azure images (tests/faults/test_janitor_azure.py)
    assert all(t.task_id.startswith("sweep_azure_") for t in dag.tasks if t.task_id not in ("sweep", "pool_gc"))
    assert dag.params["ttl_hours"] >= 1 and dag.params["dry_run"] in (True, False)
    ttl = dag.params.get_param("ttl_hours").schema
    assert ttl["type"] == "integer" and ttl["minimum"] == 1
    assert dag.params.get_param("dry_run").schema["type"] == "boolean"


@G
def test_janitor_dag_rejects_a_ttl_under_one_hour(janitor_dag):
    from airflow.sdk.definitions.param import ParamsDict

    params = ParamsDict({k: janitor_dag.params.get_param(k) for k in janitor_dag.params})
    params["ttl_hours"] = 1
    params.validate()
    with pytest.raises(Exception, match="ttl_hours"):
        params["ttl_hours"] = 0


def dags_test(home: Path, conf: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "BAKERY_HOME": str(home), "TMPDIR": str(home / "tmp")}
    return subprocess.run(["airflow", "dags", "test", "bakery_janitor", "--conf", json.dumps(conf)],
                          capture_output=True, text=True, env=env, timeout=600, check=False)


@G
def test_janitor_dag_run_dry_then_real(airflow_db, tmp_path):
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    image_dir = home / "gallery" / IMAGE
    stale = image_dir / ".staging-2026.1107.200000-dead0001"
    young = image_dir / ".staging-2026.1108.200000-live0002"
    old_work = home / "work" / IMAGE / V1
    for d in (stale, young, old_work):
        d.mkdir(parents=True)
        (d / "disk.qcow2").write_bytes(b"x")
    age_tree(stale, time.time() - 2 * 3600)
    age_tree(old_work, time.time() - 2 * 3600)
    # the package pool (of an image of the shipped catalogue: its retention is 90 days): a version pruned 100 days ago (past the catalogue's 90-day retention) whose
    # package nothing else uses, and a published version's index and package
    from datetime import datetime, timedelta, timezone

    from bakery.packages.pool import PackagePool, PooledPackage, PoolIndex
    pool = PackagePool(home / "pool")
    blobs = {}
    for name in ("gone", "kept"):
        tmp = pool.new_tmp()
        tmp.write_bytes(name.encode() * 1000)
        blobs[name] = pool.put_file(tmp)
        old = time.time() - 2 * 3600
        os.utime(pool.blob_path(blobs[name][0]), (old, old))
    for version, name in (("2026.801.200000", "gone"), ("2026.1101.200000", "kept")):
        pool.commit_index(PoolIndex(POOL_IMAGE, version, "2026-08-01T02:00:00+00:00", None, {}, "", [
            PooledPackage(name, "1", "all", blobs[name][0], blobs[name][1], f"{name}.deb")]))
    pool.mark_pruned(POOL_IMAGE, "2026.801.200000", datetime.now(timezone.utc) - timedelta(days=100))

    dry = dags_test(home, {"ttl_hours": 1, "dry_run": True})
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-4000:]
    assert stale.exists() and young.exists() and old_work.exists()
    assert pool.index(POOL_IMAGE, "2026.801.200000") is not None and pool.has_blob(blobs["gone"][0])
    assert "package pool" in dry.stdout + dry.stderr and "would free" in dry.stdout + dry.stderr
    real = dags_test(home, {"ttl_hours": 1, "dry_run": False})
    assert real.returncode == 0, (real.stdout + real.stderr)[-4000:]
    assert not stale.exists() and not old_work.exists()
    assert young.exists()
    assert pool.index(POOL_IMAGE, "2026.801.200000") is None and not pool.has_blob(blobs["gone"][0])
    assert pool.index(POOL_IMAGE, "2026.1101.200000") is not None and pool.has_blob(blobs["kept"][0])
    assert f"indexes past retention: {POOL_IMAGE}/2026.801.200000" in real.stdout + real.stderr
