"""The operator's view of the cluster: its jobs and their children, list + watch.

Everything the job loops decide from is watched here, the way client-go's reflector does it:
list (the children with a server-side `labelSelector`: kopf filters `labels=` on the client,
streaming every Pod and ConfigMap of every watched namespace), then watch from the list's
resourceVersion with bookmarks, resume from the last version seen after a dropped or
timed-out stream, list again after `410 Gone` (etcd compacted the version away), and wait
as long as a 429's Retry-After asks. Each object is kept as the view a decision reads, not
whole: a FineTuneJob as its identity, spec and status (kopf's copy of each job kept its
managedFields too, and its per-object state and finalizer patch were a sixth of the
operator's CPU at scale and most of its memory per job, benchmarks/operator_scale_real.py). Kueue's ResourceFlavors
(a handful, cluster-scoped, not ours) are watched whole, by name.

`Index` is pure (objects in, views out, keyed by (namespace, job)); `Watch` is the I/O: one
thread per (kind, namespace) running the synchronous client, handing each event to the
asyncio loop, where every change to an index happens (no locks).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import random
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from ftjob_api import api, naming

from . import kueue, observe
from .k8s import loads, retry_after

log = logging.getLogger(__name__)

SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.MANAGER}"
CONNECT_SECONDS = 5
RETRY_BASE_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0
ABSENT_KIND_SECONDS = 30.0  # how often to look again for a kind the server lacks (Kueue)

Key = tuple[str, str]  # (namespace, job)
View = Callable[[dict[str, Any]], tuple[Key, Any] | None]


# --------------------------------------------------------------------------- the views

# What a decision reads of a job's metadata (JobState.from_body, the deletion, the
# resourceVersion that orders two copies, the finalizer an older operator put there).
JOB_METADATA = ("name", "namespace", "uid", "generation", "resourceVersion",
                "deletionTimestamp", "finalizers")


def job_view(body: dict[str, Any]) -> dict[str, Any]:
    """A FineTuneJob without what no decision reads (managedFields, annotations: most of
    it): what the index keeps of each job, and each loop of its own last status write."""
    meta = body.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in JOB_METADATA if k in meta},
            "spec": body.get("spec"), "status": body.get("status")}


def job_entry(body: dict[str, Any]) -> tuple[Key, Any] | None:
    meta = body.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or ""), job_view(body)


def flavor_entry(body: dict[str, Any]) -> tuple[Any, Any] | None:
    """A ResourceFlavor by its name: where the pods of a job Kueue admitted with it go."""
    return (body.get("metadata") or {}).get("name") or "", kueue.flavor_placement(body)


def pod_entry(body: dict[str, Any]) -> tuple[Key, Any] | None:
    view = observe.pod_view(body)
    return ((body["metadata"].get("namespace") or "", view.job), view) if view else None


def started_spec_entry(body: dict[str, Any]) -> tuple[Key, Any] | None:
    """The job's started-spec ConfigMap: its data and the digest of the document in it."""
    meta = body.get("metadata") or {}
    job = (meta.get("labels") or {}).get(naming.LABEL_JOB)
    if not job or meta.get("name") != naming.config_map(job):
        return None
    return (meta.get("namespace") or "", job), observe.started_spec_view(body)


def workload_entry(body: dict[str, Any]) -> tuple[Key, Any] | None:
    view = kueue.workload_view(body)
    if view is None:
        return None
    meta = body["metadata"]
    return (meta.get("namespace") or "", meta["labels"][naming.LABEL_JOB]), view


# --------------------------------------------------------------------------- the index


