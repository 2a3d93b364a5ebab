"""One image version, one writer: an flock on the version's work folder (no Airflow import).

A bake of ``<image> <version>`` owns ``$BAKERY_HOME/work/<image>/<version>``. The Packer build,
the smoke test (local target) and the publish of that version each hold an exclusive, non-blocking
``flock`` on ``<work>/.lock`` while they use the folder; a second build/smoke test/publish of the
same image version (a manual run and a backfill of the same date, a second Airflow on the same
machine, ``airflow tasks test`` next to a scheduled run) fails at once with ``WorkBusyError``
naming the holder instead of deleting the first one's output under it.

The kernel releases the lock when the holder dies, however it dies (SIGKILL included), so a
retry is never blocked by a dead run; what a dead run left running (its Packer, in its own
session) is found through the state file, see ``bakery.packer.leftovers``. The lock file is
opened ``O_CLOEXEC`` so that child processes (Packer, QEMU) never inherit it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

LOCK_NAME = ".lock"


class WorkBusyError(RuntimeError):
    """Another build / smoke test / publish of the same image version holds its work folder."""


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def work_lock(work_dir: str | os.PathLike[str], purpose: str) -> Iterator[Path]:
    """Hold the exclusive lock of ``work_dir`` (created if missing) or raise ``WorkBusyError``."""
    wd = Path(work_dir)
    wd.mkdir(parents=True, exist_ok=True)
    path = wd / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            h = _holder(path)
            who = (
                f"{h.get('purpose', 'another run')} (pid {h.get('pid', '?')} on {h.get('host', '?')}, "
                f"since {h.get('since', '?')})"
                if h
                else "another process"
            )
            raise WorkBusyError(
                f"cannot start the {purpose} in {wd}: it is in use by {who}. Two runs of the same "
                "image version cannot build, smoke-test or publish at once; wait for that run to "
                "finish (the lock is released when its process ends, even if it is killed) and retry."
            ) from None
        info = {
            "purpose": purpose,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        try:
            yield wd
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked(work_dir: str | os.PathLike[str]) -> bool:
    """Whether some process holds ``work_dir``'s lock right now (False if there is no lock file)."""
    path = Path(work_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_work_lock(work_dir: str | os.PathLike[str], purpose: str) -> Iterator[bool]:
    """Like ``work_lock`` but yields False instead of raising when the folder is busy."""
    try:
        cm = work_lock(work_dir, purpose)
        cm.__enter__()
    except WorkBusyError:
        yield False
        return
    try:
        yield True
    finally:
        cm.__exit__(None, None, None)
