"""AzureImageHook: an ``azure`` connection (given as AIRFLOW_CONN_<ID>) -> credential, clients, Packer auth."""

from __future__ import annotations

import json
import typing

import pytest
from bakery.hooks.azure import AzureConnectionError, AzureImageHook

from tests.azure_emulator import ArmEmulator
from tests.azure_emulator.world import AzureWorld

SUB = "00000000-0000-0000-0000-0000000000a1"
TENANT = "11111111-2222-3333-4444-555555555555"
CLIENT = "66666666-7777-8888-9999-000000000000"
SECRET = "hook-test-secret-value-9f2c"


def set_conn(monkeypatch, conn_id: str, *, login=CLIENT, password=SECRET, **extra) -> None:
    conn = {"conn_type": "azure", "extra": extra}
    if login is not None:
        conn["login"] = login
    if password is not None:
        conn["password"] = password
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


class Recorder:
    """Stands in for an azure-identity credential class: records how it was built."""

    calls: typing.ClassVar[list[dict]] = []

    def __init__(self, *args, **kwargs):
        Recorder.calls.append({"args": args, **kwargs})


@pytest.fixture
def recorded(monkeypatch):
    import azure.identity

    Recorder.calls = []
    monkeypatch.setattr(azure.identity, "ClientSecretCredential", Recorder)
    return Recorder.calls


def test_service_principal_on_the_public_cloud(monkeypatch, recorded):
    set_conn(monkeypatch, "az_pub", tenantId=TENANT, subscriptionId=SUB)
    hook = AzureImageHook("az_pub")
    hook.get_credential()
    (call,) = recorded
    assert call == {"args": (), "tenant_id": TENANT, "client_id": CLIENT, "client_secret": SECRET,
                    "authority": "https://login.microsoftonline.com", "disable_instance_discovery": False}
    settings = hook.arm_settings()
    assert settings.resource_manager_endpoint == "https://management.azure.com/"
    assert settings.scopes() == ["https://management.azure.com/.default"]
    assert settings.client_kwargs() == {"base_url": "https://management.azure.com/",
                                        "credential_scopes": ["https://management.azure.com/.default"]}


def test_sovereign_cloud_and_overrides(monkeypatch, recorded):
    set_conn(monkeypatch, "az_gov", extra__azure__tenantId=TENANT, subscriptionId=SUB, cloud_environment="AzureUSGovernment")  # the legacy prefixed key works
    hook = AzureImageHook("az_gov")
    hook.get_credential()
    assert recorded[0]["authority"] == "https://login.microsoftonline.us"
    assert hook.arm_settings().resource_manager_endpoint == "https://management.usgovcloudapi.net/"
    assert hook.arm_settings().scopes() == ["https://management.usgovcloudapi.net/.default"]
    assert hook.packer_variables()[0]["cloud_environment_name"] == "USGovernment"

    set_conn(monkeypatch, "az_custom", tenantId=TENANT, subscriptionId=SUB,
             base_url="https://arm.example.internal", credential_scopes="https://arm.example.internal/.default other/.default",
             authority_host="https://login.example.internal/", connection_verify="/etc/ssl/private-ca.pem",
             polling_interval="2")
    hook = AzureImageHook("az_custom")
    hook.get_credential()
    assert recorded[1]["authority"] == "https://login.example.internal"
    assert recorded[1]["disable_instance_discovery"] is True  # MSAL cannot validate an unknown host
    assert recorded[1]["connection_verify"] == "/etc/ssl/private-ca.pem"
    assert hook.arm_settings().client_kwargs() == {
        "base_url": "https://arm.example.internal/",
        "credential_scopes": ["https://arm.example.internal/.default", "other/.default"],
        "connection_verify": "/etc/ssl/private-ca.pem", "polling_interval": 2.0}


