"""PackerRunner with the REAL packer binary (and QEMU) on the templates in tests/fixtures/templates/.

Processes are always checked by pid / process group, never by name: other Packer or QEMU runs
may share the machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from bakery import processes
from bakery.packer.runner import PackerError, PackerRunner

G_STOP = pytest.mark.guarantee("packer-stopped-mid-build")


G_SECRET = pytest.mark.guarantee("secret-nowhere")


REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "fixtures" / "templates"

pytestmark = pytest.mark.needs_tools("packer")
needs_qemu = pytest.mark.needs_tools("qemu-system-x86_64", "qemu-img")


class Recorder:
    """A ``log`` callable that keeps (monotonic time, line)."""

    def __init__(self, on_line=None):
        self.lines: list[tuple[float, str]] = []
        self.on_line = on_line

    def __call__(self, line: str) -> None:
        self.lines.append((time.monotonic(), line))
        if self.on_line:
            self.on_line(line)

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first(self, needle: str) -> float:
        return next(t for t, line in self.lines if needle in line)


def group_members(pgid: int | None) -> list[int]:
    return sorted(p.pid for p in processes.group(pgid))


def comm(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return ""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def kill_group(pgid: int | None) -> None:
    """Test hygiene: if a test failed half-way, do not leave its Packer/QEMU running."""
    processes.stop(group=pgid, grace_seconds=0)


def blank_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    return disk


def resetting_disk(tmp_path: Path) -> Path:
    """A disk whose boot sector waits ~4 s (BIOS int 15h/86h) then resets the machine (port 0x64)."""
    code = bytes([0xB4, 0x86, 0xB9, 0x3D, 0x00, 0xBA, 0x00, 0x09, 0xCD, 0x15, 0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD])
    raw = tmp_path / "reset.raw"
    raw.write_bytes((code.ljust(510, b"\0") + b"\x55\xaa").ljust(1 << 20, b"\0"))
    disk = tmp_path / "reset.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(disk)], check=True)
    return disk


# -- success -----------------------------------------------------------------------------------


def test_build_success_hcl2_null(tmp_path):
    manifest = tmp_path / "manifest.json"
    log = Recorder()
    runner = PackerRunner(
        TEMPLATES / "null_ok",
        variables={"greeting": "hi, there", "repeat": 2, "manifest_path": str(manifest)},
        log=log,
    )
    result = runner.build()
    assert result.ok and result.exit_code == 0
    assert result.builds == {"null.example": "finished"}
    assert [a.to_dict() for a in result.unique_artifacts()] == [
        {"build": "null.example", "builder_id": "fnoeding.null", "id": "Null", "files": []}
    ]
    # typed variables reached Packer through the var-file (a number, a string with a comma)
    assert "null.example: hi, there, world 1" in log.text
    assert "null.example: hi, there, world 2" in log.text
    # our run's uuid, read from Packer's environment, is the one the manifest recorded
    assert result.run_uuid and runner.last_run_uuid == result.run_uuid
    entry = runner.manifest_entry(manifest)
    assert entry["packer_run_uuid"] == result.run_uuid
    assert json.loads(manifest.read_text())["last_run_uuid"] == result.run_uuid
    # a second run appends to the manifest: we still get OUR entry
    first_uuid = result.run_uuid
    second = runner.build()
    assert second.run_uuid != first_uuid
    assert runner.manifest_entry(manifest)["packer_run_uuid"] == second.run_uuid
    assert len(json.loads(manifest.read_text())["builds"]) == 2


@needs_qemu
def test_build_success_qemu_artifact_files(tmp_path):
    out = tmp_path / "out"
    work = tmp_path / "work"
    work.mkdir()
    log = Recorder()
    runner = PackerRunner(
        TEMPLATES / "qemu_boot",
        variables={"disk_image": str(resetting_disk(tmp_path)), "output_directory": str(out)},
        log=log,
        cwd=work,
    )
    result = runner.build()
    (art,) = result.artifacts
    assert (art.build, art.builder_id, art.id) == ("qemu.reset", "transcend.qemu", "VM")
    assert art.files == [str(out / "reset.qcow2")]
    assert (out / "reset.qcow2").is_file()
    assert f"artifact of qemu.reset: VM (transcend.qemu) files: {out / 'reset.qcow2'}" in log.text
    assert group_members(runner._pgid) == []
    assert list(work.iterdir()) == []  # Packer 1.6.6 would have made ./packer_cache here


def test_build_success_legacy_json_template():
    log = Recorder()
    runner = PackerRunner(TEMPLATES / "legacy_ok.json", variables={"greeting": "howdy"}, log=log)
    result = runner.build()
    assert [a.build for a in result.artifacts] == ["legacy-null"]
    assert "legacy-null: howdy, from a legacy JSON template" in log.text
    assert "-var-file=" in log.text and "bakery-variables.json" in log.text


def test_validate_success_and_version():
    log = Recorder()
    runner = PackerRunner(TEMPLATES / "null_ok", variables={"repeat": 3}, log=log)
    assert runner.validate().exit_code == 0
    assert runner.version() == "1.6.6"
    assert "is valid" in log.text


def test_init_is_skipped_on_packer_1_6_even_with_required_plugins(tmp_path):
    (tmp_path / "t.pkr.hcl").write_text(
        'packer {\n  required_plugins {\n    qemu = {\n      version = ">= 1.0.0"\n'
        '      source  = "github.com/hashicorp/qemu"\n    }\n  }\n}\n'
    )
    log = Recorder()
    assert PackerRunner(tmp_path, log=log).init() is None
    assert "Packer 1.6.6 has no `init`" in log.text
    log2 = Recorder()
    assert PackerRunner(TEMPLATES / "null_ok", log=log2).init() is None
    assert "declares no required_plugins" in log2.text


# -- failures ----------------------------------------------------------------------------------


def test_validate_error_quotes_packers_message():
    log = Recorder()
    runner = PackerRunner(TEMPLATES / "validate_error", log=log)
    with pytest.raises(PackerError) as info:
        runner.validate()
    msg = str(info.value)
    assert msg.startswith(f"packer validate of {TEMPLATES / 'validate_error'} failed with exit code 1:")
    assert "Error: Unsupported argument" in msg
    assert "validate_error.pkr.hcl line 4:" in msg
    assert 'An argument named "no_such_option" is not expected here.' in msg
    assert info.value.result.exit_code == 1
    assert 'An argument named "no_such_option"' in log.text  # streamed to the log as well


def test_failing_build_quotes_the_provisioner_failure():
    log = Recorder()
    runner = PackerRunner(TEMPLATES / "build_fail", log=log)
    with pytest.raises(PackerError) as info:
        runner.build()
    msg = str(info.value)
    assert "packer build of" in msg and "failed with exit code 1" in msg
    assert "null.failing: Script exited with non-zero exit status: 3" in msg
    assert "provisioner says: disk full" in msg
    result = info.value.result
    assert result.artifacts == [] and result.builds == {"null.failing": "errored"}
    assert "null.failing: about to fail" in log.text


def test_exit_0_without_artifact_is_a_failure():
    runner = PackerRunner(TEMPLATES / "null_ok", log=Recorder())
    with pytest.raises(PackerError, match=r"exited 0 but reported no artifact \(-only=null.nothing"):
        runner.build(only=["null.nothing"])
    assert runner.last_result.exit_code == 0


def test_packer_crashing_mid_build_is_reported_as_a_crash_not_as_the_provisioners_stderr(tmp_path):
    """Packer's core dies (SIGQUIT: Go's crash dump, which panicwrap swallows) while a provisioner
    runs with ``set -x``: exit 2, no error line. The failure must not read as "+ apt-get clean";
    what the dead Packer left in its group (plugins, sh, sleep) is stopped."""
    (tmp_path / "crash.pkr.hcl").write_text(
        'source "null" "crash" {\n  communicator = "none"\n}\n\n'
        'build {\n  sources = ["source.null.crash"]\n\n'
        '  provisioner "shell-local" {\n'
        '    inline = ["set -x", "apt-get clean 2>/dev/null || true", "sleep 120"]\n  }\n}\n'
    )
    core: list[int] = []
    runner: PackerRunner

    def on_line(line: str) -> None:
        if "+ sleep 120" in line and not core:
            wrapper = psutil.Process(runner._pgid)
            (real,) = [c for c in wrapper.children() if "PACKER_RUN_UUID" in c.environ()]
            core.append(real.pid)
            os.kill(real.pid, signal.SIGQUIT)

    log = Recorder(on_line)
    runner = PackerRunner(tmp_path, log=log, cwd=tmp_path)
    t0 = time.monotonic()
    with pytest.raises(PackerError) as info:
        runner.build()
    assert core and time.monotonic() - t0 < 60
    head, _, context = str(info.value).partition("last error output before that:")
    assert info.value.result.exit_code == 2 and info.value.result.errors == []
    assert "apt-get clean" not in head
    if info.value.result.raw_lines:  # a Packer that prints its crash: quoted first
        assert info.value.result.raw_lines[0] in head
    else:
        assert "Packer exited with code 2 without saying why" in head
    assert "+ apt-get clean" in context
    assert "Packer exited but left processes" in log.text  # the provisioner's sh and sleep
    assert group_members(runner._pgid) == []


def test_missing_packer_binary_is_a_clear_error(tmp_path):
    runner = PackerRunner(TEMPLATES / "null_ok", packer_bin=str(tmp_path / "no-packer"), log=Recorder())
    with pytest.raises(PackerError, match="was not found: install Packer or set packer_bin"):
        runner.build()


# -- streaming ---------------------------------------------------------------------------------


def test_lines_reach_the_log_as_they_arrive():
    seen_while_running: dict[str, bool] = {}
    runner: PackerRunner

    def on_line(line: str) -> None:
        if "before the pause" in line:
            proc = runner._proc
            seen_while_running["before"] = proc is not None and proc.poll() is None

    log = Recorder(on_line)
    runner = PackerRunner(TEMPLATES / "streaming", variables={"sleep_seconds": 2}, log=log)
    runner.build()
    assert seen_while_running == {"before": True}
    gap = log.first("after the pause") - log.first("before the pause")
    assert gap >= 1.5, f"the first line was only logged {gap:.2f}s before the second: not streamed"


# -- secrets -----------------------------------------------------------------------------------

SECRET = "tok-4f9a-SECRET-b7c1"


def _snapshot(runner: PackerRunner, snap: dict) -> None:
    pgid = runner._pgid
    members = group_members(pgid)
    snap["cmdlines"] = [" ".join(processes.cmdline(psutil.Process(p))) for p in members]
    snap["var_file"] = Path(runner.var_file_path).read_text()
    snap["var_file_path"] = runner.var_file_path
    snap["packer_env"] = [f"{k}={v}" for k, v in psutil.Process(pgid).environ().items()]


@G_SECRET
def test_sensitive_value_never_in_log_argv_or_var_file():
    snap: dict = {}
    runner: PackerRunner

    def on_line(line: str) -> None:
        if "region=" in line and not snap:
            _snapshot(runner, snap)

    log = Recorder(on_line)
    runner = PackerRunner(
        TEMPLATES / "sensitive",
        variables={"region": "eu-west, 1"},
        sensitive_variables={"api_token": SECRET},
        log=log,
    )
    runner.build()
    assert snap, "the provisioner's first line never arrived"
    # the route it does take: Packer's environment only
    assert f"PKR_VAR_api_token={SECRET}" in snap["packer_env"]
    # argv of every process in Packer's group while it ran (packer, plugins, sh, sleep)
    assert len(snap["cmdlines"]) >= 3
    assert any("packer" in c for c in snap["cmdlines"])
    assert not [c for c in snap["cmdlines"] if SECRET in c]
    # the var-file holds the plain variables only, and is gone after the run
    assert json.loads(snap["var_file"]) == {"region": "eu-west, 1"}
    assert SECRET not in snap["var_file"]
    assert not Path(snap["var_file_path"]).exists()
    # the provisioner printed it three times (stdout, stderr, after a comma): all masked
    assert SECRET not in log.text
    assert "region=eu-west, 1 token=***" in log.text
    assert "token on stderr: ***" in log.text
    assert "token again, with a comma: ***, done" in log.text


@G_SECRET
def test_sensitive_value_never_in_a_failure_message():
    runner = PackerRunner(
        TEMPLATES / "sensitive",
        variables={"sleep_seconds": 0, "exit_code": 7},
        sensitive_variables={"api_token": SECRET},
        log=Recorder(),
    )
    with pytest.raises(PackerError) as info:
        runner.build()
    msg = str(info.value)
    assert "non-zero exit status: 7" in msg
    assert "token on stderr: ***" in msg
    assert SECRET not in msg + repr(info.value.result)


# -- stopping ----------------------------------------------------------------------------------


@G_STOP
def test_an_exception_during_the_run_stops_packers_group():
    """What Airflow's execution_timeout does: AirflowTaskTimeout raised (by SIGALRM) in the loop."""

    class Timeout(Exception):
        pass

    def on_alarm(signum, frame):
        raise Timeout("execution_timeout")

    pgids: list[int] = []
    runner: PackerRunner

    def on_line(line: str) -> None:
        if "before the pause" in line and not pgids:
            pgids.append(runner._pgid)
            signal.setitimer(signal.ITIMER_REAL, 1.0)

    log = Recorder(on_line)
    runner = PackerRunner(TEMPLATES / "streaming", variables={"sleep_seconds": 120}, log=log)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        t0 = time.monotonic()
        with pytest.raises(Timeout):
            runner.build()
        elapsed = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert pgids and elapsed < 30
    assert group_members(pgids[0]) == []  # no packer, plugin, sh or sleep left
    assert "stopping Packer: SIGTERM to its process group" in log.text
    assert "Cancelling build after receiving terminated" in log.text  # Packer's own handling


