"""AzureImageHook: the Azure provider's ``azure`` connection -> credential, SDK clients, Packer auth.

Connection (type ``azure``, the Microsoft Azure provider's form):

    login / password          service principal: client (application) id / client secret
    extra.tenantId            its tenant (all three set -> ClientSecretCredential)
    extra.subscriptionId      default subscription (the catalogue's azure.subscription_id wins)
    extra.managed_identity_client_id, extra.workload_identity_tenant_id
                              no secret -> DefaultAzureCredential through the provider's helper
                              (managed identity, workload identity, environment, Azure CLI ...)
    extra.cloud_environment   AzurePublicCloud (default) | AzureUSGovernment | AzureChinaCloud
    extra.resource_manager_endpoint (or base_url)   ARM endpoint override (sovereign/private clouds)
    extra.credential_scopes   token scopes (list or space-separated); default: <endpoint>/.default
    extra.authority_host      Entra ID authority override for the client secret credential;
    extra.disable_instance_discovery  default true for an authority host that is not one of
                              Microsoft's well-known ones (MSAL cannot validate it otherwise)
    extra.connection_verify   CA bundle (PEM path) to trust for ARM and the authority
    extra.polling_interval    seconds between long-running-operation polls (when ARM gives none)
    extra.use_azure_cli_auth  Packer only, for connections without a secret: use `az login`

Nothing here is test-specific: the tests point ``resource_manager_endpoint``, ``authority_host``
and ``connection_verify`` of an ordinary client-secret connection at the ARM emulator, which
issues tokens on its own Entra ID token endpoint.

``AzureBaseHook.get_conn()`` cannot build azure-mgmt-compute 39 clients (it passes
``credentials=``), so the clients are built here from :meth:`get_credential`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

from airflow.providers.microsoft.azure.hooks.base_azure import AzureBaseHook

from bakery.azure_clients import PUBLIC_ARM, ArmSettings, AzureClients, make_clients

# cloud_environment -> (authority host, ARM endpoint, Packer's cloud_environment_name)
CLOUDS: dict[str, tuple[str, str, str]] = {
    "AzurePublicCloud": ("https://login.microsoftonline.com", PUBLIC_ARM, "Public"),
    "AzureUSGovernment": ("https://login.microsoftonline.us", "https://management.usgovcloudapi.net/", "USGovernment"),
    "AzureChinaCloud": ("https://login.chinacloudapi.cn", "https://management.chinacloudapi.cn/", "China"),
}
_WELL_KNOWN_AUTHORITIES = {
    "login.microsoftonline.com", "login.microsoft.com", "login.windows.net", "sts.windows.net",
    "login.chinacloudapi.cn", "login.partner.microsoftonline.cn", "login.microsoftonline.us",
    "login.usgovcloudapi.net", "login-us.microsoftonline.com",
}


class AzureConnectionError(ValueError):
    """The connection cannot be used: says which connection, which field, and how to fix it."""


class AzureConnectionMissing(AzureConnectionError):
    """The connection is not defined at all (no Airflow connection, env variable or secret of that id)."""


def _refused_error() -> type:
    from azure.core.exceptions import ClientAuthenticationError

    class AzureCredentialRefused(ClientAuthenticationError):
        """Entra ID refused the connection's credentials (still a ClientAuthenticationError, so SDK
        callers that handle those see no difference); the message names the connection."""

    return AzureCredentialRefused


class ExplainedCredential:
    """Wraps a ``TokenCredential``: a refused token request becomes an error that names the Airflow
    connection and what to check in it (the secret's value is masked out of the message)."""

    def __init__(self, inner: Any, conn_id: str, describe: str, check: str, secrets: tuple[str, ...] = ()) -> None:
        self._inner = inner
        self.conn_id = conn_id
        self.describe = describe
        self.check = check
        self._secrets = tuple(s for s in secrets if s)

    def _explain(self, exc: Exception) -> Exception:
        if getattr(exc, "bakery_explained", False):
            return exc
        reason = str(getattr(exc, "message", None) or exc).strip() or type(exc).__name__
        for secret in self._secrets:
            reason = reason.replace(secret, "***")
        err = _refused_error()(message=(
            f"Azure connection {self.conn_id!r}: {self.describe} was refused: {reason}\n"
            f"Check the Airflow connection {self.conn_id!r}: {self.check}"))
        err.bakery_explained = True
        return err

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            return self._inner.get_token(*scopes, **kwargs)
        except ClientAuthenticationError as exc:
            raise self._explain(exc) from None

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            if hasattr(self._inner, "get_token_info"):
                return self._inner.get_token_info(*scopes, options=options)
            token = self._inner.get_token(*scopes)
        except ClientAuthenticationError as exc:
            raise self._explain(exc) from None
        from azure.core.credentials import AccessTokenInfo

        return AccessTokenInfo(token.token, token.expires_on)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


class AzureImageHook(AzureBaseHook):
    """Azure credentials and management clients for the bakery, from an ``azure`` connection."""

    hook_name = "Azure (image bakery)"

    def __init__(self, conn_id: str = "azure_default", *, subscription_id: str | None = None) -> None:
        super().__init__(sdk_client=None, conn_id=conn_id)
        self.subscription_id_override = subscription_id

    # --- reading the connection ----------------------------------------------------------------
    @cached_property
    def connection(self) -> Any:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            raise self._missing() from None

    async def aconnection(self) -> Any:
        """The connection, read asynchronously (in the triggerer), as the Azure provider's triggers read it."""
        if "connection" not in self.__dict__:
            from airflow.providers.common.compat.connection import get_async_connection
            from airflow.sdk.exceptions import AirflowNotFoundException

            try:
                self.__dict__["connection"] = await get_async_connection(self.conn_id, hook=self)
            except AirflowNotFoundException:
                raise self._missing() from None
        return self.connection

    def _missing(self) -> AzureConnectionMissing:
        return AzureConnectionMissing(
            f"the Airflow connection {self.conn_id!r} is not defined (the image's catalogue field azure.conn_id "
            f"names it): create it as a connection of type azure, e.g. `airflow connections add {self.conn_id} "
            "--conn-json '{\"conn_type\": \"azure\", \"login\": \"<client id>\", \"password\": \"<client secret>\", "
            "\"extra\": {\"tenantId\": \"<tenant id>\", \"subscriptionId\": \"<subscription id>\"}}'`, or the "
            f"environment variable AIRFLOW_CONN_{self.conn_id.upper().replace('-', '_').replace('.', '_')} on "
            "every worker (and triggerer), or in your secrets backend; see docs/azure.md, section 3"
        )

    def _extra(self, name: str, *aliases: str) -> Any:
        from airflow.providers.microsoft.azure.utils import get_field

        extras = self.connection.extra_dejson
        for key in (name, *aliases):
            value = get_field(conn_id=self.conn_id, conn_type="azure", extras=extras, field_name=key)
            if value not in (None, ""):
                return value
        return None

    @property
    def uses_client_secret(self) -> bool:
        conn = self.connection
        return bool(conn.login and conn.password and self._extra("tenantId", "tenant_id"))

    def cloud(self) -> tuple[str, str, str]:
        name = self._extra("cloud_environment") or "AzurePublicCloud"
        if name not in CLOUDS:
            raise AzureConnectionError(
                f"connection {self.conn_id!r}: extra.cloud_environment {name!r} is not one of "
                f"{', '.join(CLOUDS)}; for another cloud set extra.resource_manager_endpoint and "
                "extra.authority_host instead"
            )
        return CLOUDS[name]

    def arm_settings(self) -> ArmSettings:
        sub = self.subscription_id_override or self._extra("subscriptionId", "subscription_id")
        if not sub:
            raise AzureConnectionError(
                f"no subscription: set extra.subscriptionId on connection {self.conn_id!r} or "
                "azure.subscription_id in the image's catalogue entry"
            )
        _, default_endpoint, _ = self.cloud()
        endpoint = self._extra("resource_manager_endpoint", "base_url") or default_endpoint
        if not str(endpoint).startswith("https://"):
            raise AzureConnectionError(
                f"connection {self.conn_id!r}: extra.resource_manager_endpoint {endpoint!r} must be an https:// URL "
                "(the Azure SDK never sends a bearer token over plain http)"
            )
        scopes = self._extra("credential_scopes")
        if isinstance(scopes, str):
            scopes = scopes.replace(",", " ").split()
        interval = self._extra("polling_interval")
        return ArmSettings(
            subscription_id=str(sub),
            resource_manager_endpoint=str(endpoint).rstrip("/") + "/",
            credential_scopes=tuple(scopes or ()),
            connection_verify=self.connection_verify(),
            polling_interval=float(interval) if interval is not None else None,
        )

    # --- credentials & clients -----------------------------------------------------------------
    def get_credential(self, *, conn: Any = None) -> Any:
        """An azure-identity ``TokenCredential`` (never the legacy msrest adapters).

        Client id + secret + tenant: ``ClientSecretCredential`` (authority from the cloud or
        extra.authority_host). Otherwise ``DefaultAzureCredential`` through the provider's
        ``get_sync_default_azure_credential`` (managed / workload identity ids from the extra).
        """
        if conn is not None:
            self.__dict__["connection"] = conn
        conn = self.connection
        for legacy in ("key_path", "key_json"):
            if conn.extra_dejson.get(legacy):
                raise AzureConnectionError(
                    f"connection {self.conn_id!r}: extra.{legacy} (SDK auth files) is not supported by the image "
                    "bakery; use a client id/secret + tenantId, or a managed/workload identity"
                )
        if self.uses_client_secret:
            from azure.identity import ClientSecretCredential

            return ClientSecretCredential(**self._secret_credential_kwargs())
        from airflow.providers.microsoft.azure.utils import (
            get_sync_default_azure_credential,
        )

        self.log.info("Azure connection %s: DefaultAzureCredential (managed identity client id %s)",
                      self.conn_id, self._extra("managed_identity_client_id") or "-")
        return get_sync_default_azure_credential(
            managed_identity_client_id=self._extra("managed_identity_client_id"),
            workload_identity_tenant_id=self._extra("workload_identity_tenant_id"),
        )

    def _secret_credential_kwargs(self) -> dict[str, Any]:
        """The arguments of a ``ClientSecretCredential`` (sync or aio) for the connection."""
        conn = self.connection
        authority_default, _, _ = self.cloud()
        authority = str(self._extra("authority_host") or authority_default).rstrip("/")
        host = authority.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
        disable_discovery = self._extra("disable_instance_discovery")
        disable = (host not in _WELL_KNOWN_AUTHORITIES) if disable_discovery is None else _truthy(disable_discovery)
        kwargs: dict[str, Any] = {"authority": authority, "disable_instance_discovery": disable}
        verify = self.connection_verify()
        if verify is not True:
            kwargs["connection_verify"] = verify
        self.log.info("Azure connection %s: client secret credential for client %s in tenant %s (authority %s)",
                      self.conn_id, conn.login, self._extra("tenantId", "tenant_id"), authority)
        return {"tenant_id": str(self._extra("tenantId", "tenant_id")), "client_id": str(conn.login),
                "client_secret": str(conn.password), **kwargs}

    @contextlib.asynccontextmanager
    async def async_compute(self) -> AsyncIterator[Any]:
        """An ``azure.mgmt.compute.aio.ComputeManagementClient`` with an ``azure.identity.aio`` credential,
        from the same connection fields as :meth:`clients` (the connection read asynchronously, as the
        Azure provider's triggers do: only its id is in a trigger's stored arguments, never a secret).
        Both are closed at the end."""
        from azure.mgmt.compute.aio import ComputeManagementClient

        await self.aconnection()
        settings = self.arm_settings()
        if self.uses_client_secret:
            from azure.identity.aio import ClientSecretCredential

            credential = ClientSecretCredential(**self._secret_credential_kwargs())
        else:
            from airflow.providers.microsoft.azure.utils import get_async_default_azure_credential

            credential = get_async_default_azure_credential(
                managed_identity_client_id=self._extra("managed_identity_client_id"),
                workload_identity_tenant_id=self._extra("workload_identity_tenant_id"),
            )
        try:
            async with ComputeManagementClient(credential, settings.subscription_id,
                                               **settings.client_kwargs()) as compute:
                yield compute
        finally:
            await credential.close()

    def explained(self, credential: Any) -> ExplainedCredential:
        """``credential`` whose refusals name this connection and say what to check in it."""
        conn = self.connection
        if self.uses_client_secret:
            authority = str(self._extra("authority_host") or self.cloud()[0]).rstrip("/")
            return ExplainedCredential(
                credential, self.conn_id,
                f"the service principal {conn.login} (tenant {self._extra('tenantId', 'tenant_id')}, "
                f"authority {authority})",
                "its password must be the client secret's value (not the secret's id) and not expired, its login "
                "the application (client) id, extra.tenantId the tenant of that application, and extra.authority_host "
                "/ extra.cloud_environment the cloud it lives in; then clear the failed task",
                secrets=(str(conn.password),),
            )
        return ExplainedCredential(
            credential, self.conn_id,
            "the worker's own identity (DefaultAzureCredential: managed / workload identity, environment, Azure CLI)",
            "it has no client secret, so the worker's own identity is used: give the connection login + password + "
            "extra.tenantId of a service principal, or set extra.managed_identity_client_id to an identity assigned "
            "to the worker; then clear the failed task",
        )

    def connection_verify(self) -> str | bool:
        """extra.connection_verify: a CA bundle path, or true/false; default true (system trust)."""
        verify = self._extra("connection_verify")
        if verify is None:
            return True
        if isinstance(verify, str) and verify.strip().lower() in ("true", "false"):
            return verify.strip().lower() == "true"
        return verify

    def get_conn(self) -> AzureClients:
        return self.clients()

    def clients(self) -> AzureClients:
        """Compute, network and resource clients for the connection's (or the override) subscription;
        blob containers (the versions' SBOMs) through the Azure provider's WasbHook, when asked."""
        settings = self.arm_settings()
        self.log.info("Azure Resource Manager %s, subscription %s", settings.resource_manager_endpoint,
                      settings.subscription_id)
        return make_clients(self.explained(self.get_credential()), settings, blob_container=sbom_container)

    # --- Packer --------------------------------------------------------------------------------
    def packer_variables(self) -> tuple[dict[str, Any], dict[str, str]]:
        """(plain variables, sensitive variables) for the azure-arm templates' authentication.

        The client secret is only ever in the second dict: the Packer operator passes it as
        ``PKR_VAR_client_secret`` (environment only) and masks it.
        """
        settings = self.arm_settings()
        _, _, cloud_name = self.cloud()
        plain: dict[str, Any] = {"subscription_id": settings.subscription_id, "cloud_environment_name": cloud_name}
        if self.uses_client_secret:
            conn = self.connection
            plain.update(client_id=str(conn.login), tenant_id=str(self._extra("tenantId", "tenant_id")),
                         use_azure_cli_auth=False)
            return plain, {"client_secret": str(conn.password)}
        # no secret: the machine's managed identity (all empty), or the Azure CLI's login
        plain.update(client_id="", tenant_id="", use_azure_cli_auth=_truthy(self._extra("use_azure_cli_auth") or False))
        return plain, {}


def sbom_container(conn_id: str, container: str) -> Any:
    """The blob container ``container`` (an ``azure.storage.blob.ContainerClient``) of the Airflow
    ``wasb`` connection ``conn_id``, through the Azure provider's ``WasbHook`` (every auth it knows:
    connection string, account key, SAS token, service principal, managed identity).

    The catalogue's ``azure.sbom`` block names both; the Azure target uploads each version's SBOM and
    package manifest with it and reads the previous version's manifest back.
    """
    from airflow.providers.microsoft.azure.hooks.wasb import WasbHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        service = WasbHook(wasb_conn_id=conn_id).get_conn()
    except AirflowNotFoundException:
        raise AzureConnectionMissing(
            f"the Airflow connection {conn_id!r} is not defined (the image's catalogue field azure.sbom.conn_id "
            f"names it): create it as a connection of type wasb (Azure Blob Storage), e.g. with extra "
            "{\"connection_string\": \"...\"} or login (storage account) + password (account key), or the "
            f"environment variable AIRFLOW_CONN_{conn_id.upper().replace('-', '_').replace('.', '_')}; "
            "see docs/azure.md, section SBOM"
        ) from None
    return _OwnedContainer(service.get_container_client(container), service)


class _OwnedContainer:
    """A ``ContainerClient`` that also closes the ``BlobServiceClient`` it came from (a container client
    made by ``get_container_client`` shares the service's connection pool and does not close it)."""

    def __init__(self, container: Any, service: Any) -> None:
        self._container = container
        self._service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def close(self) -> None:
        try:
            self._container.close()
        finally:
            self._service.close()
