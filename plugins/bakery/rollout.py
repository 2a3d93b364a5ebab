"""The example rollout of a newly published version (plain Python, no Airflow import): what
``dags/rollout_example.py`` does when the image's Asset says a bake published one.

    roll_out: the version is still published (the target's own record of it) -> a canary boot
              (local: the published disk, read-only, with the image's catalogue smoke check;
              Azure: none, a deployment's own rollout is the canary there)

A user's deployment DAG would deploy the version where this boots it.
"""

from __future__ import annotations

from typing import Any

from bakery.assets import asset_uri
from bakery.catalogue import ImageSpec
from bakery.targets.base import Log, SmokeCheck, Target


class RolloutError(RuntimeError):
    pass


def roll_out(spec: ImageSpec, event: dict[str, Any], target: Target, check: SmokeCheck, log: Log) -> dict[str, Any]:
    """Check that the event's version (``bakery.assets.newest_event``) is still published, then boot
    it once more as a canary where the target can. Returns what was rolled out, with the canary's
    verdict (None: the target boots none); a version no longer published raises ``RolloutError``.
    A failed canary is a verdict in the result (``canary["passed"]``), not an exception."""
    extra = event["extra"]
    version = str(extra["version"])
    log(f"rolling out {spec.name} {version} (channel {extra.get('channel')}), published as {extra.get('published_id')}")
    published = target.published(spec.name, version)
    if published is None:
        raise RolloutError(
            f"{spec.name} {version} is no longer published on the {spec.target} target (pruned or removed since "
            f"the asset event of {asset_uri(spec.name)} at {event.get('timestamp')}): nothing to roll out")
    announced, now = extra.get("manifest_digest"), published.get("manifest_digest")
    if announced and now and announced != now:
        raise RolloutError(f"{spec.name} {version} was replaced since its asset event: its manifest digest is "
                           f"{now}, the event announced {announced}; the replacement's own event rolls it out")
    log(f"{spec.name} {version} is published on the {spec.target} target (created {published.get('created')})")
    result = target.canary(spec.name, version, check, log)
    if result is None:
        log(f"no canary boot on the {spec.target} target: the published check is all this example does there")
    return {"image": spec.name, "version": version, "channel": extra.get("channel"),
            "published_id": extra.get("published_id"), "source_run_id": event.get("source_run_id"),
            "canary": result.to_dict() if result is not None else None}
