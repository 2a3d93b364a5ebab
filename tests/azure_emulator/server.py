"""``ArmEmulator``: the HTTPS front of the emulated Azure Resource Manager.

    with ArmEmulator() as emu:
        compute = ComputeManagementClient(StaticTokenCredential(), SUB, base_url=emu.endpoint,
                                          connection_verify=emu.ca_bundle, polling_interval=0.05)
        ...
        assert emu.count("PUT", r"/versions/1\\.0\\.0$") == 1

One thread serves HTTPS on 127.0.0.1 (a random free port unless one is given), handing each request
to :class:`~tests.azure_emulator.arm.Arm`; ``stop()`` (or leaving the ``with``) shuts down the
listener, every connection, every emulated VM's HTTP server and removes the temporary TLS files.
"""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from .arm import Arm, RequestRecord, Store
from .faults import Faults
from .identity import Identity
from .tls import TlsFiles, make_tls_files
from .vmhttp import NGINX_WELCOME, ImageBehaviour, LoopbackPool


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ArmEmulator/1.0"
    sys_version = ""
    timeout = 30  # an idle keep-alive connection is dropped after this
    disable_nagle_algorithm = True
    wbufsize = -1  # headers and body leave in one segment (flushed after each request)

    def _serve(self) -> None:
        server: _HttpsServer = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        response = server.arm.handle(self.command, self.path, dict(self.headers.items()), raw)
        payload = response.payload()
        self.send_response(response.status)
        request_id = str(uuid.uuid4())
        self.send_header("x-ms-request-id", request_id)
        self.send_header("x-ms-correlation-request-id", self.headers.get("x-ms-client-request-id") or request_id)
        self.send_header("Cache-Control", "no-cache")
        for key, value in response.headers.items():
            self.send_header(key, value)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the emulator keeps its own log
        pass