class Index(Mapping[Key, tuple[Any, ...]]):
    """(namespace, job) -> the views of that job's objects, fed by `replace` (a list) and
    `put` (a watch event's `entry`, made on the watch's thread). Both return the keys whose
    views changed."""

    def __init__(self, view: View):
        self._view = view
        self._objects: dict[tuple[str, str], tuple[Key, Any]] = {}  # (ns, name) -> entry
        self._by_key: dict[Key, dict[str, Any]] = {}

    def __getitem__(self, key: Key) -> tuple[Any, ...]:
        return tuple(self._by_key[key].values())

    def __iter__(self) -> Iterator[Key]:
        return iter(self._by_key)

    def __len__(self) -> int:
        return len(self._by_key)

    def entry(self, event_type: str, body: dict[str, Any]
              ) -> tuple[tuple[str, str], tuple[Key, Any] | None]:
        """Pure (any thread): the object's (namespace, name) and what `put` files for it."""
        meta = body.get("metadata") or {}
        ident = (meta.get("namespace") or "", meta.get("name") or "")
        return ident, None if event_type == "DELETED" else self._view(body)

    def replace(self, bodies: list[dict[str, Any]], namespace: str | None = None
                ) -> set[Key]:
        """A fresh list (of `namespace`, or of all when None): what it lacks is gone."""
        fresh = {}
        for body in bodies:
            meta = body.get("metadata") or {}
            fresh[(meta.get("namespace") or "", meta.get("name") or "")] = self._view(body)
        changed: set[Key] = set()
        for ident in [i for i in self._objects
                      if (namespace is None or i[0] == namespace) and i not in fresh]:
            changed |= self.put(ident, None)
        for ident, entry in fresh.items():
            changed |= self.put(ident, entry)
        return changed

    def put(self, ident: tuple[str, str], entry: tuple[Key, Any] | None) -> set[Key]:
        old = self._objects.pop(ident, None)
        changed: set[Key] = set()
        if old is not None:
            self._by_key[old[0]].pop(ident[1], None)
            if not self._by_key[old[0]]:
                del self._by_key[old[0]]
            changed.add(old[0])
        if entry is not None:
            self._objects[ident] = entry
            self._by_key.setdefault(entry[0], {})[ident[1]] = entry[1]
            changed.add(entry[0])
        if old is not None and entry is not None and old == entry:
            return set()
        return changed


# --------------------------------------------------------------------------- the streams


@dataclass(frozen=True)
class Kind:
    """How to list (and watch) one kind: `lister(namespace or None, **params)`; `selector`:
    the server-side label selector (None: every object of the kind)."""
    name: str
    lister: Callable[..., Any]
    view: View
    namespaced: bool = True
    selector: str | None = SELECTOR


JOBS, FLAVORS = api.PLURAL, kueue.FLAVOR_PLURAL
CHILDREN = ("pods", "configmaps", kueue.PLURAL)


def kinds(api_client: client.ApiClient) -> list[Kind]:
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)

    def core_lister(namespaced: Callable[..., Any], everywhere: Callable[..., Any]):
        return lambda ns, **kw: namespaced(ns, **kw) if ns else everywhere(**kw)

    def custom_lister(group: str, version: str, plural: str):
        def lister(ns: str | None, **kw: Any) -> Any:
            if ns:
                return custom.list_namespaced_custom_object(group, version, ns, plural, **kw)
            return custom.list_cluster_custom_object(group, version, plural, **kw)
        return lister

    return [
        Kind(JOBS, custom_lister(api.GROUP, api.VERSION, api.PLURAL), job_entry, selector=None),
        Kind("pods", core_lister(core.list_namespaced_pod, core.list_pod_for_all_namespaces),
             pod_entry),
        Kind("configmaps", core_lister(core.list_namespaced_config_map,
                                       core.list_config_map_for_all_namespaces),
             started_spec_entry),
        Kind(kueue.PLURAL, custom_lister(kueue.GROUP, kueue.VERSION, kueue.PLURAL),
             workload_entry),
        Kind(FLAVORS, custom_lister(kueue.GROUP, kueue.VERSION, kueue.FLAVOR_PLURAL),
             flavor_entry, namespaced=False, selector=None),
    ]


