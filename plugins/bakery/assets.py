"""An image's Asset as plain data (no Airflow import): its URI and name, the extra of the event
``publish`` emits, and how a consumer picks the version out of the events it was triggered by.

    x-bakery://image/<image>      one Asset per catalogue image (``bakery.operators.assets.image_asset``)

The ``x-`` scheme is Airflow's documented choice for a URI with no provider behind it: Airflow
treats it as a plain string (no provider's normaliser is looked up, so making it at parse time is
cheap). The event's extra (``event_extra``) says which version was published, where, from which
run: ``image``, ``version``, ``published_id``, ``manifest_digest``, ``channel``, ``dag_run_id``,
``target``. A deployment DAG scheduled on the Asset reads it (``newest_event``; the example is
``dags/rollout_example.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bakery.record import BakeRecord
from bakery.targets.base import Log
from bakery.versioning import VersionError, parse_version

SCHEME = "x-bakery"
DEFAULT_CHANNEL = "latest"
EXTRA_KEYS = ("image", "version", "published_id", "manifest_digest", "channel", "dag_run_id", "target")


def asset_uri(image: str) -> str:
    return f"{SCHEME}://image/{image}"


def asset_name(image: str) -> str:
    """The Asset's name, as the Airflow UI lists it."""
    return f"image-bakery/{image}"


def channel_of(rec: BakeRecord) -> str:
    """The channel the version was published into: ``candidate`` for an image with channels (the
    record's ``extra["channel"]``, set by prepare; ``latest`` does not move until it is promoted), else
    ``latest`` (without channels a publish moves ``latest`` when its version is the highest)."""
    return str(rec.extra.get("channel") or DEFAULT_CHANNEL)


def event_extra(rec: BakeRecord) -> dict[str, Any]:
    """The extra of the asset event of a published record (JSON-able)."""
    return {
        "image": rec.image,
        "version": rec.version,
        "published_id": rec.published_id,
        "manifest_digest": (rec.packages or {}).get("digest"),
        "channel": channel_of(rec),
        "dag_run_id": rec.dag_run_id,
        "target": rec.target,
    }


class NoImageEvent(ValueError):
    """The run has no usable asset event of the image."""


def newest_event(image: str, events: Iterable[Mapping[str, Any]], log: Log) -> dict[str, Any]:
    """The newest (by ``timestamp``) of the image's asset events that triggered a run, each logged.

    ``events``: ``{"timestamp", "extra", "source_dag_id", "source_run_id"}`` per event (several when
    more than one publish happened since the consumer's last run). The newest one's extra must name
    this image and a valid version."""
    seen = sorted((dict(e) for e in events), key=lambda e: str(e.get("timestamp")))
    for n, e in enumerate(seen, 1):
        extra = e.get("extra") or {}
        log(f"asset event {n}/{len(seen)} of {asset_uri(image)}: version {extra.get('version')} "
            f"(channel {extra.get('channel')}, target {extra.get('target')}) published by "
            f"{e.get('source_dag_id')} run {e.get('source_run_id')} at {e.get('timestamp')}")
    if not seen:
        raise NoImageEvent(
            f"this run has no asset event of {asset_uri(image)}: it is meant to run when a bake of {image} "
            "publishes a version (its schedule is the image's Asset), not to be triggered by hand")
    newest = seen[-1]
    extra = newest.get("extra") or {}
    if extra.get("image") != image:
        raise NoImageEvent(f"the newest asset event of {asset_uri(image)} names image {extra.get('image')!r}, "
                           f"not {image!r}: {extra}")
    try:
        parse_version(str(extra.get("version")))
    except VersionError as exc:
        raise NoImageEvent(f"the newest asset event of {asset_uri(image)} has no valid version: {exc}") from None
    return newest
