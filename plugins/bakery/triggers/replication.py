"""GalleryReplicationTrigger: waits in the triggerer while Azure creates and replicates a gallery
image version, so that ``publish`` holds no worker slot meanwhile.

Its stored arguments (the trigger table) name the Airflow connection, never a credential: the
connection is read in the triggerer, as the Azure provider's ``AzureVirtualMachineStateTrigger``
does, and turned into an ``azure.identity.aio`` credential and an ``azure.mgmt.compute.aio`` client by
``AzureImageHook.async_compute``. The reading itself is ``bakery.targets.azure.replication``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class GalleryReplicationTrigger(BaseTrigger):
    """Follow ``version`` of ``gallery`` (resource group, gallery, image definition) every
    ``poll_interval`` seconds until it is Succeeded, Failed, or ``deadline`` (seconds since the
    epoch; None: ``timeout`` seconds after the wait starts) passes; one event with the outcome (``status``
    succeeded / failed / deadline / error, the state per region, a message).

    ``version`` may be a template (``ReplicationWaitOperator`` starts it from the triggerer, which renders
    it from publish's XCom before ``run``)."""

    def __init__(self, *, conn_id: str, subscription_id: str | None, gallery: list[str] | tuple[str, ...],
                 version: str, deadline: float | None, timeout: float, poll_interval: float = 30.0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.subscription_id = subscription_id
        self.gallery = tuple(gallery)
        self.version = version
        self.deadline = deadline
        self.timeout = timeout
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{self.__class__.__module__}.{self.__class__.__name__}", {
            "conn_id": self.conn_id, "subscription_id": self.subscription_id, "gallery": list(self.gallery),
            "version": self.version, "deadline": self.deadline, "timeout": self.timeout,
            "poll_interval": self.poll_interval,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from bakery.hooks.azure import AzureImageHook
        from bakery.targets.azure.common import error_text
        from bakery.targets.azure.replication import follow_replication

        import time

        if self.deadline is None:
            self.deadline = time.time() + self.timeout
        self.log.info("publish: waiting in the triggerer for %s/%s/%s to replicate (no worker held)",
                      self.gallery[1], self.gallery[2], self.version)
        try:
            async with AzureImageHook(self.conn_id, subscription_id=self.subscription_id).async_compute() as compute:
                outcome = await follow_replication(compute, self.gallery, self.version, deadline=self.deadline,
                                                   timeout=self.timeout, interval=self.poll_interval,
                                                   log=self.log.info)
        except Exception as exc:  # noqa: BLE001 - the task says what went wrong (the event carries it)
            outcome = {"status": "error", "version": self.version, "regions": [],
                       "message": f"the replication of {self.version} could not be followed: "
                                  f"{type(exc).__name__}: {error_text(exc)}"}
        yield TriggerEvent(outcome)
