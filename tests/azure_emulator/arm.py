"""The emulator's engine: a generic ARM resource store, long-running operations and routing.

Everything type-specific lives in ``kinds.py`` (one :class:`Kind` per resource type, found through the
table ``KINDS``); this module only knows ARM's generic contract:

* ``PUT`` creates (201) or updates (200). Kinds with ``lro_put`` answer with a non-terminal
  ``provisioningState`` plus ``Azure-AsyncOperation`` and ``Retry-After`` headers; the operation
  reports ``InProgress`` for ``polls`` polls (and at least ``seconds``), then ``Succeeded`` or
  ``Failed`` (with ARM's error shape), and the resource's provisioningState follows.
* ``DELETE`` of an existing resource answers 202 with ``Azure-AsyncOperation`` + ``Location`` (or
  only ``Location`` for resource groups); the resource is ``Deleting`` and disappears when the
  operation finishes. ``DELETE`` of a missing resource answers 204.
* ``GET`` of a collection pages with ``nextLink`` (absolute, with ``api-version`` and ``$skiptoken``).
  ``/resources`` lists filtered by tag (``$filter=tagName eq ... and tagValue eq ...``) come back
  without the resources' tags, as ARM documents.
* The Marketplace's "Virtual Machine Images" API (marketplace.py) answers for the images it knows.
* Errors are ``{"error": {"code", "message"[, "target", "details"]}}``.

An operation is also finished by time alone after ``background_seconds`` (ARM keeps working when
nobody polls), and any GET of the resource counts as a poll, like a client polling provisioningState.
Operation times (``slow_lro`` seconds, ``background_seconds``, replication progress) are on the
emulator's clock, which runs ``time_scale`` times faster than real time (default 1): a 600 s
replication at ``time_scale=20`` takes 30 real seconds.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import re
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from .faults import Faults
from .identity import is_identity_path

if TYPE_CHECKING:  # pragma: no cover
    from .kinds import Kind


# --- errors and responses --------------------------------------------------------------------------
class ArmError(Exception):
    def __init__(self, status: int, code: str, message: str, *, target: str | None = None,
                 details: list | None = None, headers: dict | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.target, self.details, self.headers = target, details, headers or {}

    def error(self) -> dict:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            err["target"] = self.target
        if self.details:
            err["details"] = self.details
        return err

    def body(self) -> dict:
        return {"error": self.error()}


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list -> JSON; None -> empty
    headers: dict = field(default_factory=dict)

    def payload(self) -> bytes:
        if self.body is None:
            return b""
        return json.dumps(self.body).encode()


@dataclass
class RequestRecord:
    method: str
    path: str  # normalized, no query
    query: dict
    status: int = 0
    fault: bool = False  # answered by fault injection
    time: float = 0.0
    body: Any = None


def not_found(kind_type: str, name: str, rg: str) -> ArmError:
    return ArmError(404, "ResourceNotFound",
                    f"The Resource '{kind_type}/{name}' under resource group '{rg}' was not found. "
                    "For more details please go to https://aka.ms/ARMResourceNotFoundFix")


def rg_not_found(rg: str) -> ArmError:
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")


def iso_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


# --- store ------------------------------------------------------------------------------------------
@dataclass
class Operation:
    id: str
    method: str
    resource_id: str
    namespace: str
    location: str
    api_version: str
    subscription: str
    polls_needed: int
    min_seconds: float
    started: float
    fail: tuple[str, str] | None = None
    polls_seen: int = 0
    status: str = "InProgress"
    error: dict | None = None
    ended: float | None = None
    start_iso: str = field(default_factory=iso_now)
    end_iso: str | None = None
    location_only: bool = False  # resource-group style: Location header, no Azure-AsyncOperation
    segment: str = "operations"  # Microsoft.Compute/locations/X/{operations|capsOperations|diskOperations}

    @property
    def done(self) -> bool:
        return self.status != "InProgress"

    def fraction(self, now: float) -> float:
        """How far the operation is (0..1), for progress reporting (replication)."""
        if self.done:
            return 1.0
        parts = []
        if self.polls_needed:
            parts.append(self.polls_seen / (self.polls_needed + 1))
        if self.min_seconds:
            parts.append((now - self.started) / self.min_seconds)
        return max(0.0, min(parts)) if parts else 0.0


@dataclass
class Resource:
    id: str
    kind: Kind
    name: str
    subscription: str
    resource_group: str | None
    parent_id: str | None
    body: dict
    created: float = field(default_factory=time.time)
    meta: dict = field(default_factory=dict)  # emulator-internal facts (never rendered)
    op: Operation | None = None

    @property
    def type(self) -> str:
        return self.kind.type

    @property
    def properties(self) -> dict:
        return self.body.setdefault("properties", {})

    @property
    def provisioning_state(self) -> str | None:
        return self.body.get("properties", {}).get("provisioningState")

    @property
    def location(self) -> str | None:
        return self.body.get("location")

    @property
    def tags(self) -> dict:
        return self.body.get("tags") or {}


class Store:
    """All resources by lower-cased id, in creation order. ``emulator.state`` for assertions."""

    def __init__(self) -> None:
        self._items: dict[str, Resource] = {}
        self.history: list[tuple[str, str, str]] = []  # (event, resource id, type): create/update/delete

    def get(self, rid: str) -> Resource | None:
        return self._items.get(rid.lower().rstrip("/"))

    def exists(self, rid: str) -> bool:
        return self.get(rid) is not None

    def put(self, res: Resource) -> None:
        self._items[res.id.lower()] = res

    def remove(self, rid: str) -> None:
        self._items.pop(rid.lower(), None)

    def all(self) -> list[Resource]:
        return list(self._items.values())

    def of_type(self, type_: str, *, resource_group: str | None = None,
                parent_id: str | None = None, subscription: str | None = None) -> list[Resource]:
        out = []
        for res in list(self._items.values()):  # a snapshot: server threads may be adding
            if res.type.lower() != type_.lower():
                continue
            if subscription is not None and res.subscription.lower() != subscription.lower():
                continue
            if resource_group is not None and (res.resource_group or "").lower() != resource_group.lower():
                continue
            if parent_id is not None and (res.parent_id or "").lower() != parent_id.lower():
                continue
            out.append(res)
        return out

    def ids(self, type_: str | None = None) -> list[str]:
        return [r.id for r in list(self._items.values()) if type_ is None or r.type.lower() == type_.lower()]

    def children(self, rid: str) -> list[Resource]:
        prefix = rid.lower() + "/"
        return [r for key, r in list(self._items.items()) if key.startswith(prefix)]

    def events(self, event: str | None = None, type_: str | None = None) -> list[tuple[str, str, str]]:
        return [h for h in list(self.history)
                if (event is None or h[0] == event) and (type_ is None or h[2].lower() == type_.lower())]

    def created_ids(self, type_: str | None = None) -> list[str]:
        return [h[1] for h in self.events("create", type_)]


# --- the engine -------------------------------------------------------------------------------------
_OP_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/(?P<ns>[^/]+)/locations/(?P<loc>[^/]+)/"
                    r"(?P<kind>operations|capsOperations|diskOperations|operationResults)/(?P<op>[^/]+)$", re.IGNORECASE)
_RG_OP_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/operationresults/(?P<op>[^/]+)$", re.IGNORECASE)
_RGS_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups(?:/(?P<rg>[^/]+))?$", re.IGNORECASE)
_GENERIC_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)(?:/resourcegroups/(?P<rg>[^/]+))?/resources$",
                         re.IGNORECASE)
_VMIMAGE_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/"
                         r"publishers/(?P<pub>[^/]+)/artifacttypes/vmimage/offers/(?P<offer>[^/]+)/skus/(?P<sku>[^/]+)/"
                         r"versions(?:/(?P<version>[^/]+))?$", re.IGNORECASE)
_PROVIDER_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)(?:/resourcegroups/(?P<rg>[^/]+))?/providers/"
                          r"(?P<ns>[^/]+)/(?P<rest>.+)$", re.IGNORECASE)


@dataclass
class Ctx:
    """What a kind's hooks get to know about the request."""

    arm: Arm
    method: str
    path: str
    query: dict
    api_version: str
    subscription: str
    resource_group: str | None
    names: list[str]
    rid: str

    def q(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.query.items():
            if key.lower() == name.lower():
                return value
        return default


class Arm:
    def __init__(self, *, page_size: int = 2, lro_polls: int = 1, replication_polls: int = 2,
                 retry_after: int = 1, background_seconds: float | None = 10.0,
                 faults: Faults | None = None, pool: Any = None,
                 block_replicated_version_delete: bool = True, identity: Any = None,
                 require_issued_tokens: bool = False, time_scale: float = 1.0) -> None:
        from .identity import Identity

        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.time_scale = time_scale
        self.lock = threading.RLock()
        self.identity = identity or Identity()
        self.require_issued_tokens = require_issued_tokens
        self.store = Store()
        self.ops: dict[str, Operation] = {}
        self.faults = faults or Faults()
        self.log: list[RequestRecord] = []
        self.internal_errors: list[str] = []  # emulator bugs (answered 500): tests should assert none
        self.base_url = "https://127.0.0.1"
        self.page_size = page_size
        self.lro_polls = lro_polls
        self.replication_polls = replication_polls
        self.retry_after = retry_after
        self.background_seconds = background_seconds
        self.block_replicated_version_delete = block_replicated_version_delete
        self.pool = pool  # vmhttp.LoopbackPool, for the emulated VMs' addresses
        self.behaviours: list[tuple[str, Any]] = []  # (image name glob, ImageBehaviour), newest first
        self.vm_servers: dict[str, Any] = {}  # vm id (lower) -> vmhttp.VmHttpServer
        from .marketplace import IMAGES

        self.marketplace = list(IMAGES)  # this emulator's Marketplace (a test can publish a newer version)

    # --- entry point ------------------------------------------------------------------------------
    def handle(self, method: str, target: str, headers: dict, raw_body: bytes) -> Response:
        method = method.upper()
        split = urlsplit(target)
        path = "/" + "/".join(unquote(s) for s in split.path.split("/") if s)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        record = RequestRecord(method, path, query, time=time.time())
        try:
            record.body = json.loads(raw_body) if raw_body else None
        except ValueError:
            record.body = raw_body
        try:
            if is_identity_path(path):  # Entra ID's token endpoints: no bearer token, no faults
                record.body = None  # a form with a client secret: never kept in the log
                status, body, extra = self.identity.handle(method, path, query, raw_body)
                response = Response(status, body, extra)
            else:
                response = self._handle(method, path, query, headers, raw_body, record)
        except ArmError as err:
            response = Response(err.status, err.body(), dict(err.headers))
        except Exception:  # noqa: BLE001 - an emulator bug: say so loudly instead of hanging the client
            trace = traceback.format_exc()
            self.internal_errors.append(trace)
            response = Response(500, {"error": {"code": "EmulatorInternalError", "message": trace[-2000:]}})
        if method == "HEAD":
            response.body = None
        record.status = response.status
        with self.lock:
            self.log.append(record)
        return response

    def _handle(self, method: str, path: str, query: dict, headers: dict, raw_body: bytes,
                record: RequestRecord) -> Response:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not auth.lower().startswith("bearer ") or not auth[7:].strip():
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.",
                           headers={"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                                    'common", error="invalid_token", error_description="The authentication failed '
                                    'because of missing \'Authorization\' header."'})
        if self.require_issued_tokens and self.identity.token_info(auth[7:].strip()) is None:
            raise ArmError(401, "InvalidAuthenticationToken",
                           "The access token is invalid (not issued by this emulator's token endpoint, or expired).",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token", '
                                    'error_description="The access token is invalid."'})
        key = method + " " + path + "?" + urlencode(sorted(query.items())) + " " + hashlib.sha1(raw_body or b"").hexdigest()
        fault = self.faults.http_fault(method, path, key, clock=self.clock(), time_scale=self.time_scale)
        if fault is not None:
            record.fault = True
            extra = {"Retry-After": _num(fault.retry_after)} if fault.retry_after is not None else {}
            raise ArmError(fault.status, fault.code, fault.message, headers=extra)
        with self.lock:
            self._tick()
            api_version = _q(query, "api-version")
            if not api_version:
                raise ArmError(400, "MissingApiVersionParameter",
                               "The api-version query parameter (?api-version=) is required for all requests.")
            body = None
            if method in ("PUT", "PATCH", "POST") and raw_body:
                try:
                    body = json.loads(raw_body)
                except ValueError as exc:
                    raise ArmError(400, "InvalidRequestContent",
                                   f"The request content was invalid and could not be deserialized: '{exc}'.")
            return self._route(method, path, query, api_version, body)

    # --- routing ----------------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict, api_version: str, body: Any) -> Response:
        from .kinds import KINDS, RESOURCE_GROUP

        if m := _OP_RE.match(path):
            location_style = m["kind"].lower() == "operationresults" or (_q(query, "monitor") or "").lower() == "true"
            return self._operation(method, m["op"], location_style=location_style)
        if m := _RG_OP_RE.match(path):
            return self._operation(method, m["op"], location_style=True)
        if m := _RGS_RE.match(path):
            ctx = Ctx(self, method, path, query, api_version, m["sub"], m["rg"], [m["rg"]] if m["rg"] else [], "")
            if not m["rg"]:
                if method != "GET":
                    raise _method_not_allowed(method)
                return self._page(ctx, [r for r in self.store.of_type(RESOURCE_GROUP.type)
                                        if r.subscription.lower() == m["sub"].lower()])
            ctx.rid = f"/subscriptions/{m['sub']}/resourceGroups/{m['rg']}"
            return self._item(RESOURCE_GROUP, ctx, body)
        if m := _VMIMAGE_RE.match(path):
            if method != "GET":
                raise _method_not_allowed(method)
            return self._marketplace(m, query)
        if m := _GENERIC_RE.match(path):
            if method != "GET":
                raise _method_not_allowed(method)
            ctx = Ctx(self, method, path, query, api_version, m["sub"], m["rg"], [], "")
            if m["rg"]:
                self._require_rg(m["sub"], m["rg"])
            return self._generic_list(ctx)
        m = _PROVIDER_RE.match(path)
        if not m:
            raise ArmError(404, "NotFound", f"The requested path '{path}' is not served by the ARM emulator.")
        sub, rg, ns = m["sub"], m["rg"], m["ns"]
        segs = m["rest"].split("/")
        types, names = segs[0::2], segs[1::2]
        type_key = (ns + "/" + "/".join(types)).lower()
        action = None
        kind = KINDS.get(type_key)
        if kind is None and len(segs) >= 3 and len(segs) % 2 == 1:
            kind = KINDS.get((ns + "/" + "/".join(types[:-1])).lower())
            if kind is not None and types[-1].lower() in kind.actions:
                action = types[-1].lower()
            else:
                kind = None
        if kind is None:
            raise ArmError(400, "InvalidResourceType",
                           f"The resource type '{'/'.join(types)}' could not be found in the namespace '{ns}' "
                           f"for api version '{api_version}'.")
        ctx = Ctx(self, method, path, query, api_version, sub, rg, names, "")
        if rg is None:  # subscription-wide list of a top-level type
            if len(segs) != 1 or method != "GET":
                raise ArmError(404, "NotFound", f"The requested path '{path}' is not served by the ARM emulator.")
            return self._page(ctx, self.store.of_type(kind.type, subscription=sub))
        rg_res = self._require_rg(sub, rg)
        ctx.resource_group = rg_res.name
        if len(segs) % 2 == 1 and action is None:  # a collection
            if method != "GET":
                raise _method_not_allowed(method)
            parent_id = None
            if len(names):
                parent_id = self.make_id(sub, rg_res.name, kind, names, parent_only=True)
                self._require_parent(parent_id, names[-1], kind)
            items = self.store.of_type(kind.type, resource_group=rg_res.name, subscription=sub, parent_id=parent_id)
            return self._page(ctx, items)
        ctx.rid = self.make_id(sub, rg_res.name, kind, names)
        if action is not None:
            res = self._get_existing(kind, ctx)
            return kind.actions[action](self, ctx, res)
        return self._item(kind, ctx, body)

    def _marketplace(self, m: re.Match, query: dict) -> Response:
        """Virtual Machine Images - List (a bare JSON array in name order as strings, ``$orderby``,
        ``$top``) / Get (see marketplace.py)."""
        from . import marketplace, regions

        location = regions.normalize(m["loc"])
        image = marketplace.find(m["pub"], m["offer"], m["sku"], self.marketplace)
        if location is None or image is None:
            raise marketplace.not_found()
        if m["version"] is None:
            versions = marketplace.list_versions(image, query)
            return Response(200, [{"location": location, "name": v,
                                   "id": marketplace.image_id(m["sub"], location, image, v)} for v in versions])
        if m["version"] not in image.versions:
            raise marketplace.not_found()
        return Response(200, marketplace.render_version(m["sub"], location, image, m["version"]))

    def make_id(self, sub: str, rg: str, kind: Kind, names: list[str], parent_only: bool = False) -> str:
        segments = kind.segments[:-1] if parent_only else kind.segments
        names = names[: len(segments)]
        parts = [f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{kind.namespace}"]
        for seg, name in zip(segments, names):
            parts.append(f"{seg}/{name}")
        return "/".join(parts)

    def _require_rg(self, sub: str, rg: str) -> Resource:
        res = self.store.get(f"/subscriptions/{sub}/resourceGroups/{rg}")
        if res is None:
            raise rg_not_found(rg)
        return res

    def _require_parent(self, parent_id: str, parent_name: str, kind: Kind) -> Resource:
        parent = self.store.get(parent_id)
        if parent is None:
            raise ArmError(404, "ParentResourceNotFound",
                           f"Can not perform requested operation on nested resource. Parent resource "
                           f"'{parent_name}' not found.")
        return parent

    def _get_existing(self, kind: Kind, ctx: Ctx) -> Resource:
        if len(ctx.names) > 1:
            parent_id = ctx.rid.rsplit("/", 2)[0]
            self._require_parent(parent_id, ctx.names[-2], kind)
        res = self.store.get(ctx.rid)
        if res is not None and res.op is not None:
            self._advance(res.op, polled=True)
            res = self.store.get(ctx.rid)
        if res is None:
            raise kind.not_found_error(ctx)
        return res

    # --- one resource -------------------------------------------------------------------------------
    def _item(self, kind: Kind, ctx: Ctx, body: Any) -> Response:
        if ctx.method in ("GET", "HEAD"):
            if kind.is_resource_group and ctx.method == "HEAD":
                res = self.store.get(ctx.rid)
                return Response(204 if res else 404)
            res = self._get_existing(kind, ctx)
            return Response(200, kind.render(self, res, ctx))
        if ctx.method in ("PUT", "PATCH"):
            return self._put(kind, ctx, body)
        if ctx.method == "DELETE":
            return self._delete(kind, ctx)
        raise _method_not_allowed(ctx.method)

    def _put(self, kind: Kind, ctx: Ctx, body: Any) -> Response:
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                                                         "deserialized: the request body must be a JSON object.")
        if not kind.is_resource_group:
            rg = self._require_rg(ctx.subscription, ctx.resource_group or "")
            if rg.op is not None and rg.op.method == "DELETE":
                raise ArmError(409, "ResourceGroupBeingDeleted", f"The resource group '{rg.name}' is in "
                                                                 "deprovisioning state and cannot perform this operation.")
        if len(ctx.names) > 1:
            self._require_parent(ctx.rid.rsplit("/", 2)[0], ctx.names[-2], kind)
        kind.validate_name(ctx, ctx.names[-1])
        existing = self.store.get(ctx.rid)
        if existing is not None and existing.op is not None:
            self._advance(existing.op, polled=True)
            existing = self.store.get(ctx.rid)
        if existing is not None and existing.op is not None:
            raise kind.busy_error(self, existing, ctx)
        if ctx.method == "PATCH":
            if existing is None:
                raise kind.not_found_error(ctx)
            body = _merge_patch(copy.deepcopy(existing.body), body)
        body = copy.deepcopy(body)
        if kind.tracked:
            body["location"] = self._check_location(kind, ctx, body, existing)
        stored = kind.build(self, ctx, body, existing)
        is_new = existing is None
        if is_new:
            res = Resource(id=ctx.rid, kind=kind, name=ctx.names[-1], subscription=ctx.subscription,
                           resource_group=ctx.resource_group if not kind.is_resource_group else ctx.names[-1],
                           parent_id=ctx.rid.rsplit("/", 2)[0] if len(ctx.names) > 1 else None, body=stored)
        else:
            res = existing
            res.body = stored
        headers: dict[str, str] = {}
        if kind.lro_put:
            res.properties["provisioningState"] = kind.pending_state(is_new)
            op = self._start_op(ctx, res, ctx.method, kind)
            headers = self._op_headers(op, location_header=False)
        else:
            res.properties["provisioningState"] = "Succeeded"
        self.store.put(res)
        self.store.history.append(("create" if is_new else "update", res.id, res.type))
        kind.after_put(self, res, ctx, is_new)
        if not kind.lro_put:
            kind.on_succeeded(self, res)
        return Response(201 if is_new and kind.created_status_201 else 200, kind.render(self, res, ctx), headers)

    def _check_location(self, kind: Kind, ctx: Ctx, body: dict, existing: Resource | None) -> str:
        from . import regions

        raw = body.get("location")
        if not raw:
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        loc = regions.normalize(raw)
        if loc is None:
            raise ArmError(400, "LocationNotAvailableForResourceType",
                           f"The provided location '{raw}' is not available for resource type '{kind.type}'. "
                           f"List of available regions for the resource type is "
                           f"'{','.join(sorted(regions.DISPLAY_NAMES))}'.")
        if existing is not None and existing.location and existing.location != loc:
            if kind.is_resource_group:
                raise ArmError(409, "InvalidResourceGroupLocation",
                               f"Invalid resource group location '{raw}'. The Resource group already exists in "
                               f"location '{existing.location}'.")
            raise ArmError(409, "InvalidResourceLocation",
                           f"The resource '{existing.name}' already exists in location '{existing.location}' in "
                           f"resource group '{existing.resource_group}'. A resource with the same name cannot be "
                           f"created in location '{raw}'. Please select a new resource name.")
        return loc

    def _delete(self, kind: Kind, ctx: Ctx) -> Response:
        if not kind.is_resource_group:
            self._require_rg(ctx.subscription, ctx.resource_group or "")
        res = self.store.get(ctx.rid)
        if res is not None and res.op is not None:
            self._advance(res.op, polled=True)
            res = self.store.get(ctx.rid)
        if res is None:
            return Response(204)
        if res.op is not None:
            if res.op.method == "DELETE":  # a repeated DELETE joins the running one
                return Response(202, None, self._op_headers(res.op, location_header=True))
            raise kind.busy_error(self, res, ctx)
        kind.check_delete(self, res, ctx)
        res.properties["provisioningState"] = "Deleting"
        op = self._start_op(ctx, res, "DELETE", kind)
        return Response(202, None, self._op_headers(op, location_header=True))

    # --- collections ----------------------------------------------------------------------------------
    def _page(self, ctx: Ctx, items: list[Resource]) -> Response:
        try:
            start = int(_q(ctx.query, "$skiptoken") or 0)
        except ValueError:
            raise ArmError(400, "InvalidSkipToken", "The provided $skiptoken is not valid.")
        size = max(1, int(self.page_size))
        page = items[start:start + size]
        body: dict[str, Any] = {"value": [r.kind.render(self, r, ctx) for r in page]}
        if start + size < len(items):
            params = {k: v for k, v in ctx.query.items() if k.lower() != "$skiptoken"}
            params["$skiptoken"] = str(start + size)
            body["nextLink"] = f"{self.base_url}{quote(ctx.path)}?{urlencode(params, quote_via=quote, safe='$')}"
        return Response(200, body)

    def _generic_list(self, ctx: Ctx) -> Response:
        from .kinds import RESOURCE_GROUP

        flt = _q(ctx.query, "$filter") or ""
        items = [r for r in self.store.all() if r.kind is not RESOURCE_GROUP and r.kind.tracked
                 and r.subscription.lower() == ctx.subscription.lower()
                 and (ctx.resource_group is None or (r.resource_group or "").lower() == ctx.resource_group.lower())]
        conditions = re.findall(r"(\w+)\s+eq\s+'([^']*)'", flt)
        for field_name, value in conditions:
            fl = field_name.lower()
            if fl == "resourcetype":
                items = [r for r in items if r.type.lower() == value.lower()]
            elif fl == "tagname":
                items = [r for r in items if value.lower() in {k.lower() for k in r.tags}]
            elif fl == "tagvalue":
                items = [r for r in items if value in r.tags.values()]
            elif fl == "name":
                items = [r for r in items if r.name.lower() == value.lower()]
            elif fl == "location":
                items = [r for r in items if (r.location or "") == value.lower()]
        # "When you filter by a tag name and value, the tags for each resource are not returned in the
        # results" (Resources - List By Resource Group, $filter): the emulator drops them for any tag filter
        tag_filtered = any(f.lower() in ("tagname", "tagvalue") for f, _ in conditions)
        generic = _GenericView(with_tags=not tag_filtered)
        wrapped = [_Wrapped(r, generic) for r in items]
        return self._page(ctx, wrapped)  # type: ignore[arg-type]

    # --- long-running operations ---------------------------------------------------------------------
    def clock(self) -> float:
        """The emulator's monotonic clock (seconds), ``time_scale`` times faster than real time."""
        return time.monotonic() * self.time_scale

    def _start_op(self, ctx: Ctx, res: Resource, method: str, kind: Kind) -> Operation:
        polls = self.replication_polls if kind.polls_setting == "replication" else self.lro_polls
        seconds, slow_polls = self.faults.lro_slowness(method, ctx.path)
        if slow_polls is not None:
            polls = max(polls, slow_polls)
        namespace = kind.namespace if not kind.is_resource_group else "Microsoft.Resources"
        op = Operation(
            id=str(uuid.uuid4()), method=method, resource_id=res.id, namespace=namespace,
            location=res.location or "global", api_version=ctx.api_version, subscription=ctx.subscription,
            polls_needed=polls, min_seconds=seconds, started=self.clock(),
            fail=self.faults.lro_failure(method, ctx.path), location_only=kind.is_resource_group,
            segment=kind.operations_segment,
        )
        self.ops[op.id] = op
        res.op = op
        return op

    def _op_urls(self, op: Operation) -> tuple[str, str]:
        if op.location_only:
            loc = (f"{self.base_url}/subscriptions/{op.subscription}/operationresults/{op.id}"
                   f"?api-version={op.api_version}")
            return loc, loc
        base = f"{self.base_url}/subscriptions/{op.subscription}/providers/{op.namespace}/locations/{op.location}"
        if op.namespace.lower() == "microsoft.network":  # Network: .../operations/ID and .../operationResults/ID
            query = f"api-version={op.api_version}"
            return f"{base}/operations/{op.id}?{query}", f"{base}/operationResults/{op.id}?{query}"
        # Compute: one URL, the Location variant with monitor=true
        query = f"p={op.id[:8]}&api-version={op.api_version}"
        url = f"{base}/{op.segment}/{op.id}?{query}"
        return url, url + "&monitor=true"

    def _op_headers(self, op: Operation, *, location_header: bool) -> dict:
        async_url, location_url = self._op_urls(op)
        headers = {"Retry-After": _num(self.retry_after)}
        if not op.location_only:
            headers["Azure-AsyncOperation"] = async_url
        if location_header or op.location_only:
            headers["Location"] = location_url
        return headers

    def _tick(self) -> None:
        for op in list(self.ops.values()):
            if not op.done:
                self._advance(op, polled=False)

    def _advance(self, op: Operation, *, polled: bool) -> None:
        if op.done:
            return
        now = self.clock()
        elapsed = now - op.started
        due = op.polls_seen >= op.polls_needed and elapsed >= op.min_seconds
        background = self.background_seconds is not None and elapsed >= max(self.background_seconds, op.min_seconds)
        if due or background:
            self._complete(op)
        elif polled:
            op.polls_seen += 1

    def _complete(self, op: Operation) -> None:
        op.ended, op.end_iso = self.clock(), iso_now()
        res = self.store.get(op.resource_id)
        if op.fail is not None:
            op.status = "Failed"
            op.error = {"code": op.fail[0], "message": op.fail[1]}
        else:
            op.status = "Succeeded"
        if res is None or res.op is not op:
            return
        res.op = None
        if op.method in ("PUT", "PATCH"):
            if op.status == "Failed":
                res.properties["provisioningState"] = "Failed"
                res.kind.on_failed(self, res, op)
            else:
                res.properties["provisioningState"] = "Succeeded"
                res.kind.on_succeeded(self, res)
        elif op.method == "DELETE":
            if op.status == "Failed":
                res.properties["provisioningState"] = "Succeeded"
            else:
                self.remove(res)

    def remove(self, res: Resource) -> None:
        """Delete a resource and everything nested under it (children first, newest first)."""
        from .kinds import RESOURCE_GROUP

        if res.kind is RESOURCE_GROUP:
            doomed = [r for r in self.store.all() if r is not res and r.subscription.lower() == res.subscription.lower()
                      and (r.resource_group or "").lower() == res.name.lower()]
        else:
            doomed = self.store.children(res.id)
        for child in sorted(doomed, key=lambda r: r.created, reverse=True):
            if self.store.get(child.id) is child:
                self._drop(child)
        self._drop(res)

    def _drop(self, res: Resource) -> None:
        if res.op is not None and not res.op.done:
            res.op.status, res.op.ended, res.op.end_iso = "Succeeded", self.clock(), iso_now()
        res.op = None
        self.store.remove(res.id)
        self.store.history.append(("delete", res.id, res.type))
        res.kind.on_deleted(self, res)

    def _operation(self, method: str, op_id: str, *, location_style: bool) -> Response:
        if method != "GET":
            raise _method_not_allowed(method)
        op = self.ops.get(op_id)
        if op is None:
            raise ArmError(404, "NotFound", f"The operation '{op_id}' was not found.")
        self._advance(op, polled=True)
        if not location_style:
            body: dict[str, Any] = {"startTime": op.start_iso, "status": op.status, "name": op.id}
            if op.done:
                body["endTime"] = op.end_iso
            if op.error:
                body["error"] = op.error
            return Response(200, body)
        # Location-header semantics: 202 while running, then the operation's final answer
        if not op.done:
            return Response(202, None, self._op_headers(op, location_header=True))
        if op.status == "Failed":
            return Response(500 if op.method != "DELETE" else 409, {"error": op.error})
        if op.method == "DELETE":
            return Response(200 if op.location_only else 204)
        res = self.store.get(op.resource_id)
        return Response(200, res.kind.render(self, res, None) if res else None)

    # --- helpers for kinds ----------------------------------------------------------------------------
    def resource(self, rid: str | None) -> Resource | None:
        return self.store.get(rid) if rid else None

    def behaviour_for(self, image_name: str, tags: dict) -> Any:
        from fnmatch import fnmatchcase

        from .vmhttp import ImageBehaviour

        for pattern, behaviour in self.behaviours:
            if fnmatchcase(image_name.lower(), pattern.lower()):
                return behaviour
        return ImageBehaviour.from_tags(tags) or ImageBehaviour()

    def shutdown(self) -> None:
        with self.lock:
            servers = list(self.vm_servers.values())
            self.vm_servers.clear()
        for server in servers:
            server.stop(release=server.reservations)
        with self.lock:
            for res in self.store.all():
                for reservation in res.meta.get("reservations", {}).values():
                    reservation.close()
                if res.meta.get("reservation") is not None:
                    res.meta["reservation"].close()


