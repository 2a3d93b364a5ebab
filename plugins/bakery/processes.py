"""Find and stop the bakery's processes by identity, on psutil: the one way to stop a process.

Plain Python, no Airflow import. Other users run Packer and QEMU on the same machine, and pids are
reused, so a process is only ever named by its **identity**: pid and start time (psutil's
``Process`` carries both and refuses to signal a pid that now belongs to another process), a
process group the bakery started (``start_new_session``), or a token in its environment.

    stop(group=popen.pid, grace_seconds=60)   # a process group we started (Packer, QEMU)
    stop(tree(proc), grace_seconds=15)        # a verified process and its descendants

``stop`` is the standard provider's ``SubprocessHook.send_sigterm`` plus what a build needs on top:
SIGTERM, a bounded wait for the processes' own cleanup, SIGKILL for what is left, a bounded wait.

Start times are kept as seconds since boot (``start_time``), with the boot's id (``boot_id``),
so that a start time written to a file by one process can be checked by another, later, even if
the wall clock was stepped meanwhile (psutil's ``create_time()`` is wall-clock based).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterable

import psutil

Process = psutil.Process
Log = Callable[[str], None]

_POLL = 0.1  # seconds between two looks at what is still alive


def boot_id() -> str:
    """This boot's id: a start time recorded on another boot names no process of this one."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:  # psutil has no boot id
            return fh.read().strip()
    except OSError:
        return ""


def now() -> float:
    """Seconds since boot, on the clock process start times are measured with (``start_time``)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def start_time(proc: Process) -> float:
    """When ``proc`` started, in seconds since boot (rounded to the kernel's clock-tick resolution)."""
    return round(proc.create_time() - psutil.boot_time(), 3)


def age(proc: Process) -> float | None:
    """Seconds since ``proc`` started, or None when it is gone."""
    try:
        return max(0.0, now() - start_time(proc))
    except psutil.Error:
        return None


def alive(proc: Process) -> bool:
    """``proc`` still runs: the same process (pid and start time), not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find(pid: int | None, started: float | None = None) -> Process | None:
    """The live process ``pid``; with ``started`` (``start_time``), only if it is still that one."""
    if pid is None or pid <= 0:
        return None
    try:
        proc = Process(pid)
        if started is not None and start_time(proc) != round(started, 3):
            return None  # the pid now belongs to another process
    except psutil.Error:
        return None
    return proc if alive(proc) else None


def everything() -> list[Process]:
    """Every live process of the machine (to filter by command line, environment, group)."""
    return [p for p in psutil.process_iter() if alive(p)]


def group(pgid: int | None) -> list[Process]:
    """The live members of process group ``pgid`` (the processes of one ``start_new_session`` run)."""
    if not pgid:
        return []
    out = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(pid) == pgid and alive(proc := Process(pid)):
                out.append(proc)
    return out


def tree(proc: Process) -> list[Process]:
    """``proc`` and its live descendants (children of any of its threads included)."""
    try:
        return [p for p in [proc, *proc.children(recursive=True)] if alive(p)]
    except psutil.Error:
        return []


def environ_value(proc: Process, name: str) -> str | None:
    """``name`` in ``proc``'s environment (None when unset, the process is gone or not ours to read)."""
    try:
        return proc.environ().get(name)
    except psutil.Error:
        return None


def cmdline(proc: Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def with_env(name: str, value: str, among: Iterable[Process] | None = None) -> list[Process]:
    """The live processes (of ``among``, default all) whose environment has ``name=value``."""
    return [p for p in (everything() if among is None else among) if environ_value(p, name) == value]


def wait_gone(procs: Iterable[Process] = (), *, group: int | None = None, timeout: float) -> list[Process]:
    """Wait up to ``timeout`` seconds until none of ``procs`` and no member of ``group`` is alive.

    Returns what is still alive (empty: all gone). Polls rather than ``psutil.wait_procs``:
    ``wait_procs`` reaps a child of ours (waitpid), and its ``subprocess.Popen`` would then read
    exit code 0 (ECHILD) instead of the real one. A zombie counts as gone: it runs no more code.
    """
    procs = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in procs if alive(p)]
        left += [m for m in _members(group) if m not in left]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(_POLL)


def stop(
    procs: Iterable[Process] = (),
    *,
    group: int | None = None,
    grace_seconds: float,
    kill_seconds: float = 10,
    log: Log | None = None,
    what: str = "processes",
) -> str:
    """Stop ``procs`` (verified ``psutil.Process`` objects) and every member of process ``group``.

    SIGTERM, up to ``grace_seconds`` for them to finish (Packer cancels its build and its builders
    clean up; QEMU shuts down), then SIGKILL to what is left and up to ``kill_seconds`` more.
    ``group`` is signalled as a whole (``killpg``: it also reaches processes started meanwhile);
    only give a group the caller started or verified by its leader's identity. Returns ``"none"``
    (nothing was alive), ``"stopped"`` (gone after SIGTERM) or ``"killed"`` (SIGKILL was needed).
    """
    procs = [p for p in procs if alive(p)]
    if not procs and not _members(group):
        return "none"
    _signal(procs, group, signal.SIGTERM)
    left = wait_gone(procs, group=group, timeout=grace_seconds)
    if not left:
        return "stopped"
    if log is not None:
        where = f" and process group {group}" if group else ""
        log(f"{what} still running after {grace_seconds:g}s (pids {sorted(p.pid for p in left)}): "
            f"SIGKILL to them{where}")
    _signal(left, group, signal.SIGKILL)
    left = wait_gone(left, group=group, timeout=kill_seconds)
    if left and log is not None:
        log(f"{what}: pids {sorted(p.pid for p in left)} still there {kill_seconds:g}s after SIGKILL "
            "(uninterruptible sleep?)")
    return "killed"


def _members(pgid: int | None) -> list[Process]:
    return group(pgid) if pgid else []


def _signal(procs: list[Process], pgid: int | None, sig: int) -> None:
    """``sig`` to group ``pgid`` while it has members, and to each of ``procs`` outside it (once each:
    a second SIGTERM could mean "stop now, skip the cleanup" to some programs)."""
    if pgid and _members(pgid):
        # the group has live members, so its id cannot have been reused: it is the one we mean
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for p in procs:
        try:
            if pgid and os.getpgid(p.pid) == pgid:
                continue
            p.send_signal(sig)  # psutil checks the pid still names the same process first
        except (OSError, psutil.Error):
            pass
