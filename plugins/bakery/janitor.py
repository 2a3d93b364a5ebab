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

The Azure sweeper (``AzureSweeper``, one per connection and subscription of the catalogue's azure
images) finds what carries the bakery's tags (``managed_by=image-bakery``) and is older than the TTL
by its ``created_at`` tag (else ARM's ``createdTime``; of unknown age: kept and reported):

==================  ==========================================================================
``smoke-test``      a smoke-test VM and its NIC, public IP, NSG and OS disk (tags ``purpose=smoke-test``,
                    ``smoke_id``) in the images' smoke resource groups: deleted together, VM first,
                    like the teardown does (``AzureTarget.delete_smoke_group``)
``managed-image``   managed images in the images' ``managed_image_resource_group`` that are the source of
                    no gallery image version of the catalogue's galleries (an unpublished bake); never
                    one tagged ``pinned=true`` or of an image with ``keep_failed_image``; checked again
                    right before the delete
``packer-group``    Packer's temporary resource groups ``pkr-Resource-Group-*`` of the catalogue's images
                    (tags ``managed_by``, ``image``; age from ``created_at`` or the resources in it)
==================  ==========================================================================

Whatever the TTL, nothing younger than the longest a bake of those images may still use it (build
timeout + smoke-test timeout + 1 h) is removed: a short TTL cannot pull a build's group from under it.

Another target adds its own sweepers: write a factory returning a list of objects with ``name``
and ``find()`` and append its import path to the operator's ``sweepers``.
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
    kind: str  # process | packer-run | work-folder | gallery-entry | temp-folder | smoke-test | managed-image | ...
    id: str  # pid / path / resource id: what an operator would look for
    age_seconds: float | None  # None: unknown (then it is never removed)
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
        if f.age_seconds is None:
            action = "kept: age unknown (no created_at tag, no creation time): delete it by hand if nothing uses it"
        elif f.age_seconds < ttl_seconds:
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
        age = None if f.age_seconds is None else round(f.age_seconds, 1)
        items.append({"sweeper": f.sweeper, "kind": f.kind, "id": f.id, "age_seconds": age,
                      "detail": f.detail, "action": action})
        if not action.startswith("kept: younger"):
            log(f"janitor: {f.sweeper} {f.kind} {f.id} (age {'?' if age is None else f'{age:.0f}'}s): {action}")
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


# -- Azure ---------------------------------------------------------------------------------------

PACKER_GROUP_PREFIX = "pkr-resource-group-"


def _epoch(value: Any) -> float | None:
    """An ISO-8601 time (a ``created_at`` tag, ARM's ``createdTime``) or datetime as epoch seconds."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _tags(obj: Any) -> dict[str, str]:
    return dict(getattr(obj, "tags", None) or {})


def _bake_of(tags: dict[str, str]) -> str:
    """``rhel9-nginx 2026.1128.200000 (DAG run ...)`` from a resource's tags, as far as they say."""
    what = " ".join(t for t in (tags.get("image"), tags.get("version")) if t) or "an unknown bake"
    return what + (f" (DAG run {tags['dag_run_id']})" if tags.get("dag_run_id") else "")


class AzureSweeper:
    """Azure leftovers of dead bakes of the catalogue images ``specs`` (one connection, one subscription).

    ``clients``: ``bakery.azure_clients.AzureClients`` or a zero-argument factory of them. Only what
    carries ``managed_by=image-bakery`` is ever considered; see the module doc for what and how.
    """

    def __init__(self, specs: Sequence[Any], clients: Any, *, name: str = "azure",
                 now: Callable[[], float] = time.time, log: Log = lambda m: None) -> None:
        from bakery.targets.azure import AzureTarget

        self.specs = [s for s in specs if getattr(s, "azure", None) is not None]
        if not self.specs:
            raise ValueError("the Azure sweeper needs at least one azure image of the catalogue")
        self.name = name
        self.now = now
        self.log = log
        # whatever the TTL: nothing younger than the longest a bake of these images may still use it
        # (its build timeout, its smoke test's timeout, an hour for the rest)
        self.floor_seconds = max(s.build_timeout_minutes * 60 + s.smoke_test.timeout_seconds for s in self.specs) + 3600
        self._target = AzureTarget(self.specs[0], clients)
        self._target_of = AzureTarget

    @property
    def az(self) -> Any:
        return self._target.az

    def _maybe_running(self, age: float | None) -> Callable[[], str | None]:
        def in_use() -> str | None:
            if age is not None and age < self.floor_seconds:
                return (f"a bake may still be using it: {age:.0f}s old, and a bake of these images may run "
                        f"{self.floor_seconds:.0f}s (build timeout + smoke-test timeout + 1 h)")
            return None

        return in_use

    def close(self) -> None:
        self._target.close()

    def find(self) -> Iterable[Finding]:
        now = self.now()
        yield from self._smoke_groups(now)
        yield from self._managed_images(now)
        yield from self._packer_groups(now)

    # --- smoke tests -------------------------------------------------------------------------------
    def _listed(self, rg: str, **kwargs: Any) -> list[Any]:
        from bakery.targets.azure import _is_not_found

        try:
            return list(self.az.resource.resources.list_by_resource_group(rg, **kwargs))
        except Exception as exc:
            if _is_not_found(exc):
                return []  # the resource group is not there: nothing of ours in it either
            raise

    def _smoke_groups(self, now: float) -> Iterable[Finding]:
        from bakery.targets.azure import MANAGED_BY

        for rg in sorted({s.azure.smoke_test.resource_group for s in self.specs}):
            groups: dict[str, list[Any]] = {}
            for res in self._listed(rg, filter="tagName eq 'purpose' and tagValue eq 'smoke-test'"):
                tags = _tags(res)
                if tags.get("managed_by") == MANAGED_BY and tags.get("purpose") == "smoke-test" and tags.get("smoke_id"):
                    groups.setdefault(tags["smoke_id"], []).append(res)
            for smoke_id, members in sorted(groups.items()):
                born = [t for t in (_epoch(_tags(r).get("created_at")) for r in members) if t is not None]
                tags = _tags(members[0])
                what = ", ".join(sorted(f"{str(r.type).split('/')[-1]}/{r.name}" for r in members))
                age = now - min(born) if born else None
                yield Finding(
                    self.name, "smoke-test", f"{rg}/{smoke_id}", age,
                    f"smoke test of {_bake_of(tags)}: {what} (and its OS disk)",
                    in_use=self._maybe_running(age),
                    remove=lambda rg=rg, smoke_id=smoke_id: self._remove_smoke(rg, smoke_id),
                )

    def _remove_smoke(self, rg: str, smoke_id: str) -> str:
        deleted = self._target.delete_smoke_group(rg, smoke_id, self.log)
        return f"deleted {', '.join(deleted)}" if deleted else "already gone"

    # --- managed images ----------------------------------------------------------------------------
    def _gallery_sources(self) -> set[str]:
        """Source image ids (lower case) of every version of the catalogue's gallery image definitions."""
        sources: set[str] = set()
        seen: set[tuple[str, str, str]] = set()
        for spec in self.specs:
            g = spec.azure.gallery
            key = (g.resource_group.lower(), g.name.lower(), g.image_definition.lower())
            if key in seen:
                continue
            seen.add(key)
            target = self._target_of(spec, self.az)
            sources.update(f.source_id.lower() for f in target._facts() if f.source_id)
        return sources

    def _managed_images(self, now: float) -> Iterable[Finding]:
        from bakery.targets.azure import MANAGED_BY, TAG_PINNED

        sources = self._gallery_sources()  # a failure here fails the sweeper: never guess "unpublished"
        keep_failed = {s.name for s in self.specs if s.azure.keep_failed_image}
        for rg in sorted({s.azure.managed_image_resource_group for s in self.specs}):
            for res in self._listed(rg, filter="resourceType eq 'Microsoft.Compute/images'", expand="createdTime"):
                tags = _tags(res)
                if tags.get("managed_by") != MANAGED_BY or str(res.id).lower() in sources:
                    continue
                born = _epoch(tags.get("created_at")) or _epoch(getattr(res, "created_time", None))
                age = None if born is None else now - born
                yield Finding(
                    self.name, "managed-image", str(res.id), age,
                    f"managed image {rg}/{res.name} of {_bake_of(tags)}: the source of no gallery image version",
                    in_use=self._image_in_use(res, tags, keep_failed, TAG_PINNED, sources, self._maybe_running(age)),
                    remove=lambda rg=rg, name=res.name: self._remove_image(rg, name),
                )

    def _image_in_use(self, res: Any, tags: dict[str, str], keep_failed: set[str], pinned_tag: str,
                      sources: set[str], running: Callable[[], str | None]) -> Callable[[], str | None]:
        """Why the image must stay; asked when found (against ``sources``) and again right before its
        delete (against the galleries as they are then: a publish may have started meanwhile)."""
        asked = []

        def in_use() -> str | None:
            if tags.get(pinned_tag, "").strip().lower() == "true":
                return f"tagged {pinned_tag}=true"
            if tags.get("image") in keep_failed:
                return f"image {tags.get('image')} has azure.keep_failed_image in the catalogue"
            if why := running():
                return why
            current = sources if not asked else self._gallery_sources()
            asked.append(True)
            if str(res.id).lower() in current:
                return "the source of a gallery image version (published meanwhile)"
            return None

        return in_use

    def _remove_image(self, rg: str, name: str) -> str | None:
        from bakery.targets.azure import _is_not_found

        try:
            self.az.compute.images.begin_delete(rg, name).result()
        except Exception as exc:
            if _is_not_found(exc):
                return "already gone"
            raise
        return None

    # --- Packer's temporary resource groups --------------------------------------------------------
    def _packer_groups(self, now: float) -> Iterable[Finding]:
        from bakery.targets.azure import MANAGED_BY

        images = {s.name for s in self.specs}
        for group in self.az.resource.resource_groups.list():
            tags = _tags(group)
            if not str(group.name).lower().startswith(PACKER_GROUP_PREFIX) or tags.get("managed_by") != MANAGED_BY:
                continue
            if tags.get("image") not in images:
                continue  # another connection's (or a removed image's) build: not this sweeper's to judge
            born = _epoch(tags.get("created_at"))
            if born is None:  # a Packer of an older template: the oldest resource in it dates the group
                times = [_epoch(getattr(r, "created_time", None)) for r in self._listed(group.name, expand="createdTime")]
                born = min((t for t in times if t is not None), default=None)
            age = None if born is None else now - born
            yield Finding(
                self.name, "packer-group", str(group.name), age,
                f"Packer's temporary resource group of {_bake_of(tags)}",
                in_use=self._maybe_running(age),
                remove=lambda name=group.name: self._remove_group(name),
            )

    def _remove_group(self, name: str) -> str | None:
        from bakery.targets.azure import _is_not_found

        try:
            self.az.resource.resource_groups.begin_delete(name).result()
        except Exception as exc:
            if _is_not_found(exc):
                return "already gone"
            raise
        return None


def azure_sweepers(specs: Sequence[Any], clients: Any, *, name: str = "azure", log: Log = lambda m: None) -> list[Any]:
    """The Azure sweepers for the catalogue images ``specs`` reached through ``clients`` (one list: one
    connection and subscription)."""
    return [AzureSweeper(specs, clients, name=name, log=log)]
