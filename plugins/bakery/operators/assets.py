"""The Asset of each catalogue image (``bakery.assets`` has its URI, name and event extra)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset

from bakery.assets import asset_name, asset_uri, event_extra
from bakery.record import BakeRecord

GROUP = "image-bakery"


def image_asset(image: str) -> Asset:
    """``x-bakery://image/<image>``: ``publish`` of the image's bake DAG emits its events (outlet),
    deployment DAGs are scheduled on it."""
    return Asset(name=asset_name(image), uri=asset_uri(image), group=GROUP)


def emit_published(task: Any, context: Any, rec: BakeRecord) -> None:
    """Put the published record into the event of its image's Asset, when that is one of ``task``'s
    outlets (Airflow emits the event, with this extra, when the task succeeds)."""
    asset = image_asset(rec.image)
    if asset not in task.outlets:
        return
    extra = event_extra(rec)
    context["outlet_events"][asset].extra = extra
    task.log.info("asset event of %s: %s", asset.uri, extra)
