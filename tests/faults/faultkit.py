"""Helpers of the failure-guarantee tests (issue #4): processes are found by identity (pid + start
time, process group, a token in the environment, our own folder on the command line), never by a
global name: other developers run Packer and QEMU on this machine too."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil
from bakery import processes

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


def pids(procs: Iterable[psutil.Process]) -> list[int]:
    return sorted(p.pid for p in procs)


def group_pids(pgid: int) -> list[int]:
    """The live members of process group ``pgid``."""
    return pids(processes.group(pgid))


def descendants(pid: int) -> list[int]:
    proc = processes.find(pid)
    return pids(processes.tree(proc)[1:]) if proc is not None else []


def alive(pid: int) -> bool:
    return processes.find(pid) is not None


def name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return ""


def mentioning(text: str) -> list[int]:
    """Live processes (not us) whose command line contains ``text``."""
    me = os.getpid()
    return [p.pid for p in processes.everything() if p.pid != me and text in " ".join(processes.cmdline(p))]


def with_env(name: str, value: str) -> list[int]:
    """Live processes whose environment has ``name=value`` (e.g. a Packer run's token)."""
    return pids(processes.with_env(name, value))


def qemu_mentioning(text: str) -> list[int]:
    return [p for p in mentioning(text) if name(p).startswith("qemu-system")]


def identities(pids: Iterable[int]) -> dict[int, psutil.Process]:
    """pid -> psutil.Process (which carries the start time: the identity ``alive_of`` checks)."""
    out = {}
    for p in pids:
        proc = processes.find(p)
        if proc is not None:
            out[p] = proc
    return out


def alive_of(pids: Iterable[int], ids: dict[int, psutil.Process] | None = None) -> list[int]:
    """Which of ``pids`` are still alive (and, with ``ids`` from ``identities``, still the same processes)."""
    if ids is None:
        return [p for p in pids if alive(p)]
    return [p for p in pids if p in ids and processes.alive(ids[p])]


class Reaper:
    """Collects every process a test starts or observes; kills the survivors at the end."""

    def __init__(self) -> None:
        self.procs: dict[int, psutil.Process] = {}
        self.groups: set[int] = set()
        self.texts: list[str] = []

    def track(self, *pids: int) -> None:
        for p in pids:
            if p not in self.procs:
                proc = processes.find(p)
                if proc is not None:
                    self.procs[p] = proc

    def track_group(self, pgid: int) -> None:
        self.groups.add(pgid)
        self.track(*group_pids(pgid))

    def track_text(self, text: str) -> None:
        """Also kill, at the end, any process whose command line contains ``text`` (our tmp folder)."""
        self.texts.append(text)

    def survivors(self) -> list[int]:
        for g in self.groups:
            self.track(*group_pids(g))
        for t in self.texts:
            self.track(*mentioning(t))
        return [p for p, proc in self.procs.items() if processes.alive(proc)]

    def cleanup(self) -> list[int]:
        """Test hygiene: what a failed test left running goes at once (only if still the same process)."""
        left = self.survivors()
        processes.stop([self.procs[p] for p in left], grace_seconds=0)
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
