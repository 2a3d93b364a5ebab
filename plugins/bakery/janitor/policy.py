"""The janitor's policy: what a sweeper finds (``Finding``) and what ``sweep`` does with it.

Every finding is judged the same way, whatever the sweeper (see ``bakery.janitor``): younger than
the TTL, kept; in use, kept (asked again right before removing); else removed, or reported as
``would remove`` in a dry run. Plain Python, no Airflow import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

Log = Callable[[str], None]


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