@dataclass
class Stream:
    """List, then watch, one kind in one namespace (None: every namespace, or a kind that
    is not namespaced); forever."""
    kind: Kind
    namespace: str | None
    deliver: Callable[[Callable[[], None]], None]  # runs a callable on the loop thread
    index: Index
    on_change: Callable[[set[Key]], None]
    on_listed: Callable[[], None]
    watch_seconds: int
    keep: Callable[[str], bool] = lambda namespace: True  # namespaces of a pattern list
    stopped: threading.Event = field(default_factory=threading.Event)
    listed: bool = False
    version: str | None = None  # the last resourceVersion seen; None: list (again)
    relists: int = 0  # lists after the first (410 Gone, errors): for tests and metrics
    _response: Any = None

    def run(self) -> None:
        failures = 0
        while not self.stopped.is_set():
            try:
                if self.version is None:
                    self._list()
                self._watch()
                failures = 0
            except _Gone:
                log.info("watch of %s in %s expired (410 Gone): listing again", self.kind.name,
                         self.namespace or "all namespaces")
                self.version = None
            except ApiException as exc:
                failures += 1
                if exc.status in (404, 410):
                    self.version = None
                self.stopped.wait(self._delay(exc, failures))
            except Exception as exc:  # noqa: BLE001 - network errors: resume from self.version
                failures += 1
                log.debug("watch of %s in %s broke: %s", self.kind.name,
                          self.namespace or "all namespaces", exc)
                self.stopped.wait(_backoff(failures))

    def stop(self) -> None:
        """Ends the stream now: shuts the socket down under the reading thread (closing the
        response from here would wait on the thread's TLS read, up to the watch timeout)."""
        self.stopped.set()
        sock = getattr(getattr(self._response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _delay(self, exc: ApiException, failures: int) -> float:
        if exc.status == 404:  # the kind is not served (Kueue not installed): look again later
            if failures == 1:
                log.info("%s are not served in %s; looking again every %.0fs", self.kind.name,
                         self.namespace or "the cluster", ABSENT_KIND_SECONDS)
            self._mark_listed()  # nothing of this kind exists: do not hold the jobs back
            return ABSENT_KIND_SECONDS
        waited = retry_after(exc)
        if waited is not None:
            log.info("list/watch of %s throttled (HTTP %s): waiting %.1fs as the server asks",
                     self.kind.name, exc.status, waited)
            return max(waited, _backoff(failures) / 2)
        log.warning("list/watch of %s in %s: HTTP %s %s", self.kind.name,
                    self.namespace or "all namespaces", exc.status, exc.reason)
        return _backoff(failures)

    def _list(self) -> None:
        response = self.kind.lister(self.namespace, label_selector=self.kind.selector,
                                    _preload_content=False,
                                    _request_timeout=(CONNECT_SECONDS, 60))
        try:
            listing = loads(response.data)
        finally:
            response.release_conn()
        items = [i for i in listing.get("items") or []
                 if self.keep((i.get("metadata") or {}).get("namespace") or "")]
        index, namespace = self.index, self.namespace
        if self.listed:
            self.relists += 1
        self.deliver(lambda: self.on_change(index.replace(items, namespace)))
        self._mark_listed()
        self.version = str((listing.get("metadata") or {}).get("resourceVersion") or "")

    def _mark_listed(self) -> None:
        if not self.listed:
            self.listed = True
            self.deliver(self.on_listed)

    def _watch(self) -> None:
        """Until the server ends the stream (its timeout) or it breaks; `version` follows
        every event, so the next watch resumes where this one stopped."""
        self._response = response = self.kind.lister(
            self.namespace, label_selector=self.kind.selector, watch=True,
            resource_version=self.version,
            allow_watch_bookmarks=True,
            timeout_seconds=int(self.watch_seconds * random.uniform(1.0, 1.2)),
            _preload_content=False,
            _request_timeout=(CONNECT_SECONDS, self.watch_seconds * 1.2 + 30))
        try:
            for line in iter_resp_lines(response):
                if self.stopped.is_set():
                    break
                # orjson: in half json's time (with json a tenth of the operator's CPU at
                # scale, benchmarks/operator_scale_real.py)
                event = loads(line)
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        raise _Gone()
                    raise ApiException(status=body.get("code"), reason=body.get("message"))
                self.version = str((body.get("metadata") or {}).get("resourceVersion")
                                   or self.version)
                if kind == "BOOKMARK" or not self.keep(
                        (body.get("metadata") or {}).get("namespace") or ""):
                    continue
                # The view made here, not on the loop: only it waits there, not the object.
                index = self.index
                ident, entry = index.entry(kind, body)
                self.deliver(lambda i=ident, e=entry: self.on_change(index.put(i, e)))
        finally:
            self._response = None
            response.release_conn()


def _if_any(call: Callable[[set[Key]], None] | None) -> Callable[[set[Key]], None]:
    def changed(keys: set[Key]) -> None:
        if keys and call is not None:
            call(keys)
    return changed


class _Gone(Exception):
    """The watch's resourceVersion was compacted away (410): list again."""


def _backoff(failures: int) -> float:
    base = min(RETRY_BASE_SECONDS * 2 ** (failures - 1), RETRY_MAX_SECONDS)
    return base * random.uniform(0.8, 1.2)


# --------------------------------------------------------------------------- all of them


class Watches:
    """The indexes of every kind and the threads that keep them: `start` on the operator's
    loop; `synced` waits for the first list of each; `on_jobs` and `on_children` are called
    (on the loop) with the (namespace, job) keys whose job, or whose children, changed."""

    def __init__(self, api_client: client.ApiClient, namespaces: tuple[str, ...],
                 on_jobs: Callable[[set[Key]], None], on_children: Callable[[set[Key]], None],
                 watch_seconds: int = 300):
        exact = bool(namespaces) and not any(c in ns for ns in namespaces for c in "*?[!")
        patterns = namespaces if namespaces and not exact else ()
        self.indexes: dict[str, Index] = {}
        self.streams: list[Stream] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._synced = asyncio.Event()
        callbacks = {JOBS: on_jobs, **{name: on_children for name in CHILDREN}}

        def keep(namespace: str) -> bool:
            return not patterns or any(fnmatch.fnmatchcase(namespace, p) for p in patterns)

        for kind in kinds(api_client):
            index = self.indexes[kind.name] = Index(kind.view)
            on_change = _if_any(callbacks.get(kind.name))
            if not kind.namespaced:
                self.streams.append(Stream(kind, None, self._deliver, index, on_change,
                                           self._listed, watch_seconds))
                continue
            for namespace in (namespaces if exact else (None,)):
                self.streams.append(Stream(kind, namespace, self._deliver, index, on_change,
                                           self._listed, watch_seconds, keep))

    @property
    def jobs(self) -> Index:
        return self.indexes[JOBS]

    @property
    def flavors(self) -> Index:
        return self.indexes[FLAVORS]

    @property
    def pods(self) -> Index:
        return self.indexes["pods"]

    @property
    def started_specs(self) -> Index:
        return self.indexes["configmaps"]

    @property
    def workloads(self) -> Index:
        return self.indexes[kueue.PLURAL]

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for stream in self.streams:
            where = stream.namespace or "all"
            threading.Thread(target=stream.run, daemon=True,
                             name=f"watch-{stream.kind.name}-{where}").start()

    def stop(self) -> None:
        for stream in self.streams:
            stream.stop()

    async def synced(self) -> None:
        await self._synced.wait()

    def _deliver(self, call: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(call)
            except RuntimeError:  # the loop closed meanwhile (shutdown)
                pass

    def _listed(self) -> None:
        if all(s.listed for s in self.streams):
            self._synced.set()
