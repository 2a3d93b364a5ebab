"""The janitor: finds what dead bakes left behind on this machine and removes it after a TTL.

Plain Python, no Airflow import (the ``bakery_janitor`` DAG calls ``sweep`` through
``bakery.operators.janitor.JanitorOperator``).

Design: a list of **sweepers**. Each one knows one kind of leftover and yields ``Finding``s (what
it is, how old, how to tell whether something still uses it, how to remove it); ``sweep`` first
collects the findings of all sweepers (ages are taken then, before anything is touched), then
applies the policy the same way to all of them, in sweeper order:

- younger than the TTL: kept (it may belong to a bake in progress);
- in use (a live owner, a held lock): kept, whatever its age. This is asked again right before
  removing, so that what only a leftover removed just before used (the temporary folder of an
  orphaned QEMU, the work folder of a leftover Packer) goes in the same sweep; a dry run reports
  such things as in use;
- otherwise: reported as ``would remove`` in a dry run, removed otherwise.

It returns a JSON-able report. The local sweepers (``local_sweepers``):

==================  ==========================================================================
``packer``          Packer runs recorded in ``<work>/<image>/<version>/packer.pid.json`` that are
                    still alive while no build holds the work folder's lock (the task that
                    started them was killed hard): stopped like ``terminate()`` does (SIGTERM,
                    bounded wait, SIGKILL), verified by start time / token, never a reused pid.
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

Another target adds its own sweepers (e.g. Azure resource groups of dead smoke tests): write a
factory returning a list of objects with ``name`` and ``find()`` and append its import path to
the operator's ``sweepers``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bakery import procfs
from bakery.packer.leftovers import (
    STATE_NAME,
    live_processes,
    read_state,
    stop_leftover,
)
from bakery.paths import gallery_root, work_root
from bakery.qemu import MARKER_PREFIX
from bakery.worklock import is_locked, try_work_lock

Log = Callable[[str], None]

TEMP_PREFIXES = ("bakery-packer-", "bakery-key-", "bakery-qemu-")


class Busy(Exception):
    """Raised by a Finding's remove() when its owner took it back meanwhile: skip, do not fail."""


@dataclass
class Finding:
    sweeper: str
    kind: str  # process | packer-run | work-folder | gallery-entry | temp-folder
    id: str  # pid / path: what an operator would look for
    age_seconds: float
    detail: str = ""
    # why it must be kept whatever its age, or None when nothing uses it; asked at discovery
    # and again right before removal
    in_use: Callable[[], str | None] | None = field(default=None, repr=False)
    remove: Callable[[], str | None] | None = field(default=None, repr=False)


class Sweeper(Protocol):
    name: str

    def find(self) -> Iterable[Finding]: ...


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


def _owner_alive(pid: int) -> str | None:
    parent = procfs.ppid(pid)
    if parent is None or parent <= 1 or not procfs.alive(parent):
        return None
    return f"its parent process {parent} ({procfs.comm(parent)}) is alive: not orphaned"


