"""JanitorOperator: a thin Airflow adapter around ``bakery.janitor.sweep``.

Context in (TTL and dry run, usually from the run's Params), the report out (XCom, JSON-able).
The sweepers come from factories named by import path (``"module:function"``, each returning a
list of sweepers), so that a target adds its own by appending a path: no import at DAG parse time.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

LOCAL_SWEEPERS = "bakery.janitor:local_sweepers"


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")


def load_factory(path: str):
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"a sweeper factory is named 'module:function', got {path!r}")
    return getattr(importlib.import_module(module), name)


class JanitorOperator(BaseOperator):
    """Find what dead bakes left behind (processes, folders, gallery entries) and remove it after a TTL.

    :param ttl_hours: leftovers younger than this are kept (they may belong to a bake in progress).
        At least 1. Templated.
    :param dry_run: only report what would be removed. Templated.
    :param sweepers: import paths (``module:function``) of factories returning lists of sweepers.
    """

    template_fields: Sequence[str] = ("ttl_hours", "dry_run")
    ui_color = "#c9d6a3"

    def __init__(
        self,
        *,
        ttl_hours: Any = "{{ params.ttl_hours }}",
        dry_run: Any = "{{ params.dry_run }}",
        sweepers: Sequence[str] = (LOCAL_SWEEPERS,),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ttl_hours = ttl_hours
        self.dry_run = dry_run
        self.sweepers = list(sweepers)

    def execute(self, context: Any) -> dict[str, Any]:
        from bakery.janitor import sweep

        ttl_hours = float(self.ttl_hours)
        if ttl_hours < 1:
            raise ValueError(f"ttl_hours must be at least 1 (a younger leftover may be a bake in progress), got {ttl_hours}")
        sweepers = [s for path in self.sweepers for s in load_factory(path)()]
        report = sweep(sweepers, ttl_seconds=ttl_hours * 3600, dry_run=_flag(self.dry_run), log=self.log.info)
        if report["errors"]:
            failed = [i for i in report["items"] if i["action"].startswith("failed")]
            raise RuntimeError(f"the janitor could not remove {len(failed)} leftover(s): {failed}")
        return report