@G_STOP
def test_terminate_kills_the_group_when_packer_does_not_finish_in_grace(tmp_path):
    (tmp_path / "stubborn.pkr.hcl").write_text(
        'source "null" "stubborn" {\n  communicator = "none"\n}\n\n'
        'build {\n  sources = ["source.null.stubborn"]\n\n'
        '  provisioner "shell-local" {\n'
        '    inline = ["trap \'\' TERM", "echo ignoring TERM", "sleep 300"]\n  }\n}\n'
    )
    log = Recorder()
    runner = PackerRunner(tmp_path, log=log, kill_grace_seconds=3)
    outcome: dict = {}

    def run():
        try:
            runner.build()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: "ignoring TERM" in log.text, 60, "the provisioner to start")
        pgid = runner._pgid
        sleepers = wait_for(lambda: [p for p in group_members(pgid) if comm(p) == "sleep"], 10, "sleep")
        t0 = time.monotonic()
        runner.terminate()
        elapsed = time.monotonic() - t0
    finally:
        runner.terminate()
        thread.join(60)
        kill_group(runner._pgid or None)
    assert not thread.is_alive()
    assert 2.5 <= elapsed < 20
    assert "SIGKILL to them and process group" in log.text
    assert all(gone(p) for p in sleepers)
    assert group_members(pgid) == []
    assert isinstance(outcome.get("error"), PackerError)
    assert "was stopped" in str(outcome["error"])


