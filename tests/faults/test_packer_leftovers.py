"""Row 2 of issue #4 (mechanism, with the real packer binary and no QEMU): a build task killed hard
leaves its Packer running (own session); the retry stops it before starting its own Packer.

The slow variant with a real QEMU build through Airflow is in test_bake_faults.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from bakery import processes
from bakery.packer.leftovers import (
    STATE_NAME,
    TOKEN_ENV,
    PackerState,
    live_processes,
    read_state,
    stop_leftover,
    write_state,
)
from bakery.packer.runner import PackerRunner
from faultkit import TEMPLATES, alive_of, group_pids, identities, py, python_script, start, wait_for, with_env

needs_packer = pytest.mark.needs_tools("packer")

G_KILLED = pytest.mark.guarantee("build-killed-then-retried")
TICKS = os.sysconf("SC_CLK_TCK")
G_REUSED = pytest.mark.guarantee("build-killed-then-retried")

SLEEPER = """
import os, signal, subprocess, sys, time
if sys.argv[1] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "300"])  # a member of the group, like Packer's plugins
print("ready", flush=True)
time.sleep(300)
"""


def spawn_group(tmp_path: Path, token: str | None, mode: str = "plain") -> subprocess.Popen:
    """A process group leader (own session) with a child, optionally carrying a Packer token."""
    script = tmp_path / f"sleeper-{uuid.uuid4().hex[:6]}.py"
    script.write_text(SLEEPER)
    env = os.environ.copy()
    if token:
        env[TOKEN_ENV] = token
    log = tmp_path / f"{script.stem}.log"
    proc = start([sys.executable, str(script), mode], log, env=env, start_new_session=True)
    wait_for(lambda: "ready" in log.read_text(), 30, "the sleeper to start")
    return proc


def record(path: Path, proc: subprocess.Popen, token: str, **over) -> PackerState:
    state = PackerState.new("tmpl", "build")
    state.token = token
    state.pid = state.pgid = proc.pid
    state.start_time = processes.start_time(processes.Process(proc.pid))
    for k, v in over.items():
        setattr(state, k, v)
    write_state(path, state)
    return state


def finish(proc: subprocess.Popen) -> None:
    processes.stop(group=proc.pid, grace_seconds=0)  # our child, not reaped yet: the group is its
    proc.wait(10)


@G_KILLED
@pytest.mark.parametrize("mode, action", [("plain", "stopped"), ("ignore-term", "killed")])
def test_a_recorded_live_group_is_stopped_sigterm_then_sigkill(tmp_path, mode, action):
    token = uuid.uuid4().hex
    proc = spawn_group(tmp_path, token, mode)
    try:
        members = group_pids(proc.pid)
        assert len(members) == 2
        state_file = tmp_path / STATE_NAME
        record(state_file, proc, token)
        t0 = time.monotonic()
        report = stop_leftover(state_file, grace_seconds=2, log=print)
        elapsed = time.monotonic() - t0
        assert report["action"] == action and sorted(report["pids"]) == sorted(members)
        assert group_pids(proc.pid) == []
        assert not state_file.exists()
        # bounded: SIGTERM honoured at once; ignored -> SIGKILL right after the 2 s grace
        assert elapsed < 2 if action == "stopped" else 2 <= elapsed < 8
    finally:
        finish(proc)


@G_REUSED
@pytest.mark.parametrize("case", ["other start time", "other boot", "leader gone, members without token"])
def test_a_pid_that_is_not_the_recorded_packer_is_never_signalled(tmp_path, case):
    token = uuid.uuid4().hex
    proc = spawn_group(tmp_path, None if case.startswith("leader gone") else "not-" + token)
    try:
        members = group_pids(proc.pid)
        state_file = tmp_path / STATE_NAME
        if case == "other start time":  # the pid was reused by an unrelated process
            record(state_file, proc, token, start_time=processes.start_time(processes.Process(proc.pid)) - 10)
        elif case == "other boot":
            record(state_file, proc, token, boot_id="00000000-0000-0000-0000-000000000000")
        else:  # recorded leader pid is not alive; the group members carry no (or another) token
            record(state_file, proc, token, pid=2**22 + 17)
        assert live_processes(read_state(state_file)) == []
        report = stop_leftover(state_file, grace_seconds=1, log=print)
        assert report["action"] == "none" and report["pids"] == []
        assert group_pids(proc.pid) == members, "an unrelated process was signalled"
        assert proc.poll() is None
        assert not state_file.exists()  # the stale record is dropped
    finally:
        finish(proc)


@G_KILLED
def test_killed_before_the_pid_was_recorded_packer_is_found_by_its_token(tmp_path):
    token = uuid.uuid4().hex
    ours = spawn_group(tmp_path, token)
    other = spawn_group(tmp_path, uuid.uuid4().hex)
    try:
        state = PackerState.new("tmpl", "build")
        state.token = token  # written before Popen: pid still None
        write_state(tmp_path / STATE_NAME, state)
        report = stop_leftover(tmp_path / STATE_NAME, grace_seconds=2, log=print)
        assert report["action"] == "stopped"
        assert group_pids(ours.pid) == []
        assert len(group_pids(other.pid)) == 2, "a process with another token was signalled"
    finally:
        finish(ours)
        finish(other)


def runner_script(tmp_path: Path, work: Path, sleep: int) -> Path:
    return python_script(
        tmp_path / "build.py",
        "from bakery.packer.runner import PackerRunner\n"
        f"r = PackerRunner({str(TEMPLATES / 'streaming')!r}, variables={{'sleep_seconds': {sleep}}},\n"
        f"                 work_dir={str(work)!r}, log=lambda l: print(l, flush=True))\n"
        "r.build()\n"
        "print('BUILD DONE', flush=True)\n",
    )


class Watcher(threading.Thread):
    """Samples, every few ms, whether the old Packer group is alive and whether a new Packer run
    has been recorded; remembers when (in seconds since boot, like process start times)."""

    def __init__(self, state_file: Path, old_pids: list[int], old_ids: dict, old_token: str):
        super().__init__(daemon=True)
        self.state_file, self.old_pids, self.old_ids, self.old_token = state_file, old_pids, old_ids, old_token
        self.last_old_alive: float | None = None
        self.new_state: PackerState | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t = int(processes.now() * TICKS) / TICKS  # at the resolution of start times, like them rounded down
            if alive_of(self.old_pids, self.old_ids):
                self.last_old_alive = t
            st = read_state(self.state_file)
            if self.new_state is None and st is not None and st.token != self.old_token and st.pid:
                self.new_state = st
            time.sleep(0.005)


@G_KILLED
@needs_packer
def test_runner_killed_hard_then_retry_stops_the_leftover_first_and_builds(tmp_path, reaper):
    work = tmp_path / "work"
    log = tmp_path / "first.log"
    # its private temp folder (var-file) would outlive it: keep it in the test's folder
    first = start(py(runner_script(tmp_path, work, 600)), log, env={**os.environ, "TMPDIR": str(tmp_path)})
    reaper.track(first.pid)
    state_file = work / STATE_NAME
    wait_for(lambda: "before the pause" in log.read_text(), 60, "the first build to run its provisioner")
    old = read_state(state_file)
    assert old is not None and old.pid
    reaper.track_group(old.pgid)
    old_pids = group_pids(old.pgid)
    old_ids = identities(old_pids)
    assert len(old_pids) >= 3  # packer (x2), provisioner plugin, sh, sleep
    first.kill()  # the task dies without a word
    first.wait(10)
    time.sleep(1)
    # the collision risk is real: Packer survived its caller and is still "building"
    assert with_env(TOKEN_ENV, old.token) == alive_of(old_pids)
    assert alive_of([old.pid])
    assert state_file.exists()

    watcher = Watcher(state_file, old_pids, old_ids, old.token)
    watcher.start()
    lines: list[str] = []
    retry = PackerRunner(TEMPLATES / "streaming", variables={"sleep_seconds": 1}, work_dir=work,
                         log=lines.append, kill_grace_seconds=30)
    try:
        result = retry.build()
    finally:
        watcher.stop.set()
        watcher.join(5)
    assert result.ok and result.unique_artifacts()
    assert alive_of(old_pids, old_ids) == []
    assert watcher.new_state is not None, "the retry's Packer was never recorded"
    assert watcher.last_old_alive is not None
    assert watcher.new_state.start_time >= watcher.last_old_alive, (
        "the retry started its Packer while the leftover group was still alive"
    )
    assert not state_file.exists()  # the retry's own record is gone with its Packer
    assert with_env(TOKEN_ENV, old.token) == []


@G_KILLED
@needs_packer
def test_stale_output_folder_inside_the_work_folder_is_removed_before_the_build(tmp_path):
    work = tmp_path / "work"
    out = work / "output"
    out.mkdir(parents=True)
    (out / "half-written.qcow2").write_bytes(b"x" * 1024)
    outside = tmp_path / "not-ours"
    outside.mkdir()
    lines: list[str] = []
    runner = PackerRunner(TEMPLATES / "null_ok", variables={"output_directory": str(out)}, work_dir=work, log=lines.append)
    report = runner.clear_leftovers()
    assert report["removed_output"] == str(out.resolve()) and not out.exists()
    # an output_directory outside the work folder is never removed by us
    runner2 = PackerRunner(TEMPLATES / "null_ok", variables={"output_directory": str(outside)}, work_dir=work)
    runner2.clear_leftovers()
    assert outside.is_dir()
