"""Thin Airflow adapter for channel changes (``bakery.channels``): promote and rollback of an image."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseOperator

from bakery.operators.bake import _spec, close_target, make_target, triggered_by


class ChannelOperator(BaseOperator):
    """``promote``: make the named version (or, without one, the newest candidate that has soaked the
    catalogue's ``channels.soak_hours``) stable, after the target's own check of it. ``rollback``: make
    the named older version stable and what ``latest`` resolves to, newer versions withdrawn.

    Each change is recorded with who triggered the run (``scheduler`` for scheduled runs), when and
    from which run. XCom: the changes made (empty when there was nothing to promote)."""

    template_fields = ("version",)

    def __init__(self, *, image: str, action: str, version: Any = "{{ params.version }}", **kwargs):
        super().__init__(**kwargs)
        if action not in ("promote", "rollback"):
            raise ValueError(f"action must be promote or rollback, not {action!r}")
        self.image = image
        self.action = action
        self.version = version

    def execute(self, context) -> list[dict[str, Any]]:
        from airflow.sdk.exceptions import AirflowFailException

        from bakery import bake
        from bakery.channels import Actor, ChannelError

        dag_run = context["dag_run"]
        actor = Actor(triggered_by(dag_run), datetime.now(UTC), dag_run.run_id)
        version = str(self.version or "").strip() or None
        spec = _spec(self.image)
        target = make_target(spec)
        try:
            if self.action == "promote":
                changes = bake.promote(spec, actor, self.log.info, target, version=version)
            elif version is None:
                raise AirflowFailException(f"rollback of {self.image}: name the version to roll back to "
                                           "(the run's Param version)")
            else:
                changes = bake.rollback(spec, version, actor, self.log.info, target)
        except (ChannelError, ValueError) as exc:  # a verdict on the request: retrying cannot change it
            raise AirflowFailException(str(exc)) from None
        finally:
            close_target(target)
        return [c.to_dict() for c in changes]
