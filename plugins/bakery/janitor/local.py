"""The janitor's local sweepers: what dead bakes left on this machine (see ``bakery.janitor``).

The local sweepers (``local_sweepers``), in the order they run:

==================  ==========================================================================
``packer``          Packer runs recorded in ``<work>/<image>/<version>/packer.pid.json`` that are
                    still alive while no build holds the work folder's lock (the task that
                    started them was killed hard): stopped like ``terminate()`` does
                    (``bakery.processes.stop``), verified by start time / token, never a reused pid.
``qemu``            QEMU processes the bakery started (``-name bakery-...`` from ``bakery.qemu``
                    **and** one of the bakery's folders on the command line) whose owner is gone
                    (re-parented to init). A QEMU without both marks is never touched.
``work``            version work folders (``$BAKERY_HOME/work/<image>/<version>``) not modified
                    for the TTL and not locked by a build / smoke test / publish.
``gallery``         ``.staging-*`` / ``.trash-*`` / ``.latest-*`` entries of the local gallery
                    left by a killed publish or prune; removed under the image lock (skipped
                    while a publish or prune holds it).
``temp``            the bakery's private temporary folders (``bakery-packer-*`` var-files,
                    ``bakery-key-*`` ephemeral SSH keys, ``bakery-qemu-*`` snapshot overlays) of
                    killed tasks, unless a live process still refers to them.
==================  ==========================================================================

Processes are found and stopped by identity with ``bakery.processes``, never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import psutil

from bakery import processes
from bakery.janitor.policy import Busy, Finding, Sweeper
from bakery.packer.leftovers import (
    STATE_NAME,
    live_processes,
    read_state,
    stop_leftover,
)
from bakery.paths import gallery_root, work_root
from bakery.qemu import MARKER_PREFIX
from bakery.worklock import is_locked, try_work_lock

TEMP_PREFIXES = ("bakery-packer-", "bakery-key-", "bakery-qemu-")
BOOKKEEPING = {".lock"}  # touched by the lock itself: not a sign of life


def _age(path: Path, now: float) -> float:
    """Seconds since the newest file in ``path`` last changed (its own time when it has no file).

    Folder times are left out on purpose: removing a file (Packer deleting its output, a state
    file going) changes them without meaning the folder is in use.
    """
    st = path.lstat()
    if not path.is_dir() or path.is_symlink():
        return max(0.0, now - st.st_mtime)
    newest = None
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name in BOOKKEEPING:
                continue
            with contextlib.suppress(OSError):
                m = os.lstat(os.path.join(root, name)).st_mtime
                newest = m if newest is None else max(newest, m)
    return max(0.0, now - (newest if newest is not None else st.st_mtime))


def _owner_alive(proc: processes.Process) -> str | None:
    try:
        parent = proc.parent()
        if parent is None or parent.pid <= 1 or not processes.alive(parent):
            return None
        return f"its parent process {parent.pid} ({parent.name()}) is alive: not orphaned"
    except psutil.Error:
        return None


class PackerRunSweeper:
    """Live Packer runs recorded in work folders whose build is gone (no lock holder)."""

    name = "packer"

    def __init__(self, work: Path, *, grace_seconds: float = 60) -> None:
        self.work = Path(work)
        self.grace_seconds = grace_seconds

    def find(self) -> Iterable[Finding]:
        now = time.time()
        for state_file in sorted(self.work.glob(f"*/*/{STATE_NAME}")):
            state = read_state(state_file)
            wd = state_file.parent
            procs = live_processes(state) if state is not None else []
            if not procs:
                continue  # a record of a finished run: harmless, goes with its work folder
            assert state is not None
            leader = next((p for p in procs if p.pid == state.pid), None)
            leader_age = processes.age(leader) if leader is not None else None
            age = leader_age if leader_age is not None else _age(state_file, now)
            yield Finding(
                self.name, "packer-run", f"pids {[p.pid for p in procs]}", age,
                f"Packer {state.command} of {state.template} started {state.started}, recorded in {state_file}",
                in_use=lambda w=wd: "a build holds the work folder's lock" if is_locked(w) else None,
                remove=lambda p=state_file: self._stop(p),
            )

    def _stop(self, state_file: Path) -> str:
        with try_work_lock(state_file.parent, "janitor") as got:
            if not got:
                raise Busy("a build took the work folder's lock")
            # the state file stays (harmless once nothing is alive): its age dates the work folder
            return stop_leftover(state_file, grace_seconds=self.grace_seconds, log=lambda m: None, forget=False)["action"]


class QemuSweeper:
    """Orphaned QEMU processes with the bakery's ``-name bakery-...`` and one of its folders."""

    name = "qemu"

    def __init__(self, roots: Sequence[Path], *, grace_seconds: float = 15) -> None:
        self.roots = [str(Path(r).resolve()).rstrip("/") + "/" for r in roots]
        self.grace_seconds = grace_seconds

    def ours(self, proc: processes.Process) -> bool:
        try:
            if not proc.name().startswith("qemu-system"):
                return False
        except psutil.Error:
            return False
        argv = processes.cmdline(proc)
        marked = any(a == "-name" and i + 1 < len(argv) and argv[i + 1].startswith(MARKER_PREFIX)
                     for i, a in enumerate(argv))
        text = " ".join(argv)
        return marked and any(root in text for root in self.roots)

    def find(self) -> Iterable[Finding]:
        for proc in processes.everything():
            if not self.ours(proc):
                continue
            argv = processes.cmdline(proc)
            name = argv[argv.index("-name") + 1] if "-name" in argv else "?"
            yield Finding(
                self.name, "process", f"pid {proc.pid}", processes.age(proc) or 0.0,
                f"QEMU {name}: {' '.join(argv)[:300]}",
                in_use=lambda p=proc: _owner_alive(p), remove=lambda p=proc: self._stop(p),
            )

    def _stop(self, proc: processes.Process) -> str:
        # proc carries its start time: a pid reused since the sweep found it is never signalled
        action = processes.stop(processes.tree(proc), grace_seconds=self.grace_seconds)
        return {"none": "already gone", "stopped": "stopped (SIGTERM)"}.get(action, "killed (after SIGTERM was ignored)")


