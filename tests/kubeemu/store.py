"""The stateful heart of the emulator: objects, resourceVersions, watches, garbage collection.

Synchronous and thread-safe, so tests (and the kubelet helpers) can read and change state
from any thread while the HTTP side serves from its own event loop. Errors are raised as
`ApiError` with the HTTP status and reason the real API server would answer.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import jsonpatch

from .selectors import matches


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = False
    # Objects whose generation bumps on spec changes (CRDs and workload kinds do).
    has_generation: bool = False

    @property
    def key(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


CORE = [
    ResourceType("", "v1", "pods", "Pod", status_subresource=True),
    ResourceType("", "v1", "services", "Service", status_subresource=True),
    ResourceType("", "v1", "configmaps", "ConfigMap"),
    ResourceType("", "v1", "secrets", "Secret"),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim",
                 status_subresource=True),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount"),
    ResourceType("", "v1", "events", "Event"),
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, status_subresource=True),
    ResourceType("events.k8s.io", "v1", "events", "Event"),
    ResourceType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    ResourceType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                 "CustomResourceDefinition", namespaced=False, status_subresource=True),
]


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@dataclass
class Watcher:
    resource: str
    namespace: str | None
    label_selector: str | None
    field_selector: str | None
    deliver: Callable[[dict[str, Any]], None]


@dataclass
class Store:
    """All objects of the emulated cluster, keyed by (resource key, namespace, name)."""

    history_limit: int = 20000
    types: dict[str, ResourceType] = field(default_factory=dict)
    objects: dict[tuple[str, str | None, str], dict[str, Any]] = field(default_factory=dict)
    # Called (outside the lock) after every stored change: fn(type, resource, object).
    hooks: list[Callable[[str, ResourceType, dict[str, Any]], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._rv = 0
        self._history: deque[tuple[int, str, dict[str, Any]]] = deque(maxlen=self.history_limit)
        self._watchers: list[Watcher] = []
        self._pending_hooks: list[tuple[str, ResourceType, dict[str, Any]]] = []
        for rtype in CORE:
            self.register(rtype)
        self._ensure_namespace("default")

    # ------------------------------------------------------------------ registry

    def register(self, rtype: ResourceType) -> None:
        self.types[rtype.key] = rtype

    def type_of(self, group: str, plural: str) -> ResourceType:
        key = f"{plural}.{group}" if group else plural
        try:
            return self.types[key]
        except KeyError:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource "
                           f"({plural}.{group or 'core'})") from None

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    # ------------------------------------------------------------------ events

    def _emit(self, etype: str, rtype: ResourceType, obj: dict[str, Any]) -> None:
        event = {"type": etype, "object": copy.deepcopy(obj)}
        rv = int(obj["metadata"]["resourceVersion"])
        self._history.append((rv, rtype.key, event))
        for watcher in list(self._watchers):
            if self._watch_matches(watcher, rtype.key, obj):
                watcher.deliver(event)
        self._pending_hooks.append((etype, rtype, copy.deepcopy(obj)))

    def _flush_hooks(self) -> None:
        while True:
            with self._lock:
                if not self._pending_hooks:
                    return
                pending, self._pending_hooks = self._pending_hooks, []
            for etype, rtype, obj in pending:
                for hook in self.hooks:
                    hook(etype, rtype, obj)

    @staticmethod
    def _watch_matches(watcher: Watcher, resource: str, obj: dict[str, Any]) -> bool:
        if watcher.resource != resource:
            return False
        if watcher.namespace is not None and obj["metadata"].get("namespace") != watcher.namespace:
            return False
        return matches(obj, watcher.label_selector, watcher.field_selector)

    def watch(self, rtype: ResourceType, namespace: str | None, label_selector: str | None,
              field_selector: str | None, since: str | None,
              deliver: Callable[[dict[str, Any]], None]) -> Watcher:
        """Subscribe; replays history after `since` (410 Gone when it is too old)."""
        watcher = Watcher(rtype.key, namespace, label_selector, field_selector, deliver)
        with self._lock:
            if since in (None, "", "0"):
                for obj in self._list_locked(rtype, namespace, label_selector, field_selector):
                    deliver({"type": "ADDED", "object": obj})
            else:
                start = int(since)
                oldest = self._history[0][0] if self._history else self._rv + 1
                if start < oldest - 1 and start < self._rv:
                    raise ApiError(410, "Expired", f"too old resource version: {since} "
                                   f"({oldest - 1})")
                for rv, key, event in self._history:
                    if rv > start and self._watch_matches(watcher, key, event["object"]):
                        deliver(copy.deepcopy(event))
            self._watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            if watcher in self._watchers:
                self._watchers.remove(watcher)

    # ------------------------------------------------------------------ reads

    def _list_locked(self, rtype: ResourceType, namespace: str | None,
                     label_selector: str | None, field_selector: str | None
                     ) -> list[dict[str, Any]]:
        ordered = sorted(self.objects.items(), key=lambda kv: (kv[0][1] or "", kv[0][2]))
        return [copy.deepcopy(obj) for (key, ns, _), obj in ordered
                if key == rtype.key and (namespace is None or ns == namespace)
                and matches(obj, label_selector, field_selector)]

    def list(self, rtype: ResourceType, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None
             ) -> tuple[list[dict[str, Any]], str]:
        with self._lock:
            items = self._list_locked(rtype, namespace, label_selector, field_selector)
            return items, self.resource_version

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._get_locked(rtype, namespace, name))

    def _get_locked(self, rtype: ResourceType, namespace: str | None, name: str
                    ) -> dict[str, Any]:
        obj = self.objects.get((rtype.key, namespace if rtype.namespaced else None, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{rtype.plural}{"." + rtype.group if rtype.group else ""} '
                           f'"{name}" not found')
        return obj

    # ------------------------------------------------------------------ writes

    def _bump(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def create(self, rtype: ResourceType, namespace: str | None, body: dict[str, Any]
               ) -> dict[str, Any]:
        try:
            return self._create(rtype, namespace, body)
        finally:
            self._flush_hooks()

    def _create(self, rtype: ResourceType, namespace: str | None, body: dict[str, Any]
                ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not "
                               "match the namespace sent on the request")
            ns = namespace or body_ns
            if not ns:
                raise ApiError(400, "BadRequest", "a namespace is required")
            meta["namespace"] = ns
        else:
            ns = None
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(422, "Invalid", f"{rtype.kind}: metadata.name: Required value")
        for ref in meta.get("ownerReferences") or []:
            if not ref.get("uid"):
                raise ApiError(422, "Invalid", "metadata.ownerReferences.uid: Invalid value: "
                               '"": uid must not be empty')
        with self._lock:
            key = (rtype.key, ns, meta["name"])
            if key in self.objects:
                raise ApiError(409, "AlreadyExists",
                               f'{rtype.plural} "{meta["name"]}" already exists')
            obj["apiVersion"] = rtype.api_version
            obj["kind"] = rtype.kind
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta.pop("deletionTimestamp", None)
            if rtype.has_generation:
                meta["generation"] = 1
            if rtype.status_subresource and rtype.group not in ("",):
                obj.pop("status", None)  # custom resources: status only through /status
            if rtype.kind == "Pod":
                obj.setdefault("status", {}).setdefault("phase", "Pending")
            if rtype.kind == "PersistentVolumeClaim":
                obj.setdefault("status", {})["phase"] = "Bound"
            self._bump(obj)
            self.objects[key] = obj
            self._emit("ADDED", rtype, obj)
            if ns is not None:
                self._ensure_namespace(ns)
            return copy.deepcopy(obj)

    def _ensure_namespace(self, name: str) -> None:
        """Namespaces are implicit: the first object in one creates it (Active)."""
        nstype = self.types["namespaces"]
        if (nstype.key, None, name) in self.objects:
            return
        obj = {"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "uid": str(uuid.uuid4()),
                            "creationTimestamp": now_rfc3339()},
               "status": {"phase": "Active"}}
        self._bump(obj)
        self.objects[(nstype.key, None, name)] = obj
        self._emit("ADDED", nstype, obj)

    def patch(self, rtype: ResourceType, namespace: str | None, name: str, patch: Any,
              content_type: str, subresource: str | None = None) -> dict[str, Any]:
        def apply(current: dict[str, Any]) -> dict[str, Any]:
            if "json-patch" in content_type:
                try:
                    return jsonpatch.apply_patch(current, patch)
                except jsonpatch.JsonPatchTestFailed as exc:
                    raise ApiError(422, "Invalid", f"the server rejected our request due to an "
                                   f"error in our request: {exc}") from None
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    raise ApiError(422, "Invalid", str(exc)) from None
            if "apply-patch" in content_type:
                raise ApiError(415, "UnsupportedMediaType", "server-side apply is not emulated")
            # merge-patch and strategic-merge-patch (lists are replaced, not merged by key)
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            return merge_patch(current, patch)

        return self._update(rtype, namespace, name, apply, subresource)

    def replace(self, rtype: ResourceType, namespace: str | None, name: str,
                body: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
        expected = (body.get("metadata") or {}).get("resourceVersion")

        def apply(current: dict[str, Any]) -> dict[str, Any]:
            if expected and expected != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rtype.plural} '
                               f'"{name}": the object has been modified; please apply your '
                               f'changes to the latest version and try again')
            return copy.deepcopy(body)

        return self._update(rtype, namespace, name, apply, subresource)

    def _update(self, rtype: ResourceType, namespace: str | None, name: str,
                apply: Callable[[dict[str, Any]], dict[str, Any]], subresource: str | None
                ) -> dict[str, Any]:
        try:
            with self._lock:
                current = self._get_locked(rtype, namespace, name)
                changed = apply(copy.deepcopy(current))
                result = copy.deepcopy(current)
                if subresource == "status":
                    result["status"] = changed.get("status")
                    if result["status"] is None:
                        result.pop("status")
                elif subresource:
                    raise ApiError(404, "NotFound", f"subresource {subresource} is not emulated")
                else:
                    for key, value in changed.items():
                        if key in ("status",) and rtype.status_subresource:
                            continue  # the main resource ignores status (real API semantics)
                        if key == "metadata":
                            continue
                        result[key] = value
                    for key in list(result):
                        if key not in changed and key not in ("metadata", "apiVersion", "kind"):
                            if key == "status" and rtype.status_subresource:
                                continue
                            result.pop(key)
                    result["metadata"] = self._merge_meta(current["metadata"],
                                                          changed.get("metadata") or {})
                    if rtype.has_generation and _spec_part(result) != _spec_part(current):
                        result["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
                if result == current:
                    return copy.deepcopy(current)  # no-op writes keep the resourceVersion
                self._bump(result)
                key = (rtype.key, namespace if rtype.namespaced else None, name)
                meta = result["metadata"]
                if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                    del self.objects[key]
                    self._emit("DELETED", rtype, result)
                    self._collect_dependents(meta["uid"], "Background")
                else:
                    self.objects[key] = result
                    self._emit("MODIFIED", rtype, result)
                return copy.deepcopy(result)
        finally:
            self._flush_hooks()

    @staticmethod
    def _merge_meta(current: dict[str, Any], changed: dict[str, Any]) -> dict[str, Any]:
        meta = dict(changed)
        # The server owns these; clients cannot change them.
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "generation", "namespace",
                    "name", "resourceVersion"):
            if key in current:
                meta[key] = current[key]
            else:
                meta.pop(key, None)
        return meta

    def delete(self, rtype: ResourceType, namespace: str | None, name: str,
               propagation: str = "Background") -> dict[str, Any]:
        try:
            with self._lock:
                return self._delete_locked(rtype, namespace, name, propagation)
        finally:
            self._flush_hooks()

    def _delete_locked(self, rtype: ResourceType, namespace: str | None, name: str,
                       propagation: str) -> dict[str, Any]:
        obj = self._get_locked(rtype, namespace, name)
        key = (rtype.key, namespace if rtype.namespaced else None, name)
        meta = obj["metadata"]
        uid = meta["uid"]
        if propagation == "Orphan":
            self._orphan_dependents(uid)
        if meta.get("finalizers") or propagation == "Foreground":
            if propagation == "Foreground":
                # Dependents go first; the owner waits behind the foregroundDeletion finalizer.
                self._collect_dependents(uid, "Foreground")
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now_rfc3339()
                self._bump(obj)
                self._emit("MODIFIED", rtype, obj)
            if meta.get("finalizers"):
                return copy.deepcopy(obj)
        del self.objects[key]
        self._bump(obj)
        self._emit("DELETED", rtype, obj)
        if propagation != "Orphan":
            self._collect_dependents(uid, propagation)
        return copy.deepcopy(obj)

    def delete_collection(self, rtype: ResourceType, namespace: str | None,
                          label_selector: str | None, field_selector: str | None,
                          propagation: str = "Background") -> list[dict[str, Any]]:
        try:
            with self._lock:
                names = [o["metadata"]["name"] for o in
                         self._list_locked(rtype, namespace, label_selector, field_selector)]
                return [self._delete_locked(rtype, namespace, n, propagation) for n in names]
        finally:
            self._flush_hooks()

    def _dependents(self, uid: str) -> list[tuple[ResourceType, dict[str, Any]]]:
        return [(self.types[key], obj) for (key, _, _), obj in list(self.objects.items())
                if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])]

    def _collect_dependents(self, uid: str, propagation: str) -> None:
        """Garbage collection: dependents whose owner is gone are deleted (recursively)."""
        for rtype, obj in self._dependents(uid):
            meta = obj["metadata"]
            if meta.get("deletionTimestamp") and meta.get("finalizers"):
                continue
            try:
                self._delete_locked(rtype, meta.get("namespace"), meta["name"], propagation)
            except ApiError:
                pass

    def _orphan_dependents(self, uid: str) -> None:
        for rtype, obj in self._dependents(uid):
            refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            obj["metadata"]["ownerReferences"] = refs
            self._bump(obj)
            self._emit("MODIFIED", rtype, obj)

    # ------------------------------------------------------------------ status helpers

    def update_status(self, rtype: ResourceType, namespace: str | None, name: str,
                      mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Change an object's status in place (what a kubelet or controller would do)."""
        def apply(current: dict[str, Any]) -> dict[str, Any]:
            status = current.setdefault("status", {})
            mutate(status)
            return current

        return self._update(rtype, namespace, name, apply, "status")


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