@G_STOP
@needs_qemu
def test_terminate_mid_qemu_build_leaves_no_process_and_no_output(tmp_path):
    out = tmp_path / "out"
    log = Recorder()
    runner = PackerRunner(
        TEMPLATES / "qemu_wait_ssh",
        variables={"disk_image": str(blank_disk(tmp_path)), "output_directory": str(out)},
        log=log,
        kill_grace_seconds=60,
    )
    outcome: dict = {}

    def run():
        try:
            runner.build()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: runner._pgid, 30, "packer to start")
        pgid = runner._pgid
        wait_for(lambda: "Waiting for SSH" in log.text, 180, "Packer to wait for SSH")
        # (only now: Packer restarts QEMU when a port it picked was taken meanwhile by another QEMU)
        qemu = [p for p in group_members(pgid) if comm(p).startswith("qemu-system")]
        assert out.is_dir()  # the build really has something to clean up
        pids = group_members(pgid)
        assert pgid in pids and len(qemu) == 1 and qemu[0] in pids and len(pids) >= 4  # packer x2, plugin, qemu
        runner.terminate()
    finally:
        runner.terminate()
        thread.join(120)
        kill_group(runner._pgid or None)
    assert not thread.is_alive()
    assert all(gone(p) for p in pids)
    assert group_members(pgid) == []
    assert not out.exists()
    error = outcome["error"]
    assert isinstance(error, PackerError) and error.result.interrupted
    assert "Build was cancelled." in str(error)
    assert "Deleting output directory" in log.text  # Packer's own cleanup, not our SIGKILL
    assert "SIGKILL" not in log.text