class WorkFolderSweeper:
    """Version work folders untouched for the TTL and not locked."""

    name = "work"

    def __init__(self, work: Path) -> None:
        self.work = Path(work)

    def find(self) -> Iterable[Finding]:
        now = time.time()
        if not self.work.is_dir():
            return
        for image_dir in sorted(p for p in self.work.iterdir() if p.is_dir() and not p.is_symlink()):
            for wd in sorted(p for p in image_dir.iterdir() if p.is_dir() and not p.is_symlink()):
                yield Finding(self.name, "work-folder", str(wd), _age(wd, now),
                              in_use=lambda p=wd: self._in_use(p), remove=lambda p=wd: self._remove(p))

    @staticmethod
    def _in_use(wd: Path) -> str | None:
        if is_locked(wd):
            return "a build, smoke test or publish holds its lock"
        state = read_state(wd / STATE_NAME)
        if state is not None and live_processes(state):
            return "a Packer run recorded in it is still alive (the packer sweeper stops it first)"
        return None

    @staticmethod
    def _remove(wd: Path) -> str | None:
        with try_work_lock(wd, "janitor") as got:
            if not got:
                raise Busy("a build, smoke test or publish took its lock")
            state = read_state(wd / STATE_NAME)
            if state is not None and live_processes(state):
                raise Busy("a Packer run recorded in it is still alive")
            shutil.rmtree(wd)
        with contextlib.suppress(OSError):
            wd.parent.rmdir()  # the image's folder, when it was the last version in it
        return None


class GallerySweeper:
    """``.staging-*`` / ``.trash-*`` / ``.latest-*`` entries of the local gallery."""

    name = "gallery"

    def __init__(self, gallery: Path) -> None:
        from bakery.targets.local import LocalTarget

        self.target = LocalTarget(gallery)

    def find(self) -> Iterable[Finding]:
        now = time.time()
        root = self.target.gallery
        if not root.is_dir():
            return
        for image_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
            for entry in self.target.stale_entries(image_dir):
                with contextlib.suppress(FileNotFoundError):
                    yield Finding(self.name, "gallery-entry", str(entry), _age(entry, now),
                                  "left by an interrupted publish or prune",
                                  remove=lambda i=image_dir.name, e=entry: self._remove(i, e))

    def _remove(self, image: str, entry: Path) -> str | None:
        with self.target.try_locked(image) as image_dir:
            if image_dir is None:
                raise Busy("a publish or prune of the image holds its lock")
            if entry.exists() or entry.is_symlink():
                self.target.remove_entry(entry)
        return None


class TempSweeper:
    """The bakery's private temporary folders left by killed tasks."""

    name = "temp"

    def __init__(self, tmp_root: Path | None = None, prefixes: Sequence[str] = TEMP_PREFIXES) -> None:
        self.tmp_root = Path(tmp_root or tempfile.gettempdir())
        self.prefixes = tuple(prefixes)

    @staticmethod
    def _referenced(path: Path) -> str | None:
        needle = str(path)
        for proc in processes.everything():
            if needle in " ".join(processes.cmdline(proc)) or processes.environ_value(proc, "TMPDIR") == needle:
                with contextlib.suppress(psutil.Error):
                    return f"process {proc.pid} ({proc.name()}) refers to it"
                return f"process {proc.pid} refers to it"
        return None

    def find(self) -> Iterable[Finding]:
        now = time.time()
        if not self.tmp_root.is_dir():
            return
        for p in sorted(self.tmp_root.iterdir()):
            if p.name.startswith(self.prefixes) and p.is_dir() and not p.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    yield Finding(self.name, "temp-folder", str(p), _age(p, now),
                                  in_use=lambda d=p: self._referenced(d), remove=lambda d=p: shutil.rmtree(d))


def local_sweepers(
    home: Path | None = None,
    *,
    gallery: Path | None = None,
    tmp_root: Path | None = None,
    grace_seconds: float = 60,
) -> list[Sweeper]:
    """The sweepers of the local target, in the order they must run (Packer first)."""
    work = Path(home) / "work" if home is not None else work_root()
    gallery = Path(gallery) if gallery is not None else (Path(home) / "gallery" if home is not None else gallery_root())
    return [
        PackerRunSweeper(work, grace_seconds=grace_seconds),
        QemuSweeper([work, gallery]),
        WorkFolderSweeper(work),
        GallerySweeper(gallery),
        TempSweeper(tmp_root),
    ]
