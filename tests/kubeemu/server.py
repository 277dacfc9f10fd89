"""The HTTP face of the emulator: a kmock 0.8 `KubernetesEmulator` subclass over `Store`.

kmock gives the aiohttp server, request parsing and API discovery; every request for a
known resource is served here instead, with the semantics kopf and the operator depend on
(see README.md for the list, and for what is not emulated).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import rendering

from .store import ApiError, ResourceType, Store

_PATH = re.compile(
    r"^/(?:api/(?P<cv>v1)|apis/(?P<group>[^/]+)/(?P<gv>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?(?:/(?P<plural>[^/]+))?(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?/?$"
)


@dataclass(frozen=True)
class Call:
    """One request as RBAC sees it."""

    verb: str
    group: str
    resource: str
    subresource: str | None
    namespace: str | None
    status: int = 0


@dataclass
class Faults:
    """Answer a seeded fraction of the operator's requests with errors.

    `conflict` answers 409 (writes only: a create answered 409 would be a lie about
    existence), `server_error` 500, `timeout` performs the request and then answers 504,
    the ambiguous case a client must survive. Watches are never faulted.
    """

    rate: float = 0.0
    seed: int = 0
    kinds: tuple[str, ...] = ("conflict", "server_error", "timeout")
    delay: float = 0.05
    injected: Counter = field(default_factory=Counter)

    # Deterministic failures: (verb, resource, name) -> True answers 500 every time.
    blocks: list[Callable[[str, str, str | None], bool]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    def block(self, predicate: Callable[[str, str, str | None], bool]) -> Callable[[], None]:
        """Fail matching requests with 500 until the returned function is called."""
        self.blocks.append(predicate)
        return lambda: self.blocks.remove(predicate)

    def blocked(self, verb: str, resource: str, name: str | None) -> bool:
        return any(rule(verb, resource, name) for rule in list(self.blocks))

    def draw(self, verb: str) -> str | None:
        if self.rate <= 0 or verb == "watch":
            return None
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            kinds = [k for k in self.kinds if not (k == "conflict" and verb in ("create", "get",
                                                                                    "list"))]
            kind = self._random.choice(kinds) if kinds else None
            if kind:
                self.injected[kind] += 1
            return kind


def _status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
            "code": code, "reason": reason, "message": message}


def _json(body: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(body=json.dumps(body).encode(), status=status,
                                content_type="application/json")


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    store: Store = attrs.field(factory=Store)
    faults: Faults = attrs.field(factory=Faults)
    calls: list[Call] = attrs.field(factory=list)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for rtype in self.store.types.values():
            self._declare(rtype)

    def _declare(self, rtype: ResourceType) -> None:
        verbs = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
        sub = ["status"] if rtype.status_subresource else []
        self.resources[f"{rtype.group}/{rtype.version}/{rtype.plural}"] = kmock.ResourceInfo(
            kind=rtype.kind, namespaced=rtype.namespaced, verbs=verbs, subresources=sub,
            singular=rtype.kind.lower())

    def register(self, rtype: ResourceType) -> None:
        self.store.register(rtype)
        self._declare(rtype)

    def register_crd(self, crd: dict[str, Any]) -> ResourceType:
        """Serve a CustomResourceDefinition's resource (with its status subresource)."""
        spec = crd["spec"]
        version = next(v for v in spec["versions"] if v.get("storage", True))
        rtype = ResourceType(spec["group"], version["name"], spec["names"]["plural"],
                             spec["names"]["kind"], namespaced=spec.get("scope") == "Namespaced",
                             status_subresource="status" in (version.get("subresources") or {}),
                             has_generation=True)
        self.register(rtype)
        try:
            self.store.create(self.store.type_of("apiextensions.k8s.io",
                                                 "customresourcedefinitions"), None, crd)
        except ApiError:
            pass
        return rtype

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's URL parser fails on the cluster-scoped /api/v1/namespaces[/<name>].
        if re.fullmatch(r"/api/v1/namespaces(/[^/]+)?/?", raw_request.path):
            body = await raw_request.read()
            request = rendering.Request(
                method=raw_request.method, url=raw_request.url, params=dict(raw_request.query),
                headers=dict(raw_request.headers), body=body, raw_request=raw_request)
            try:
                return await self._handle(request)
            except Exception as exc:  # same contract as kmock: errors become API errors
                return await self._render_error(exc)
        return await super().__call__(raw_request)

    async def _serve_version(self, request: rendering.Request) -> Any:
        listing = await super()._serve_version(request)
        # The core group's version is "v1", not "/v1".
        listing["groupVersion"] = listing.get("groupVersion", "").lstrip("/")
        return listing

    # ------------------------------------------------------------------ request handling

    @staticmethod
    def _verb(method: str, name: str | None, params: dict[str, str]) -> str:
        if method == "GET":
            if params.get("watch") in ("true", "1"):
                return "watch"
            return "get" if name else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or (
            "delete" if name else "deletecollection")

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        del self._requests[:-200]  # kmock keeps every request; the Call log is enough here
        raw = request._raw_request
        match = _PATH.match(request.url.path)
        if raw is None or match is None:
            return await super()._handle(request)
        group = match.group("group") or ""
        ns, plural, name, sub = match.group("ns"), match.group("plural"), match.group("name"), \
            match.group("sub")
        if ns and not plural and not group:  # /api/v1/namespaces/<name>: a Namespace itself
            ns, plural, name = None, "namespaces", ns
        if not plural:
            return await super()._handle(request)
        params = dict(request.params)
        method = request.method.value
        verb = self._verb(method, name, params)
        call = Call(verb, group, plural, sub, ns)
        try:
            rtype = self.store.type_of(group, plural)
        except ApiError as exc:
            self.calls.append(call)
            return _json(_status_body(exc.status, exc.reason, exc.message), exc.status)

        fault = self.faults.draw(verb)
        target = name
        if verb == "create" and request.body:
            try:
                target = (json.loads(request.body).get("metadata") or {}).get("name")
            except (ValueError, AttributeError):
                target = None
        if self.faults.blocked(verb, plural, target):
            fault = "server_error"
        if fault == "conflict":
            self.calls.append(Call(verb, group, plural, sub, ns, 409))
            return _json(_status_body(409, "Conflict", "injected conflict: the object has been "
                                      "modified; please apply your changes and try again"), 409)
        if fault == "server_error":
            self.calls.append(Call(verb, group, plural, sub, ns, 500))
            return _json(_status_body(500, "InternalError", "injected server error"), 500)
        try:
            if verb == "watch":
                self.calls.append(call)
                return await self._serve_watch_stream(raw, rtype, ns, name, params)
            response = self._serve(rtype, verb, method, ns, name, sub, params, request, raw)
        except ApiError as exc:
            response = _json(_status_body(exc.status, exc.reason, exc.message), exc.status)
        self.calls.append(Call(verb, group, plural, sub, ns, response.status))
        if fault == "timeout":
            await asyncio.sleep(self.faults.delay)
            return _json(_status_body(504, "Timeout", "injected timeout: the request may or may "
                                      "not have been applied"), 504)
        return response

    def _serve(self, rtype: ResourceType, verb: str, method: str, ns: str | None,
               name: str | None, sub: str | None, params: dict[str, str],
               request: rendering.Request, raw: aiohttp.web.BaseRequest) -> aiohttp.web.Response:
        store = self.store
        body = None
        if request.body and "protobuf" not in raw.headers.get("Content-Type", ""):
            body = json.loads(request.body)
        if verb == "get":
            return _json(store.get(rtype, ns, name))
        if verb == "list":
            items, rv = store.list(rtype, ns, params.get("labelSelector"),
                                   params.get("fieldSelector"))
            return _json({"apiVersion": rtype.api_version, "kind": f"{rtype.kind}List",
                          "metadata": {"resourceVersion": rv}, "items": items})
        if verb == "create":
            if "protobuf" in raw.headers.get("Content-Type", ""):
                raise ApiError(415, "UnsupportedMediaType", "protobuf is not emulated; send JSON")
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be an object")
            return _json(store.create(rtype, ns, body), 201)
        if verb == "patch":
            ctype = raw.headers.get("Content-Type", "application/merge-patch+json")
            return _json(store.patch(rtype, ns, name, body, ctype, sub))
        if verb == "update":
            return _json(store.replace(rtype, ns, name, body or {}, sub))
        propagation = (params.get("propagationPolicy")
                       or (body or {}).get("propagationPolicy") or "Background")
        if verb == "delete":
            return _json(store.delete(rtype, ns, name, propagation))
        deleted = store.delete_collection(rtype, ns, params.get("labelSelector"),
                                          params.get("fieldSelector"), propagation)
        return _json({"apiVersion": rtype.api_version, "kind": f"{rtype.kind}List",
                      "metadata": {}, "items": deleted})

    async def _serve_watch_stream(self, raw: aiohttp.web.BaseRequest, rtype: ResourceType,
                                  ns: str | None, name: str | None, params: dict[str, str]
                                  ) -> aiohttp.web.StreamResponse:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        field_selector = params.get("fieldSelector")
        if name:
            field_selector = ",".join(filter(None, [field_selector, f"metadata.name={name}"]))

        def deliver(event: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        try:
            watcher = self.store.watch(rtype, ns, params.get("labelSelector"), field_selector,
                                       params.get("resourceVersion"), deliver)
        except ApiError as exc:
            return _json(_status_body(exc.status, exc.reason, exc.message), exc.status)
        response = aiohttp.web.StreamResponse(status=200)
        response.content_type = "application/json"
        await response.prepare(raw)
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        deadline = loop.time() + timeout if timeout else None
        try:
            while True:
                wait = None if deadline is None else max(deadline - loop.time(), 0)
                try:
                    event = await asyncio.wait_for(queue.get(), wait)
                except asyncio.TimeoutError:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(watcher)
        try:
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return response
