"""Azure management SDK clients built from a credential (no Airflow import).

The Airflow side (``bakery.hooks.azure.AzureImageHook``) turns an ``azure`` connection into a
credential plus these settings; tests build the same clients with any ``TokenCredential``. The
target (``bakery.targets.azure``) only ever sees an :class:`AzureClients`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

PUBLIC_ARM = "https://management.azure.com/"
# azure-core logs every request and response at INFO, azure-identity every token: in a task log that
# buries what the bake says. Their warnings and errors still come through.
_CHATTY_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.identity")


def default_scope(resource_manager_endpoint: str) -> str:
    """The token scope of an ARM endpoint: ``https://management.azure.com/`` -> ``.../.default``."""
    return resource_manager_endpoint.rstrip("/") + "/.default"


@dataclass(frozen=True)
class ArmSettings:
    """Where ARM is and how to talk to it (never a secret in here: it is logged)."""

    subscription_id: str
    resource_manager_endpoint: str = PUBLIC_ARM
    credential_scopes: tuple[str, ...] = ()  # default: default_scope(resource_manager_endpoint)
    connection_verify: str | bool = True  # a CA bundle path, or True (system trust)
    polling_interval: float | None = None  # seconds between LRO polls without Retry-After (SDK: 30)
    extra: dict[str, Any] = field(default_factory=dict)  # more azure-mgmt client keyword arguments

    def scopes(self) -> list[str]:
        return list(self.credential_scopes) or [default_scope(self.resource_manager_endpoint)]

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "base_url": self.resource_manager_endpoint,
            "credential_scopes": self.scopes(),
            **self.extra,
        }
        if self.connection_verify is not True:
            kwargs["connection_verify"] = self.connection_verify
        if self.polling_interval is not None:
            kwargs["polling_interval"] = self.polling_interval
        return kwargs


BlobContainerFactory = Callable[[str, str], Any]  # (connection id, container) -> ContainerClient


@dataclass
class AzureClients:
    """The three management clients the Azure target uses, for one subscription, and how to reach
    blob storage (the versions' SBOMs and package manifests).

    ``blob_container(conn_id, container)`` returns an ``azure.storage.blob.ContainerClient``; the
    Airflow side builds it from a ``wasb`` connection through the Azure provider's ``WasbHook``
    (``bakery.hooks.azure.sbom_container``). The target calls it only when the catalogue has an
    ``azure.sbom`` block, and closes the client it got.
    """

    subscription_id: str
    compute: Any  # azure.mgmt.compute.ComputeManagementClient
    network: Any  # azure.mgmt.network.NetworkManagementClient
    resource: Any  # azure.mgmt.resource.resources.ResourceManagementClient
    credential: Any = None
    blob_container: BlobContainerFactory | None = None

    def close(self) -> None:
        for client in (self.compute, self.network, self.resource):
            close = getattr(client, "close", None)
            if close is not None:
                close()
        close = getattr(self.credential, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_clients(credential: Any, settings: ArmSettings, *,
                 blob_container: BlobContainerFactory | None = None) -> AzureClients:
    """Compute, network and resource clients (azure-mgmt-compute 39 & co.) for ``settings``
    (and ``blob_container``, see :class:`AzureClients`)."""
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.resource.resources import ResourceManagementClient

    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # unless someone chose a level on purpose
            logger.setLevel(logging.WARNING)
    kwargs = settings.client_kwargs()
    sub = settings.subscription_id
    return AzureClients(
        subscription_id=sub,
        compute=ComputeManagementClient(credential, sub, **kwargs),
        network=NetworkManagementClient(credential, sub, **kwargs),
        resource=ResourceManagementClient(credential, sub, **kwargs),
        credential=credential,
        blob_container=blob_container,
    )