def test_without_a_secret_the_providers_default_credential_helper_is_used(monkeypatch):
    from airflow.providers.microsoft.azure import utils

    seen = []
    monkeypatch.setattr(utils, "get_sync_default_azure_credential", lambda **kw: seen.append(kw) or "default-cred")
    set_conn(monkeypatch, "az_mi", login=None, password=None, subscriptionId=SUB,
             managed_identity_client_id="mi-client", workload_identity_tenant_id=TENANT)
    hook = AzureImageHook("az_mi")
    assert hook.get_credential() == "default-cred"
    assert seen == [{"managed_identity_client_id": "mi-client", "workload_identity_tenant_id": TENANT}]
    plain, sensitive = hook.packer_variables()
    assert sensitive == {}
    assert plain == {"subscription_id": SUB, "cloud_environment_name": "Public", "client_id": "", "tenant_id": "",
                     "use_azure_cli_auth": False}
    set_conn(monkeypatch, "az_cli", login=None, password=None, subscriptionId=SUB, use_azure_cli_auth=True)
    assert AzureImageHook("az_cli").packer_variables()[0]["use_azure_cli_auth"] is True


def test_packer_gets_the_secret_only_as_a_sensitive_variable(monkeypatch):
    set_conn(monkeypatch, "az_sp", tenantId=TENANT, subscriptionId=SUB)
    plain, sensitive = AzureImageHook("az_sp").packer_variables()
    assert sensitive == {"client_secret": SECRET}
    assert plain == {"subscription_id": SUB, "cloud_environment_name": "Public", "client_id": CLIENT,
                     "tenant_id": TENANT, "use_azure_cli_auth": False}
    assert SECRET not in json.dumps(plain)
    assert AzureImageHook("az_sp", subscription_id="sub-override").packer_variables()[0]["subscription_id"] == \
        "sub-override"


def test_azure_packer_operator_adds_plain_and_sensitive_auth(monkeypatch, tmp_path):
    from bakery.operators.azure import AzurePackerOperator

    set_conn(monkeypatch, "az_op", tenantId=TENANT, subscriptionId=SUB)
    op = AzurePackerOperator(task_id="build", conn_id="az_op", template_dir=str(tmp_path),
                             variables={"location": "westeurope"})
    assert op.get_sensitive_variables(None) == {"client_secret": SECRET}
    assert op.variables == {"location": "westeurope", "subscription_id": SUB, "cloud_environment_name": "Public",
                            "client_id": CLIENT, "tenant_id": TENANT, "use_azure_cli_auth": False}


@pytest.mark.parametrize("extra, message", [
    ({"tenantId": TENANT}, "no subscription: set extra.subscriptionId on connection 'az_bad'"),
    ({"tenantId": TENANT, "subscriptionId": SUB, "cloud_environment": "Mars"}, "'Mars' is not one of AzurePublicCloud"),
    ({"tenantId": TENANT, "subscriptionId": SUB, "resource_manager_endpoint": "http://arm"}, "must be an https:// URL"),
])
def test_unusable_connections_say_what_to_fix(monkeypatch, extra, message):
    set_conn(monkeypatch, "az_bad", **extra)
    with pytest.raises(AzureConnectionError, match=message.replace(".", r"\.")):
        AzureImageHook("az_bad").clients()


def test_sdk_auth_files_are_refused(monkeypatch):
    set_conn(monkeypatch, "az_file", subscriptionId=SUB, key_path="/secrets/sp.json")
    with pytest.raises(AzureConnectionError, match="key_path"):
        AzureImageHook("az_file").get_credential()


def test_clients_authenticate_with_the_connections_secret_at_the_emulator(monkeypatch):
    with ArmEmulator(retry_after=0, require_issued_tokens=True) as emu:
        world = AzureWorld(emu)
        monkeypatch.setenv("AIRFLOW_CONN_AZ_EMU", world.connection_json())
        with AzureImageHook("az_emu").clients() as az:
            az.resource.resource_groups.create_or_update("rg-x", {"location": "eastus2"})
            assert [g.name for g in az.resource.resource_groups.list()] == ["rg-x"]
        assert [(r.client_id, r.status) for r in emu.identity.token_requests] == [(world.client_id, 200)]

        bad = world.connection()
        bad["password"] = "wrong"
        monkeypatch.setenv("AIRFLOW_CONN_AZ_EMU_BAD", json.dumps(bad))
        with AzureImageHook("az_emu_bad").clients() as az, pytest.raises(Exception, match="AADSTS7000215"):
            az.resource.resource_groups.get("rg-x")
        assert emu.count("GET", r"/resourcegroups/rg-x$") == 0  # nothing reached ARM without a token
