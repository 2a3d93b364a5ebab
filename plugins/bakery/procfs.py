"""Facts about processes read from Linux /proc (no Airflow import, no psutil).

Used to find and stop what the bakery started (Packer groups, QEMU) *by identity*, never by a
global name: other users' Packer and QEMU may run on the same machine. A process is identified
by its pid **and** its start time (``/proc/<pid>/stat`` field 22, clock ticks since boot) and the
boot id, so that a pid reused by an unrelated process is never mistaken for ours.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def pids() -> list[int]:
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    f = _stat_fields(pid)
    return f is not None and f[0] not in ("Z", "X")


def state(pid: int) -> str | None:
    """One-letter state (R, S, D, T, Z...) or None when there is no such process."""
    f = _stat_fields(pid)
    return f[0] if f else None


def ppid(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[1]) if f else None


def pgid(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[2]) if f else None


def start_ticks(pid: int) -> int | None:
    """Start time of the process in clock ticks since boot (stable identity with ``boot_id``)."""
    f = _stat_fields(pid)
    return int(f[19]) if f and len(f) > 19 else None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def age_seconds(pid: int) -> float | None:
    """Seconds since the process started (None when it does not exist)."""
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - ticks / _CLK_TCK)


def started_at(pid: int) -> float | None:
    """Wall-clock start time (epoch seconds) of the process."""
    age = age_seconds(pid)
    return None if age is None else time.time() - age


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            data = fh.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in data.split(b"\0") if a]


def environ_value(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in data.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def group_members(group: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``group``."""
    out = []
    for pid in pids():
        f = _stat_fields(pid)
        if f is not None and len(f) >= 3 and f[0] not in ("Z", "X") and int(f[2]) == group:
            out.append(pid)
    return out


def children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (Go starts processes from any of its threads)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(x) for x in fh.read().split())
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out
