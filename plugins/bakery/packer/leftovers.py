"""Packer runs that outlived their caller: recorded in a state file, found and stopped later.

Packer runs in its own session (see ``runner.py``) so that it can clean up even when the task
that started it dies; the other side of that coin is that a task killed hard (kill -9, OOM, a
lost worker) leaves Packer **running**: it keeps building into the same output folder that the
retry of the task is about to build into.

So a build with a work folder records its Packer in ``<work>/packer.pid.json``::

    {"pid": 1234, "pgid": 1234, "start_time": 9876.54, "boot_id": "...", "token": "<uuid>",
     "template": "/.../debian12-nginx", "command": "build", "started": "2026-...Z"}

written *before* Packer starts (with the token only) and completed right after; removed once
Packer's process group is gone. Packer and everything it starts (plugins, QEMU) inherit
``BAKERY_PACKER_TOKEN=<token>`` in their environment.

A process counts as that leftover only when it is provably the same: the leader by its pid **and**
start time (seconds since boot, ``bakery.processes.start_time``) on the same boot, any other member
of the group by the token in its environment. A reused pid is never signalled. Stopping is the same
as ``terminate()`` (``bakery.processes.stop``): SIGTERM (Packer cancels the build and its builders
clean up: QEMU stopped, output folder deleted), a bounded wait, then the hard kill of what is left.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bakery import processes

STATE_NAME = "packer.pid.json"
TOKEN_ENV = "BAKERY_PACKER_TOKEN"

Log = Callable[[str], None]


@dataclass
class PackerState:
    token: str
    template: str = ""
    command: str = "build"
    started: str = ""
    boot_id: str = ""
    pid: int | None = None
    pgid: int | None = None
    start_time: float | None = None  # the leader's, in seconds since boot (``processes.start_time``)
    caller_pid: int = field(default_factory=os.getpid)

    @classmethod
    def new(cls, template: str, command: str) -> PackerState:
        return cls(
            token=uuid.uuid4().hex,
            template=template,
            command=command,
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            boot_id=processes.boot_id(),
        )


def write_state(path: str | os.PathLike[str], state: PackerState) -> None:
    """Atomically (write, fsync, rename) replace the state file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(asdict(state), fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_state(path: str | os.PathLike[str]) -> PackerState | None:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data.get("token"):
        return None
    names = set(PackerState.__dataclass_fields__)
    return PackerState(**{k: v for k, v in data.items() if k in names})


def _leader(state: PackerState) -> processes.Process | None:
    """The recorded Packer itself, if it still runs: same pid, same start time, same boot."""
    if state.start_time is None or (state.boot_id and state.boot_id != processes.boot_id()):
        return None
    return processes.find(state.pid, state.start_time)


def live_processes(state: PackerState) -> list[processes.Process]:
    """The processes of that Packer run that are still alive (verified, see the module doc)."""
    if state.boot_id and state.boot_id != processes.boot_id():
        return []  # recorded before a reboot: nothing of it can be alive
    leader = _leader(state)
    out = [leader] if leader is not None else []
    if state.pgid is not None:
        out += [p for p in processes.with_env(TOKEN_ENV, state.token, processes.group(state.pgid)) if p not in out]
    if state.pid is None:
        # killed between writing the state file and starting Packer / recording its pid: find
        # Packer by the token alone (a random uuid no unrelated process has).
        out += [p for p in processes.with_env(TOKEN_ENV, state.token) if p not in out]
    return sorted(out, key=lambda p: p.pid)


def stop_leftover(
    state_path: str | os.PathLike[str],
    *,
    grace_seconds: float = 60,
    log: Log = print,
    dry_run: bool = False,
    forget: bool = True,
) -> dict[str, Any]:
    """Stop the Packer run recorded in ``state_path`` if any of it is still alive.

    Returns a JSON-able report: ``{"state_file", "token", "pids", "action"}`` with action one of
    ``none`` (nothing recorded or nothing alive; a stale state file is removed), ``would stop``
    (dry run), ``stopped`` (gone after SIGTERM), ``killed`` (needed the hard kill). ``forget``: remove
    the state file once nothing of the run is alive (the janitor keeps it: its age dates the folder).
    """
    path = Path(state_path)
    state = read_state(path)
    report: dict[str, Any] = {"state_file": str(path), "token": None, "pids": [], "action": "none"}
    if state is None:
        if path.exists() and not dry_run and forget:
            path.unlink(missing_ok=True)  # unreadable: nothing can be verified against it
        return report
    report["token"] = state.token
    procs = live_processes(state)
    report["pids"] = [p.pid for p in procs]
    report["started"] = state.started
    if not procs:
        if not dry_run and forget:
            path.unlink(missing_ok=True)
        return report
    if dry_run:
        report["action"] = "would stop"
        return report
    log(
        f"a Packer run left by an earlier attempt is still running (pids {report['pids']}, started "
        f"{state.started}, recorded in {path}): SIGTERM, waiting up to {grace_seconds:g}s for its cleanup"
    )
    # the whole group when its verified leader still owns it (it reaches what Packer starts meanwhile)
    leader = _leader(state)
    group = state.pgid if leader is not None and state.pgid == leader.pid else None
    action = processes.stop(procs, group=group, grace_seconds=grace_seconds, log=log, what="the leftover Packer run")
    report["action"] = action if action != "none" else "stopped"
    if action == "stopped":
        log("the leftover Packer run stopped and cleaned up")
    if forget and not live_processes(state):
        path.unlink(missing_ok=True)
    return report
