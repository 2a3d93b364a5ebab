"""The image's turn (bakery.turns) as two Airflow tasks: a sensor that takes it (the DAG's first
task, rescheduling while another run of the image bakes: no worker slot held) and a teardown task
that gives it back whatever happened to the run."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.sensor import BaseSensorOperator

from bakery.turns import Holder, ImageTurn

ACTIVE_STATES = ("queued", "running")


def _me(context: Any) -> Holder:
    return Holder(dag_id=context["dag"].dag_id, run_id=context["run_id"])


def _not_found(exc: Exception) -> bool:
    """Whether Airflow answered that the run does not exist. A supervised task gets the execution API's
    error with its status in the message; in-process (``airflow dags test``, ``airflow tasks test``) the
    API client's ServerResponseError reaches the task as it is: 'Server returned error', the 404 in its
    response and the reason in its ``detail``."""
    if getattr(getattr(exc, "response", None), "status_code", None) == 404:
        return True
    text = f"{exc} {getattr(exc, 'detail', '')}".lower()
    return "404" in text or "not found" in text or "not_found" in text


class WaitForTurnSensor(BaseSensorOperator):
    """Takes the image's turn: done when no other active run of this image holds it."""

    def __init__(self, *, image: str, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 15)
        kwargs.setdefault("timeout", 24 * 3600)
        super().__init__(**kwargs)
        self.image = image

    def _is_active(self, context: Any, holder: Holder) -> bool:
        try:
            state = context["ti"].get_dagrun_state(dag_id=holder.dag_id, run_id=holder.run_id)
        except Exception as exc:  # noqa: BLE001 - a run that no longer exists holds nothing
            if _not_found(exc):
                return False
            raise
        return str(getattr(state, "value", state)).lower() in ACTIVE_STATES

    def poke(self, context: Any) -> bool:
        taken, other = ImageTurn(self.image).take(_me(context), lambda h: self._is_active(context, h))
        if taken:
            if other is not None:
                self.log.info("took the turn of %s from run %s of %s (no longer active)", self.image, other.run_id,
                              other.dag_id)
            else:
                self.log.info("%s: this run has the image's turn; no other bake of it runs until it ends", self.image)
            return True
        self.log.info("%s is being baked by run %s (since %s): waiting for it to end (two bakes of one image "
                      "never run at once)", self.image, other.run_id if other else "?", other.since if other else "?")
        return False


class GiveBackTurnOperator(BaseOperator):
    """Teardown: releases the image's turn if this run holds it."""

    def __init__(self, *, image: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image = image

    def execute(self, context: Any) -> bool:
        released = ImageTurn(self.image).give_back(_me(context))
        self.log.info("%s: %s", self.image, "turn given back" if released else "this run did not hold the turn")
        return released