# -- sweepers ------------------------------------------------------------------------------------


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
            pids = live_processes(state) if state is not None else []
            if not pids:
                continue  # a record of a finished run: harmless, goes with its work folder
            assert state is not None
            leader_age = procfs.age_seconds(state.pid) if state.pid in pids else None
            age = leader_age if leader_age is not None else _age(state_file, now)
            yield Finding(
                self.name, "packer-run", f"pids {pids}", age,
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

    def ours(self, pid: int) -> bool:
        if not procfs.comm(pid).startswith("qemu-system"):
            return False
        argv = procfs.cmdline(pid)
        marked = any(a == "-name" and i + 1 < len(argv) and argv[i + 1].startswith(MARKER_PREFIX)
                     for i, a in enumerate(argv))
        text = " ".join(argv)
        return marked and any(root in text for root in self.roots)

    def find(self) -> Iterable[Finding]:
        for pid in procfs.pids():
            if not procfs.alive(pid) or not self.ours(pid):
                continue
            ticks = procfs.start_ticks(pid)
            age = procfs.age_seconds(pid) or 0.0
            argv = procfs.cmdline(pid)
            name = argv[argv.index("-name") + 1] if "-name" in argv else "?"
            yield Finding(
                self.name, "process", f"pid {pid}", age, f"QEMU {name}: {' '.join(argv)[:300]}",
                in_use=lambda p=pid: _owner_alive(p), remove=lambda p=pid, t=ticks: self._stop(p, t),
            )

    def _stop(self, pid: int, ticks: int | None) -> str:
        def same() -> bool:
            return procfs.alive(pid) and procfs.start_ticks(pid) == ticks

        if not same():
            return "already gone"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        while same() and time.monotonic() < deadline:
            time.sleep(0.1)
        if same():
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while same() and time.monotonic() < deadline:
                time.sleep(0.1)
            return "killed (SIGKILL)"
        return "stopped (SIGTERM)"


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
        for pid in procfs.pids():
            if not procfs.alive(pid):
                continue
            if needle in " ".join(procfs.cmdline(pid)) or procfs.environ_value(pid, "TMPDIR") == needle:
                return f"process {pid} ({procfs.comm(pid)}) refers to it"
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


# -- the policy ----------------------------------------------------------------------------------


def sweep(
    sweepers: Iterable[Sweeper],
    *,
    ttl_seconds: float,
    dry_run: bool = True,
    log: Log = print,
) -> dict[str, Any]:
    """Apply the TTL policy to what every sweeper finds; return a JSON-able report.

    ``dry_run`` (the default) removes nothing and reports what would be removed.
    """
    if ttl_seconds <= 0:
        raise ValueError(f"the janitor's TTL must be positive, got {ttl_seconds}")
    started = datetime.now(UTC)
    items: list[dict[str, Any]] = []
    errors = 0
    found: list[tuple[Finding, str | None]] = []
    for sweeper in sweepers:
        try:
            for f in sweeper.find():
                found.append((f, f.in_use() if f.in_use else None))
        except Exception as e:  # noqa: BLE001 - one broken sweeper must not stop the others
            errors += 1
            items.append({"sweeper": sweeper.name, "kind": "sweeper", "id": sweeper.name, "age_seconds": 0,
                          "detail": "", "action": f"failed: {type(e).__name__}: {e}"})
            log(f"janitor: sweeper {sweeper.name} failed: {e}")
    for f, in_use in found:
        if f.age_seconds < ttl_seconds:
            action = f"kept: younger than the TTL ({f.age_seconds:.0f}s < {ttl_seconds:.0f}s)"
        elif dry_run:
            action = f"kept: in use ({in_use})" if in_use else "would remove"
        else:
            try:
                in_use = f.in_use() if f.in_use else None  # again: an earlier removal may have freed it
                if in_use:
                    action = f"kept: in use ({in_use})"
                else:
                    note = f.remove() if f.remove is not None else "no remover"
                    action = "removed" + (f": {note}" if note else "")
            except Busy as e:
                action = f"kept: in use ({e})"
            except Exception as e:  # noqa: BLE001 - report it, go on with the rest
                errors += 1
                action = f"failed: {type(e).__name__}: {e}"
        items.append({"sweeper": f.sweeper, "kind": f.kind, "id": f.id, "age_seconds": round(f.age_seconds, 1),
                      "detail": f.detail, "action": action})
        if not action.startswith("kept: younger"):
            log(f"janitor: {f.sweeper} {f.kind} {f.id} (age {f.age_seconds:.0f}s): {action}")
    counts: dict[str, int] = {}
    for it in items:
        key = it["action"].split(":")[0].split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    report = {
        "dry_run": dry_run,
        "ttl_seconds": ttl_seconds,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "items": items,
        "counts": counts,
        "errors": errors,
    }
    log(f"janitor ({'dry run' if dry_run else 'removing'}, TTL {ttl_seconds:.0f}s): {counts or 'nothing found'}")
    return report