class _GenericView:
    """Renders any resource as ARM's GenericResource (for /resources lists); without its tags when the
    list was filtered by tag, as ARM answers."""

    def __init__(self, *, with_tags: bool = True) -> None:
        self.with_tags = with_tags

    def render(self, arm: Arm, res: Resource, ctx: Any) -> dict:
        out = {"id": res.id, "name": res.name, "type": res.type, "location": res.location}
        if res.tags and self.with_tags:
            out["tags"] = dict(res.tags)
        expand = {x.strip().lower() for x in (ctx.q("$expand") or "").split(",")} if ctx is not None else set()
        if "createdtime" in expand:  # GenericResourceExpanded: only when asked for, as ARM does
            out["createdTime"] = _dt.datetime.fromtimestamp(res.created, _dt.UTC).isoformat()
        return out


class _Wrapped:
    def __init__(self, res: Resource, kind: _GenericView) -> None:
        self._res, self.kind = res, kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._res, name)


def _q(query: dict, name: str) -> str | None:
    for key, value in query.items():
        if key.lower() == name.lower():
            return value
    return None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _method_not_allowed(method: str) -> ArmError:
    return ArmError(405, "MethodNotAllowed", f"The requested method '{method}' is not allowed on this resource.")


def _merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch (what ARM PATCH does for most resources)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict) and key != "tags":
            target[key] = _merge_patch(target[key], value)
        else:
            target[key] = value
    return target