@G_STOP
@needs_qemu
def test_sigterm_to_the_runners_process_stops_packer_first(tmp_path):
    out = tmp_path / "out"
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'plugins')!r})\n"
        "from bakery.packer.runner import PackerRunner\n"
        f"runner = PackerRunner({str(TEMPLATES / 'qemu_wait_ssh')!r}, variables={{'disk_image': "
        f"{str(blank_disk(tmp_path))!r}, 'output_directory': {str(out)!r}}},\n"
        "                      log=lambda line: print(line, flush=True))\n"
        "runner.build()\n"
    )
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(child.stdout.readline, "")), daemon=True)
    reader.start()
    packer = None
    try:
        wait_for(lambda: any("Waiting for SSH" in line for line in lines), 120, "Packer to wait for SSH")
        (packer,) = [p.pid for p in psutil.Process(child.pid).children()]
        pids = group_members(packer)
        assert any(comm(p).startswith("qemu-system") for p in pids)
        os.kill(child.pid, signal.SIGTERM)
        rc = child.wait(90)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        kill_group(packer)
    reader.join(5)
    text = "".join(lines)
    assert rc == 128 + signal.SIGTERM, text[-2000:]
    assert "received SIGTERM: stopping Packer first" in text
    assert "Cancelling build after receiving terminated" in text
    assert all(gone(p) for p in pids)
    assert group_members(packer) == []
    assert not out.exists()


