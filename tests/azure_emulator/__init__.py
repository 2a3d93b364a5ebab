"""A test-only emulator of Azure Resource Manager, and a fake ``packer``, for end-to-end tests.

Product code keeps using the real Azure SDK clients; only the endpoint and the trusted CA change:

    from tests.azure_emulator import ArmEmulator, StaticTokenCredential

    with ArmEmulator() as emu:                       # HTTPS on 127.0.0.1:<free port>, own test CA
        compute = ComputeManagementClient(StaticTokenCredential(), SUBSCRIPTION,
                                          base_url=emu.endpoint, connection_verify=emu.ca_bundle)
        ...                                          # (emu.client_kwargs() = those two + a quick polling_interval)

``ArmEmulator`` (server.py):
    endpoint, ca_bundle, port, vm_http_port    where to connect / what to trust / the VMs' HTTP port
    state                                      the resource store: get(id), ids(type), of_type(type),
                                               history [(create|update|delete, id, type)], created_ids(type)
    get(id)                                    a resource rendered as ARM would (no $expand)
    log, requests(method, path_regex, status=), count(...)   every request with its answer status
    faults                                     fault injection (faults.py): add(), random(), fail_lro(),
                                               slow_lro(), slow_replication(), clear(), injected
    set_image_behaviour(image_glob, status=, body=, delay_seconds=, never_answers=, boot_seconds=)
                                               what VMs made from that managed image serve over HTTP
    vm_address(vm_id), vm_http_requests(vm_id)  the emulated VM's HTTP side
    env()                                      BAKERY_FAKE_PACKER_* for the fake packer
    authority_host, add_client(tenant, client_id, secret), identity
                                               Entra ID token endpoint (identity.py): a client-secret
                                               credential with authority=authority_host and
                                               disable_instance_discovery=True gets real tokens
    internal_errors                            emulator bugs (answered 500): tests assert it is empty
    stop() / context manager                   shuts everything down (no thread or socket survives)
Constructor knobs: port, page_size (2), lro_polls (1), replication_polls (2), retry_after (1; 0 makes
clients use their polling_interval), background_seconds (10), time_scale (1), seed, vm_http_port (80),
block_replicated_version_delete (True),
require_issued_tokens (False: any bearer token is accepted; True: only tokens from the token endpoint).

``FAKE_PACKER`` is the ``packer`` test double (put ``FAKE_PACKER_BIN_DIR`` first on PATH), see
fake_packer.py. Modules: arm.py (generic ARM contract: store, LROs, paging, errors; tag-filtered
``/resources`` lists without tags), kinds.py (the per-type table), marketplace.py (Marketplace images
and the purchase-plan rule, ``VMMarketplaceInvalidInput``), faults.py, vmhttp.py (the VMs' "nginx"),
identity.py (token endpoint), tls.py, credential.py, regions.py.
"""

from pathlib import Path

from .arm import ArmError, RequestRecord, Resource, Store
from .credential import StaticTokenCredential
from .faults import Faults
from .identity import Identity
from .server import ArmEmulator
from .vmhttp import NGINX_WELCOME, ImageBehaviour

FAKE_PACKER_BIN_DIR = Path(__file__).resolve().parent / "bin"
FAKE_PACKER = FAKE_PACKER_BIN_DIR / "packer"

__all__ = [
    "FAKE_PACKER",
    "FAKE_PACKER_BIN_DIR",
    "NGINX_WELCOME",
    "ArmEmulator",
    "ArmError",
    "Faults",
    "Identity",
    "ImageBehaviour",
    "RequestRecord",
    "Resource",
    "StaticTokenCredential",
    "Store",
]
