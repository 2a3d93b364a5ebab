"""The emulator's Microsoft Entra ID side: an OAuth2 token endpoint for service principals.

Product code authenticates exactly as against Entra ID: azure-identity's ``ClientSecretCredential``
(MSAL underneath) with ``authority=<emulator endpoint>`` and ``disable_instance_discovery=True``
(what any non-Microsoft authority host needs). MSAL then asks, on the emulator's HTTPS port:

    GET  /{tenant}/v2.0/.well-known/openid-configuration     tenant discovery
    POST /{tenant}/oauth2/v2.0/token                          client_credentials grant (form body)

and ``/common/discovery/instance`` is answered too, in case instance discovery is left on. Tokens
are opaque random strings, issued only for a registered (tenant, client id, secret); with
``ArmEmulator(require_issued_tokens=True)`` ARM accepts no other bearer token, so a test proves that
the product really authenticated with the connection's secret. These endpoints need no bearer
token, are logged like ARM requests, and are never hit by injected faults (they are not ARM calls).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

_OPENID = re.compile(r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration$", re.IGNORECASE)
_TOKEN = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$", re.IGNORECASE)
_INSTANCE = re.compile(r"^/common/discovery/instance$", re.IGNORECASE)


def is_identity_path(path: str) -> bool:
    return bool(_OPENID.match(path) or _TOKEN.match(path) or _INSTANCE.match(path))


@dataclass
class IssuedToken:
    token: str
    tenant: str
    client_id: str
    scope: str
    expires: float


@dataclass
class TokenRequest:
    tenant: str
    client_id: str | None
    scope: str | None
    grant_type: str | None
    status: int
    time: float = field(default_factory=time.time)


class Identity:
    """Registered service principals and the tokens issued to them (``emulator.identity``)."""

    def __init__(self, token_lifetime: int = 3599) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], str] = {}  # (tenant lower, client id lower) -> secret
        self._tokens: dict[str, IssuedToken] = {}
        self.token_lifetime = token_lifetime
        self.token_requests: list[TokenRequest] = []
        self.base_url = "https://127.0.0.1"

    # --- configuration (tests) ---------------------------------------------------------------------
    def add_client(self, tenant_id: str, client_id: str, client_secret: str) -> None:
        """Register a service principal: ``client_id`` with ``client_secret`` in ``tenant_id``."""
        with self._lock:
            self._clients[(tenant_id.lower(), client_id.lower())] = client_secret

    @property
    def issued(self) -> list[IssuedToken]:
        with self._lock:
            return list(self._tokens.values())

    def token_info(self, token: str) -> IssuedToken | None:
        with self._lock:
            info = self._tokens.get(token)
        if info is None or info.expires < time.time():
            return None
        return info

    # --- HTTP ---------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, raw_body: bytes) -> tuple[int, dict, dict]:
        """(status, JSON body, headers) for an identity endpoint."""
        if m := _OPENID.match(path):
            if method != "GET":
                return 405, {"error": "invalid_request", "error_description": "GET only"}, {}
            return 200, self._openid(m["tenant"]), {}
        if _INSTANCE.match(path):
            return 200, self._instance(query), {}
        m = _TOKEN.match(path)
        assert m is not None
        if method != "POST":
            return 405, {"error": "invalid_request", "error_description": "AADSTS900561: The endpoint only accepts "
                                                                          "POST requests."}, {}
        return self._token(m["tenant"], raw_body)

    def _openid(self, tenant: str) -> dict:
        base = f"{self.base_url}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": f"{self.base_url}/{tenant}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "arm-emulator",
        }

    def _instance(self, query: dict) -> dict:
        authorize = query.get("authorization_endpoint", "")
        m = re.match(r"^https://[^/]+/([^/]+)/", authorize)
        tenant = m.group(1) if m else "common"
        host = self.base_url.split("://", 1)[1]
        return {
            "tenant_discovery_endpoint": f"{self.base_url}/{tenant}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }

    def _token(self, tenant: str, raw_body: bytes) -> tuple[int, dict, dict]:
        form = dict(parse_qsl(raw_body.decode("utf-8", "replace"), keep_blank_values=True))
        grant, client_id = form.get("grant_type"), form.get("client_id")
        scope, secret = form.get("scope"), form.get("client_secret")

        def answer(status: int, body: dict) -> tuple[int, dict, dict]:
            with self._lock:
                self.token_requests.append(TokenRequest(tenant, client_id, scope, grant, status))
            return status, body, {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}

        def error(status: int, code: str, description: str) -> tuple[int, dict, dict]:
            return answer(status, {"error": code, "error_description": description,
                                   "error_codes": [int(m.group(1)) for m in [re.match(r"AADSTS(\d+)", description)] if m],
                                   "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
                                   "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4())})

        if grant != "client_credentials":
            return error(400, "unsupported_grant_type",
                         f"AADSTS7000216: The emulator only supports grant_type client_credentials, not {grant!r}.")
        if not scope or not all(s.endswith("/.default") for s in scope.split()):
            return error(400, "invalid_scope", f"AADSTS1002012: The provided value for scope {scope} is not valid. "
                                               "Client credential flows must have a scope value with /.default "
                                               "suffixed to the resource identifier (application ID URI).")
        with self._lock:
            tenants = {t for t, _ in self._clients}
            expected = self._clients.get((tenant.lower(), (client_id or "").lower()))
        if tenant.lower() not in tenants:
            return error(400, "invalid_request", f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you "
                                                 "have the correct tenant ID and are signing into the correct cloud.")
        if expected is None:
            return error(400, "unauthorized_client", f"AADSTS700016: Application with identifier '{client_id}' was "
                                                     f"not found in the directory '{tenant}'.")
        if not secret or not secrets.compare_digest(secret, expected):
            return error(401, "invalid_client", f"AADSTS7000215: Invalid client secret provided. Ensure the secret "
                                                f"being sent in the request is the client secret value, not the "
                                                f"client secret ID, for a secret added to app '{client_id}'.")
        token = "emu." + secrets.token_urlsafe(32)
        info = IssuedToken(token, tenant, client_id or "", scope, time.time() + self.token_lifetime)
        with self._lock:
            self._tokens[token] = info
        return answer(200, {"token_type": "Bearer", "expires_in": self.token_lifetime,
                            "ext_expires_in": self.token_lifetime, "access_token": token})


def json_bytes(body: dict) -> bytes:
    return json.dumps(body).encode()
