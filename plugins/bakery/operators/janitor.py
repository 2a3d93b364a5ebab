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
AZURE_SWEEPERS = "bakery.operators.janitor:azure_sweepers"  # kwargs: conn_id, subscription_id


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")


def azure_sweepers(conn_id: str, subscription_id: str | None = None) -> list[Any]:
    """The Azure sweeper of the catalogue's azure images that use connection ``conn_id`` (and
    ``subscription_id``, their catalogue ``azure.subscription_id``), with SDK clients from that
    connection (built when the sweeper first needs them).

    A connection that is not defined at all skips the task (Azure is not used where this Airflow
    runs, e.g. a laptop with the shipped catalogue): the local sweep and the DAG run go on. Any
    other connection problem (a refused secret, no subscription) fails it.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from bakery.catalogue import load_catalogue
    from bakery.hooks.azure import AzureConnectionMissing, AzureImageHook
    from bakery.janitor import azure_sweepers as make

    specs = [s for s in load_catalogue().values()
             if s.azure is not None and s.azure.conn_id == conn_id and (s.azure.subscription_id or None) == subscription_id]
    if not specs:
        raise ValueError(f"no azure image of the catalogue uses connection {conn_id!r}"
                         + (f" with subscription {subscription_id}" if subscription_id else ""))
    hook = AzureImageHook(conn_id, subscription_id=subscription_id)
    try:
        hook.connection  # noqa: B018 - read it now: a connection that is not there skips the sweep
    except AzureConnectionMissing as exc:
        raise AirflowSkipException(f"nothing swept in Azure for {', '.join(s.name for s in specs)}: {exc}") from None
    return make(specs, hook.clients, name=f"azure:{conn_id}" + (f":{subscription_id}" if subscription_id else ""),
                log=hook.log.info)


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
    :param sweeper_kwargs: keyword arguments of every factory (e.g. the Azure one's ``conn_id``).
    """

    template_fields: Sequence[str] = ("ttl_hours", "dry_run")
    ui_color = "#c9d6a3"

    def __init__(
        self,
        *,
        ttl_hours: Any = "{{ params.ttl_hours }}",
        dry_run: Any = "{{ params.dry_run }}",
        sweepers: Sequence[str] = (LOCAL_SWEEPERS,),
        sweeper_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ttl_hours = ttl_hours
        self.dry_run = dry_run
        self.sweepers = list(sweepers)
        self.sweeper_kwargs = dict(sweeper_kwargs or {})

    def execute(self, context: Any) -> dict[str, Any]:
        from bakery.janitor import sweep

        ttl_hours = float(self.ttl_hours)
        if ttl_hours < 1:
            raise ValueError(f"ttl_hours must be at least 1 (a younger leftover may be a bake in progress), got {ttl_hours}")
        sweepers = [s for path in self.sweepers for s in load_factory(path)(**self.sweeper_kwargs)]
        try:
            report = sweep(sweepers, ttl_seconds=ttl_hours * 3600, dry_run=_flag(self.dry_run), log=self.log.info)
        finally:
            for s in sweepers:
                close = getattr(s, "close", None)
                if close is not None:
                    close()
        if report["errors"]:
            failed = [i for i in report["items"] if i["action"].startswith("failed")]
            raise RuntimeError(f"the janitor could not remove {len(failed)} leftover(s): {failed}")
        return report


class PoolGcOperator(BaseOperator):
    """Garbage-collects the bakery's package pool (``bakery.packages.pool.PackagePool.gc``): drops
    the index of every pruned version past its image's ``packages.retention_days``, then the
    packages, cached index files and base images no kept index refers to and nothing used for the
    TTL (an in-flight build may be about to use them). Reports what went and the bytes freed.

    :param ttl_hours: grace period of unreferenced blobs. Templated.
    :param dry_run: only report. Templated.
    """

    template_fields: Sequence[str] = ("ttl_hours", "dry_run")

    def __init__(self, *, ttl_hours: Any = "{{ params.ttl_hours }}", dry_run: Any = "{{ params.dry_run }}",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ttl_hours = ttl_hours
        self.dry_run = dry_run

    def execute(self, context: Any) -> dict[str, Any]:
        from bakery.catalogue import load_catalogue
        from bakery.packages.pool import default_pool

        pool = default_pool()
        retention = {name: spec.packages.retention_days for name, spec in load_catalogue().items()}
        report = pool.gc(retention_days=retention, grace_hours=float(self.ttl_hours), dry_run=_flag(self.dry_run))
        verb = "would free" if report.dry_run else "freed"
        self.log.info("package pool %s: %s %.1f MB; indexes past retention: %s; %d package/index blobs and %d "
                      "base images no kept index refers to", pool.root, verb, report.bytes_freed / 1e6,
                      ", ".join(report.indexes_removed) or "none", report.blobs_removed, report.base_images_removed)
        return report.to_dict()
