"""The example rollout's task (``dags/rollout_example.py``): the image's asset events in, a plain
call to ``bakery.rollout.roll_out``, a small XCom out."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from bakery.assets import newest_event
from bakery.operators.assets import image_asset
from bakery.operators.bake import _spec, close_target, make_target, smoke_check_of


def _plain(event: Any) -> dict[str, Any]:
    """One triggering asset event (the task SDK's ``AssetEventDagRunReference``) as plain data."""
    return {"timestamp": event.timestamp.isoformat(), "extra": dict(event.extra or {}),
            "source_dag_id": event.source_dag_id, "source_run_id": event.source_run_id}


class RolloutOperator(BaseOperator):
    """Reads the version from the newest asset event of ``image`` that triggered the run (logging
    every one), checks it is still published and, on the local target, boots it once more as a
    canary with the image's catalogue smoke check. A failed canary fails the task, without retries
    (the published image will not change). XCom: what was rolled out and the canary's verdict."""

    def __init__(self, *, image: str, **kwargs):
        super().__init__(**kwargs)
        self.image = image

    def execute(self, context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from bakery.rollout import roll_out

        events = context["triggering_asset_events"].get(image_asset(self.image)) or []
        event = newest_event(self.image, [_plain(e) for e in events], self.log.info)
        spec = _spec(self.image)
        target = make_target(spec)
        try:
            result = roll_out(spec, event, target, smoke_check_of(spec, None), self.log.info)
        finally:
            close_target(target)
        canary = result["canary"]
        if canary is not None and not canary["passed"]:
            raise AirflowFailException(f"canary of {self.image} {result['version']} failed after {canary['seconds']}s: "
                                       f"{canary['detail']}")
        if canary is not None:
            self.log.info("canary of %s %s passed: HTTP %s after %ss", self.image, result["version"],
                          canary["status"], canary["seconds"])
        return result