class _HttpsServer(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], arm: Arm, context: ssl.SSLContext) -> None:
        super().__init__(address, _Handler)
        self.arm = arm
        self.context = context
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the connection's own thread, so a slow client cannot stall the listener
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with self._conns_lock:
            self._conns.add(tls)
        try:
            super().finish_request(tls, client_address)
        finally:
            with self._conns_lock:
                self._conns.discard(tls)
            try:
                tls.close()
            except OSError:
                pass

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ArmEmulator:
    """A stateful Azure Resource Manager stand-in on https://127.0.0.1:PORT/.

    Parameters tune how ARM-like the timing is: ``lro_polls`` status polls answer ``InProgress``
    before an operation finishes (``replication_polls`` for gallery image versions), ``retry_after``
    is the integer ``Retry-After`` of LRO answers (0 makes clients use their own polling interval),
    ``page_size`` items per list page, ``background_seconds`` after which an operation finishes even
    if nobody polls (None: never). ``require_issued_tokens``: ARM accepts only bearer tokens issued by
    the emulator's own token endpoint (see identity.py and :meth:`add_client`); otherwise any bearer
    token. ``time_scale``: the emulator's clock runs that many times faster than real time (operation
    durations, replication progress; see arm.py). ``vm_http_port``: the port the emulated VMs serve on (80 if it can
    be bound, else a free one; see :attr:`vm_http_port`).
    """

    def __init__(self, *, port: int = 0, page_size: int = 2, lro_polls: int = 1, replication_polls: int = 2,
                 retry_after: int = 1, background_seconds: float | None = 10.0, seed: int = 0,
                 vm_http_port: int = 80, block_replicated_version_delete: bool = True,
                 require_issued_tokens: bool = False, time_scale: float = 1.0) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="arm-emulator-"))
        self.tls: TlsFiles = make_tls_files(self._tmp)
        self.faults = Faults(seed=seed)
        self.pool = LoopbackPool(vm_http_port)
        self.arm = Arm(page_size=page_size, lro_polls=lro_polls, replication_polls=replication_polls,
                       retry_after=retry_after, background_seconds=background_seconds, faults=self.faults,
                       pool=self.pool, block_replicated_version_delete=block_replicated_version_delete,
                       require_issued_tokens=require_issued_tokens, time_scale=time_scale)
        self._server = _HttpsServer(("127.0.0.1", port), self.arm, self.tls.server_context())
        self.port = self._server.server_address[1]
        self.arm.base_url = f"https://127.0.0.1:{self.port}"
        self.arm.identity.base_url = self.arm.base_url
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"arm-emulator-{self.port}", daemon=True)
        self._stopped = False
        self._thread.start()

    # --- connection facts ---------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """What to pass as ``base_url=`` (trailing slash included)."""
        return f"https://127.0.0.1:{self.port}/"

    @property
    def ca_bundle(self) -> str:
        """What to pass as ``connection_verify=`` (a PEM file with the emulator's CA)."""
        return str(self.tls.ca_bundle)

    @property
    def vm_http_port(self) -> int:
        """The port emulated VMs serve HTTP on: 80 when bindable (root), else one free port."""
        return self.pool.port

    @property
    def authority_host(self) -> str:
        """The emulator as a Microsoft Entra ID authority host (``authority=`` of azure-identity credentials,
        with ``disable_instance_discovery=True``): it serves the token endpoint of registered clients."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def identity(self) -> Identity:
        return self.arm.identity

    def add_client(self, tenant_id: str, client_id: str, client_secret: str) -> None:
        """Register a service principal that may get tokens from :attr:`authority_host`."""
        self.arm.identity.add_client(tenant_id, client_id, client_secret)

    def client_kwargs(self, polling_interval: float = 0.05) -> dict:
        """Keyword arguments for any azure-mgmt-* client: endpoint, CA and a quick polling interval."""
        return {"base_url": self.endpoint, "connection_verify": self.ca_bundle,
                "polling_interval": polling_interval}

    def env(self) -> dict:
        """Environment for the fake ``packer`` (tests/azure_emulator/bin/packer) to use this emulator."""
        return {"BAKERY_FAKE_PACKER_ARM_ENDPOINT": self.endpoint,
                "BAKERY_FAKE_PACKER_CA_BUNDLE": self.ca_bundle}

    # --- state & log ----------------------------------------------------------------------------------
    @property
    def state(self) -> Store:
        return self.arm.store

    @property
    def log(self) -> list[RequestRecord]:
        with self.arm.lock:
            return list(self.arm.log)

    def requests(self, method: str | None = None, path: str | None = None, *,
                 status: int | None = None) -> list[RequestRecord]:
        """Logged requests, filtered by method, a regex searched in the path, and answer status."""
        return [r for r in self.log
                if (method is None or r.method == method.upper())
                and (path is None or re.search(path, r.path, re.IGNORECASE))
                and (status is None or r.status == status)]

    def count(self, method: str | None = None, path: str | None = None, *, status: int | None = None) -> int:
        return len(self.requests(method, path, status=status))

    @property
    def internal_errors(self) -> list[str]:
        return list(self.arm.internal_errors)

    def get(self, resource_id: str) -> dict | None:
        """The resource as ARM would render it (no $expand), or None."""
        with self.arm.lock:
            res = self.arm.store.get(resource_id)
            return res.kind.render(self.arm, res, None) if res else None

    def vm_address(self, vm_id: str) -> list[str]:
        """Loopback addresses the emulated VM serves on (empty until it is running)."""
        with self.arm.lock:
            server = self.arm.vm_servers.get(vm_id.lower())
            return server.addresses if server else []

    def vm_http_requests(self, vm_id: str) -> list[tuple[str, str, str]]:
        with self.arm.lock:
            server = self.arm.vm_servers.get(vm_id.lower())
            return list(server.requests) if server else []

    # --- the Marketplace -------------------------------------------------------------------------------
    def publish_marketplace_version(self, publisher: str, offer: str, sku: str, version: str) -> None:
        """A new release of a Marketplace image (``latest`` now resolves to it if it is the highest)."""
        from . import marketplace

        with self.arm.lock:
            self.arm.marketplace = marketplace.with_version(self.arm.marketplace, publisher, offer, sku, version)

    # --- behaviour of emulated VMs --------------------------------------------------------------------
    def set_image_behaviour(self, image_name: str, status: int = 200, body: str = NGINX_WELCOME,
                            delay_seconds: float = 0.0, never_answers: bool = False,
                            boot_seconds: float = 0.0) -> ImageBehaviour:
        """What VMs created from managed image ``image_name`` (a glob: ``"nginx-*"``) serve on HTTP.

        Applies to VMs created afterwards, also through a gallery image version made from that image.
        Without an entry, tags ``emulator.http.status|body|delay_seconds|never_answers|boot_seconds`` on
        the managed image decide, and without those a VM serves nginx's welcome page.
        """
        behaviour = ImageBehaviour(status=status, body=body, delay_seconds=delay_seconds,
                                   never_answers=never_answers, boot_seconds=boot_seconds)
        with self.arm.lock:
            self.arm.behaviours.insert(0, (image_name, behaviour))
        return behaviour

    # --- lifecycle -------------------------------------------------------------------------------------
    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()  # joins the connection threads
        self._thread.join(timeout=10)
        self.arm.shutdown()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # a forgotten emulator must not keep threads or ports
        try:
            self.stop()
        except Exception:  # noqa: BLE001,S110 - nothing to report to at interpreter exit
            pass
