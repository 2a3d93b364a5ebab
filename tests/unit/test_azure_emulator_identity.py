"""The emulator's Entra ID token endpoint, through azure-identity (MSAL) and the fake packer.

Pins what the Azure tests rely on: a client-secret credential pointed at the emulator gets a token
only with the right secret, ARM then accepts only such tokens (``require_issued_tokens``), the
secret never lands in the emulator's request log, and the fake packer authenticates the same way.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.identity import ClientSecretCredential
from azure.mgmt.resource.resources import ResourceManagementClient

from tests.azure_emulator import FAKE_PACKER, ArmEmulator, StaticTokenCredential
from tests.azure_emulator.world import AzureWorld

SUB = "00000000-0000-0000-0000-0000000000a1"


@pytest.fixture
def emu():
    emulator = ArmEmulator(retry_after=0, require_issued_tokens=True)
    try:
        yield emulator
    finally:
        emulator.stop()
    assert emulator.internal_errors == []


def credential(emu: ArmEmulator, world: AzureWorld, secret: str | None = None, tenant: str | None = None):
    return ClientSecretCredential(tenant or world.tenant_id, world.client_id, secret or world.client_secret,
                                  authority=emu.authority_host, disable_instance_discovery=True,
                                  connection_verify=emu.ca_bundle)


def test_a_client_secret_credential_gets_a_token_and_arm_accepts_only_issued_tokens(emu):
    world = AzureWorld(emu)
    cred = credential(emu, world)
    token = cred.get_token(emu.endpoint + ".default")
    assert token.token.startswith("emu.") and token.expires_on > 0
    rc = ResourceManagementClient(cred, SUB, base_url=emu.endpoint, connection_verify=emu.ca_bundle,
                                  credential_scopes=[emu.endpoint + ".default"])
    rc.resource_groups.create_or_update("rg-a", {"location": "eastus2"})
    assert [g.name for g in rc.resource_groups.list()] == ["rg-a"]

    static = ResourceManagementClient(StaticTokenCredential(), SUB, **emu.client_kwargs())
    with pytest.raises(HttpResponseError) as err:
        list(static.resource_groups.list())
    assert err.value.status_code == 401 and err.value.error.code == "InvalidAuthenticationToken"

    assert world.client_secret not in json.dumps([r.body for r in emu.log], default=str)
    paths = [(r.method, r.path.split("/", 2)[-1]) for r in emu.log[:2]]
    assert paths == [("GET", "v2.0/.well-known/openid-configuration"), ("POST", "oauth2/v2.0/token")]


@pytest.mark.parametrize("secret, tenant, message", [
    ("wrong-secret", None, "AADSTS7000215: Invalid client secret provided"),
    (None, "99999999-0000-0000-0000-000000000000", "AADSTS90002: Tenant '99999999-0000-0000-0000-000000000000' not found"),
])
def test_wrong_secret_or_tenant_is_refused_like_entra_id(emu, secret, tenant, message):
    world = AzureWorld(emu)
    with pytest.raises(ClientAuthenticationError, match=message):
        credential(emu, world, secret=secret, tenant=tenant).get_token(emu.endpoint + ".default")
    assert [t.status for t in emu.identity.token_requests] == [401 if secret else 400]
    assert emu.identity.issued == []


def test_without_require_issued_tokens_any_bearer_token_still_works():
    with ArmEmulator(retry_after=0) as emu:
        rc = ResourceManagementClient(StaticTokenCredential(), SUB, **emu.client_kwargs())
        assert list(rc.resource_groups.list()) == []


TEMPLATE = """
variable "client_id" { type = string }
variable "tenant_id" { type = string }
variable "client_secret" {
  type      = string
  sensitive = true
}
variable "use_azure_cli_auth" {
  type    = bool
  default = false
}
source "azure-arm" "t" {
  client_id                         = var.use_azure_cli_auth ? "" : var.client_id
  client_secret                     = var.use_azure_cli_auth ? "" : var.client_secret
  tenant_id                         = var.use_azure_cli_auth ? "" : var.tenant_id
  subscription_id                   = "%s"
  os_type                           = "Linux"
  image_publisher                   = "Canonical"
  image_offer                       = "ubuntu-24_04-lts"
  image_sku                         = "server"
  build_resource_group_name         = "rg-build"
  managed_image_name                = "img-1"
  managed_image_resource_group_name = "rg-img"
}
build { sources = ["source.azure-arm.t"] }
""" % SUB


@pytest.mark.parametrize("good", [True, False])
def test_the_fake_packer_logs_in_with_the_sensitive_client_secret(emu, tmp_path, good):
    world = AzureWorld(emu)
    with world.clients() as az:
        az.resource.resource_groups.create_or_update("rg-img", {"location": "eastus2"})
        az.resource.resource_groups.create_or_update("rg-build", {"location": "westeurope"})
    (tmp_path / "t.pkr.hcl").write_text(TEMPLATE)
    (tmp_path / "vars.json").write_text(json.dumps({"client_id": world.client_id, "tenant_id": world.tenant_id}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PKR_VAR_", "BAKERY_FAKE_PACKER_"))}
    env.update(emu.env(), PKR_VAR_client_secret=world.client_secret if good else "not-the-secret")
    proc = subprocess.run([str(FAKE_PACKER), "build", "-machine-readable", "-var-file=vars.json", "."], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    out = proc.stdout.replace("%!(PACKER_COMMA)", ",")
    if good:
        assert proc.returncode == 0, out + proc.stderr
        assert "Getting tokens using client secret" in out
        image = emu.get(f"/subscriptions/{SUB}/resourceGroups/rg-img/providers/Microsoft.Compute/images/img-1")
        assert image["location"] == "westeurope"  # the build resource group's region, as azure-arm does
        # the build VM and its network went into the existing group, and out of it again
        assert [e[0] for e in emu.state.history if "/virtualMachines/pkrvm" in e[1]] == ["create", "delete"]
        assert [i for i in emu.state.ids() if "/resourceGroups/rg-build/" in i] == []
    else:
        assert proc.returncode == 1
        assert "error fetching service principal token: invalid_client: AADSTS7000215" in out
        assert emu.state.ids("Microsoft.Compute/images") == []
    assert world.client_secret not in out + proc.stderr
