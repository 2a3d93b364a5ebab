"""Helpers of the failure-guarantee tests (issue #4): processes are found by identity (pid + start
time, process group, a token in the environment, our own folder on the command line), never by a
global name: other developers run Packer and QEMU on this machine too."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from bakery import procfs

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "tests" / "fixtures" / "templates"
PLUGINS = REPO / "plugins"


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def mentioning(text: str) -> list[int]:
    """Live processes (not us) whose command line contains ``text``."""
    me = os.getpid()
    return [p for p in procfs.pids() if p != me and procfs.alive(p) and text in " ".join(procfs.cmdline(p))]


def with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment has ``name=value`` (e.g. a Packer run's token)."""
    return [p for p in procfs.pids() if procfs.alive(p) and procfs.environ_value(p, name) == value]


def qemu_mentioning(text: str) -> list[int]:
    return [p for p in mentioning(text) if procfs.comm(p).startswith("qemu-system")]


def alive_of(pids: Iterable[int], ticks: dict[int, int | None] | None = None) -> list[int]:
    """Which of ``pids`` are still alive (and, with ``ticks``, still the same processes)."""
    out = []
    for p in pids:
        if procfs.alive(p) and (ticks is None or procfs.start_ticks(p) == ticks.get(p)):
            out.append(p)
    return out


def kill_pids(pids: Iterable[int], ticks: dict[int, int | None]) -> None:
    """Test hygiene: SIGKILL what a failed test left running (only if still the same process)."""
    for p in pids:
        if procfs.alive(p) and procfs.start_ticks(p) == ticks.get(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


class Reaper:
    """Collects every process a test starts or observes; kills the survivors at the end."""

    def __init__(self) -> None:
        self.ticks: dict[int, int | None] = {}
        self.groups: set[int] = set()
        self.texts: list[str] = []

    def track(self, *pids: int) -> None:
        for p in pids:
            if p not in self.ticks:
                self.ticks[p] = procfs.start_ticks(p)

    def track_group(self, pgid: int) -> None:
        self.groups.add(pgid)
        self.track(*procfs.group_members(pgid))

    def track_text(self, text: str) -> None:
        """Also kill, at the end, any process whose command line contains ``text`` (our tmp folder)."""
        self.texts.append(text)

    def survivors(self) -> list[int]:
        for g in self.groups:
            self.track(*procfs.group_members(g))
        for t in self.texts:
            self.track(*mentioning(t))
        return alive_of(self.ticks, self.ticks)

    def cleanup(self) -> list[int]:
        left = self.survivors()
        kill_pids(left, self.ticks)
        deadline = time.monotonic() + 10
        while alive_of(left, self.ticks) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left


def python_script(path: Path, body: str) -> Path:
    path.write_text(f"import sys\nsys.path.insert(0, {str(PLUGINS)!r})\n" + body)
    return path


def start(argv: list[str], log: Path, env: dict | None = None, **kw) -> subprocess.Popen:
    fh = open(log, "ab")  # noqa: SIM115 - closed by the OS when the child and we are done
    return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env if env is not None else os.environ.copy(), **kw)


def py(script: Path, *args: str) -> list[str]:
    return [sys.executable, str(script), *args]
