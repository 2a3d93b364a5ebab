"""One bake of an image at a time, whatever started it (no Airflow import here).

Airflow's ``max_active_runs`` binds scheduled and manual runs, but each backfill counts its runs
apart (``airflow backfill create`` starts up to 10 at once). So every bake DAG starts by taking the
image's **turn**: a small lease file ``$BAKERY_HOME/turns/<image>.json`` naming the DAG run that
holds it, written under an ``flock``. A run that finds the turn held by another run that is still
active waits (the DAG's sensor reschedules, holding no worker slot); a holder that is no longer
active (finished, failed, deleted) is replaced. The DAG's teardown task gives the turn back.

Whether a holder is active is the caller's question (the operator asks Airflow for the run's
state), so this module stays plain Python.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from bakery.paths import bakery_home


@dataclass(frozen=True)
class Holder:
    dag_id: str
    run_id: str
    since: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def turns_root() -> Path:
    return bakery_home() / "turns"


class ImageTurn:
    def __init__(self, image: str, root: Path | None = None):
        self.image = image
        self.root = Path(root) if root else turns_root()
        self.path = self.root / f"{image}.json"

    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.root / f".{self.image}.lock", "a+")
        fcntl.flock(fh, fcntl.LOCK_EX)
        return fh

    def holder(self) -> Holder | None:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return Holder(data.get("dag_id", ""), data.get("run_id", ""), data.get("since", ""))

    def take(self, me: Holder, is_active: Callable[[Holder], bool]) -> tuple[bool, Holder | None]:
        """Take the turn if it is free, ours already, or held by a run that is no longer active.

        Returns (taken, the other holder: the one we wait for, or the stale one we replaced)."""
        with self._locked() as fh:
            try:
                current = self.holder()
                if current is not None and current.run_id != me.run_id and is_active(current):
                    return False, current
                if current is None or current.run_id != me.run_id:
                    stamped = Holder(me.dag_id, me.run_id, me.since or datetime.now(timezone.utc).isoformat(timespec="seconds"))
                    tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
                    tmp.write_text(json.dumps(stamped.to_dict()) + "\n")
                    tmp.replace(self.path)
                return True, current if current is not None and current.run_id != me.run_id else None
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def give_back(self, me: Holder) -> bool:
        """Release the turn if ``me`` holds it (a no-op otherwise)."""
        with self._locked() as fh:
            try:
                current = self.holder()
                if current is None or current.run_id != me.run_id:
                    return False
                self.path.unlink(missing_ok=True)
                return True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