def _runner_script(tmp_path: Path, out: Path) -> Path:
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO / 'plugins')!r})\n"
        "from bakery.packer.runner import PackerRunner\n"
        f"runner = PackerRunner({str(TEMPLATES / 'qemu_wait_ssh')!r}, variables={{'disk_image': "
        f"{str(blank_disk(tmp_path))!r}, 'output_directory': {str(out)!r}}},\n"
        "                      log=lambda line: print(line, flush=True))\n"
        "runner.build()\n"
    )
    return script


@G_STOP
@needs_qemu
def test_packer_finishes_its_cleanup_even_if_the_runner_process_was_killed(tmp_path):
    """Airflow SIGKILLs a task ~5 s after SIGTERM: Packer, in its own session, must still clean up.

    With Packer's stdout on a pipe to the dead process, its next line ("Cancelling build...")
    would kill it with SIGPIPE and leave the output folder (a cloud resource group, on Azure).
    """
    out = tmp_path / "out"
    child = subprocess.Popen(
        [sys.executable, str(_runner_script(tmp_path, out))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(child.stdout.readline, "")), daemon=True)
    reader.start()
    packer = None
    try:
        wait_for(lambda: any("Waiting for SSH" in line for line in lines), 120, "Packer to wait for SSH")
        (packer,) = [p.pid for p in psutil.Process(child.pid).children()]
        pids = group_members(packer)
        assert out.is_dir()
        child.kill()  # the runner's process dies without a word
        child.wait(30)
        assert group_members(packer), "Packer must outlive its caller (own session)"
        os.killpg(packer, signal.SIGTERM)  # e.g. a later terminate, or an operator's kill
        wait_for(lambda: not group_members(packer), 60, "Packer to finish its cleanup")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        kill_group(packer)
    assert all(gone(p) for p in pids)
    assert not out.exists(), "Packer died before deleting its output directory (SIGPIPE?)"
    # a killed runner cannot remove its private folder; it holds the plain var-file only
    (var_file,) = re.findall(r"-var-file=(\S+)", "".join(lines))
    leftover = Path(var_file).parent
    assert [p.name for p in leftover.iterdir()] == ["bakery-variables.pkrvars.json"]
    shutil.rmtree(leftover)
