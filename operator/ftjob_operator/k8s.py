"""The only module that writes to the Kubernetes API (watches.py lists and watches the jobs
and their children; leadership.py keeps the Lease).

A generic actuator: it creates the manifests a plan carries (rendered by the decision), deletes
what the plan names and patches the status it holds; it parses no spec and renders nothing.
Creates are create-if-absent (409 means it is already there: success once the object
read back is owned by the same job, see `owners`), deletes tolerate 404, status writes are merge patches of the operator's own keys. Errors worth retrying
(conflicts, throttling, 5xx, timeouts, dropped connections) become `TransientApiError`;
the caller retries the whole decision with backoff, which is safe because it is
idempotent.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import orjson
import urllib3
import urllib3.exceptions
from kubernetes import client, config
from kubernetes.client import rest
from kubernetes.client.exceptions import ApiException

from ftjob_api import api

from . import faults, kueue, owners
from .plan import (CreatePods, DeleteJob, DeletePods, EnsureJobObjects, EnsureWorkload, Event,
                   JobRef, Plan, RestoreConfigMap, SetWorkloadActive, UpdateWorkloadStatus)
from .settings import Settings

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5, 30)  # (connect, read) seconds
EVENT_SOURCE = "ftjob-operator"
EVENT_MESSAGE_LIMIT = 1024  # what kopf cuts its Event messages to
EVENT_TRIES = 4


class TransientApiError(Exception):
    """An API call that failed in a way worth retrying; `retry_after`: the seconds the
    server asked to wait (a 429's Retry-After header), if it said."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RejectedError(Exception):
    """The API refused a request (validation, admission, RBAC): retrying the same will not help
    until something else changes."""


class CreateRejectedError(RejectedError):
    """The API refused to create one of the job's objects (admission, quota, policy)."""


class OwnedByOtherError(RejectedError):
    """A create answered "already exists" and what exists is not the job's own (`owners`)."""


def load_configuration() -> client.Configuration:
    """In-cluster config when running in a pod, else $KUBECONFIG / ~/.kube/config.

    The path is read here, not by the client: it caches $KUBECONFIG at import time.
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        path = os.environ.get("KUBECONFIG") or "~/.kube/config"
        config.load_kube_config(config_file=os.path.expanduser(path.split(os.pathsep)[0]),
                                client_configuration=configuration)
    return configuration


def load_api_client(settings: Settings) -> client.ApiClient:
    configuration = load_configuration()
    # One connection per worker thread, so concurrent calls do not queue on the pool.
    configuration.connection_pool_maxsize = max(settings.api_workers, 4)
    # No retries inside urllib3 (it would retry a throttled GET itself, silently, holding a
    # worker for up to 3 Retry-Afters): every failure reaches the operator's own handling.
    configuration.retries = False
    return client.ApiClient(configuration)


def _classify(exc: Exception, what: str) -> Exception:
    if isinstance(exc, ApiException):
        if exc.status in (409, 429) or exc.status is None or exc.status >= 500:
            return TransientApiError(f"{what}: HTTP {exc.status} {exc.reason}",
                                     retry_after=retry_after(exc))
        return RejectedError(f"{what}: HTTP {exc.status} {exc.reason}: {_message(exc)}")
    return TransientApiError(f"{what}: {type(exc).__name__}: {exc}")


def retry_after(exc: ApiException) -> float | None:
    """The seconds a 429 or 503 asks to wait (API Priority and Fairness sends it)."""
    value = exc.headers.get("Retry-After") if exc.headers is not None else None
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.body)
    except (ValueError, AttributeError):
        return str(exc.body)


class RawRequests:
    """The operator's busiest requests (creates of its own manifests, Events, status patches,
    pod deletes) sent as the plain JSON they are. The generated methods validate their
    arguments with pydantic, and validate a created object into the client's model and dump
    it back, then the REST layer encodes it with `json`: half of the operator's CPU in the
    HTTP client at scale (py-spy on benchmarks/operator_scale_real.py), for bodies the API
    server validates anyway. The URL, headers and authentication are still the client's
    (`param_serialize`, reused for a minute); the body is encoded with orjson and sent with the client's urllib3
    pool. Same calling convention and errors as the generated methods with
    `_preload_content=False`: the urllib3 response, `ApiException` for an HTTP error."""

    PATHS = {
        "create_namespaced_pod": "/api/v1/namespaces/{namespace}/pods",
        "create_namespaced_service": "/api/v1/namespaces/{namespace}/services",
        "create_namespaced_config_map": "/api/v1/namespaces/{namespace}/configmaps",
        "create_namespaced_persistent_volume_claim":
            "/api/v1/namespaces/{namespace}/persistentvolumeclaims",
        "create_namespaced_service_account": "/api/v1/namespaces/{namespace}/serviceaccounts",
        "create_namespaced_event": "/api/v1/namespaces/{namespace}/events",
        "create_namespaced_role":
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
        "create_namespaced_role_binding":
            "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
    }
    JOB_STATUS = f"/apis/{api.GROUP}/{api.VERSION}/namespaces/{{namespace}}/{api.PLURAL}/{{name}}/status"
    POD = "/api/v1/namespaces/{namespace}/pods/{name}"

    # How long the URL prefix and headers (the token) are reused: the client's refresh hook
    # reloads the kubeconfig or token file at every request (6 % of the operator's CPU at
    # scale); client-go, too, re-reads a token file at most once a minute. A 401 drops them.
    HEADERS_SECONDS = 60.0

    def __init__(self, api_client: client.ApiClient):
        self.api_client = api_client
        self._base: tuple[str, dict[str, str], float] | None = None  # (host, headers, until)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in RawRequests.PATHS:
            raise AttributeError(name)
        return functools.partial(self._post, RawRequests.PATHS[name])

    def _post(self, path: str, namespace: str, body: dict[str, Any],
              _request_timeout: Any = None, _preload_content: bool = False) -> Any:
        return self.send("POST", path.format(namespace=namespace), body,
                         _request_timeout=_request_timeout)

    def patch_job_status(self, name: str, namespace: str, body: dict[str, Any],
                         _request_timeout: Any = None, _preload_content: bool = False) -> Any:
        return self.send("PATCH", self.JOB_STATUS.format(namespace=namespace, name=name), body,
                         "application/merge-patch+json", _request_timeout)

    def delete_pod(self, name: str, namespace: str, _request_timeout: Any = None,
                   _preload_content: bool = False) -> Any:
        return self.send("DELETE", self.POD.format(namespace=namespace, name=name),
                         {"propagationPolicy": "Background"},
                         _request_timeout=_request_timeout)

    def send(self, method: str, path: str, body: dict[str, Any],
             content_type: str = "application/json", _request_timeout: Any = None) -> Any:
        host, headers = self._host_and_headers()
        response = self.api_client.rest_client.pool_manager.request(
            method, host + path, body=dumps(body),
            headers={**headers, "Content-Type": content_type}, preload_content=False,
            timeout=_timeout(_request_timeout))
        if response.status == 401:
            self._base = None  # a token that expired early: fetch it again next time
        if not 200 <= response.status <= 299:
            failed = rest.RESTResponse(response)
            failed.read()
            response.release_conn()
            raise ApiException.from_response(http_resp=failed, body=None, data=None)
        return response


    def _host_and_headers(self) -> tuple[str, dict[str, str]]:
        base, now = self._base, time.monotonic()
        if base is None or now >= base[2]:
            _, host, headers, _, _ = self.api_client.param_serialize(
                method="GET", resource_path="", header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"])
            base = self._base = (host, headers, now + self.HEADERS_SECONDS)
        return base[0], base[1]


def loads(data: bytes | str) -> Any:
    """JSON read with orjson (in half json's time), or with json where orjson refuses (an
    integer past 64 bits)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(body: Any) -> bytes:
    """JSON written with orjson, or with json where orjson refuses (an integer past 64
    bits, a key that is not a string)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body).encode()


def _timeout(seconds: Any) -> urllib3.Timeout | None:
    """The client's `_request_timeout` (seconds, or (connect, read)) as urllib3's."""
    if seconds is None:
        return None
    if isinstance(seconds, tuple):
        return urllib3.Timeout(connect=seconds[0], read=seconds[1])
    return urllib3.Timeout(total=seconds)


_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError)
TOLERATED = object()  # what Kube._call returns for an HTTP status the caller tolerates


class Kube:
    """Async facade over the synchronous kubernetes client (calls run in a thread pool)."""

    def __init__(self, api_client: client.ApiClient, settings: Settings):
        self.settings = settings
        self.core = client.CoreV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self.authorization = client.AuthorizationV1Api(api_client)
        self.scheduling = client.SchedulingV1Api(api_client)
        self.raw = RawRequests(api_client)
        # Called on the worker thread right before each write is sent; raises when this
        # replica may not write (leadership.Leadership.check). None: one replica, no fence.
        self.fence: Callable[[], None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=settings.api_workers,
                                        thread_name_prefix="ftjob-api")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any,
                    tolerate: tuple[int, ...] = (), write: bool = True, answer: bool = True,
                    **kwargs: Any) -> Any:
        """One API call, run in the pool; its answer as JSON (None without `answer`: the
        object a create or delete sends back is not read). An HTTP status in `tolerate`
        returns TOLERATED (409 on a create: already there; 404 on a delete: already gone);
        every other failure becomes TransientApiError or RejectedError naming `what`. A
        `write` passes the fence first (leadership.NotLeading)."""
        call = functools.partial(_raw_json if answer else _no_answer, fn, *args, **kwargs)
        if write and self.fence is not None:
            call = functools.partial(_fenced, self.fence, call)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except ApiException as exc:
            if exc.status in tolerate:
                return TOLERATED
            raise _classify(exc, what) from exc
        except _NETWORK_ERRORS as exc:
            raise _classify(exc, what) from exc

    # ------------------------------------------------------------------ primitives

    def _verbs(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """(create, read) of a kind the operator creates."""
        core, rbac, custom = self.core, self.rbac, self.custom
        if kind == kueue.KIND:
            where = (kueue.GROUP, kueue.VERSION)
            return (lambda ns, body, **kw: custom.create_namespaced_custom_object(
                        *where, ns, kueue.PLURAL, body, **kw),
                    lambda name, ns, **kw: custom.get_namespaced_custom_object(
                        *where, ns, kueue.PLURAL, name, **kw))
        raw = self.raw
        return {
            "Pod": (raw.create_namespaced_pod, core.read_namespaced_pod),
            "Service": (raw.create_namespaced_service, core.read_namespaced_service),
            "ConfigMap": (raw.create_namespaced_config_map, core.read_namespaced_config_map),
            "PersistentVolumeClaim": (raw.create_namespaced_persistent_volume_claim,
                                      core.read_namespaced_persistent_volume_claim),
            "ServiceAccount": (raw.create_namespaced_service_account,
                               core.read_namespaced_service_account),
            "Role": (raw.create_namespaced_role, rbac.read_namespaced_role),
            "RoleBinding": (raw.create_namespaced_role_binding,
                            rbac.read_namespaced_role_binding),
        }[kind]

    async def create(self, manifest: dict[str, Any]) -> bool:
        """Create unless it exists. True when this call created it; OwnedByOtherError when
        what exists is not this job's (`owners.foreign_owner`)."""
        kind, ns, name = (manifest["kind"], manifest["metadata"]["namespace"],
                          manifest["metadata"]["name"])
        create, read = self._verbs(kind)
        try:
            created = await self._call(f"create {kind} {ns}/{name}", create, ns, manifest,
                                       tolerate=(409,), answer=False)
        except RejectedError as exc:
            raise CreateRejectedError(str(exc)) from exc
        if created is not TOLERATED:
            return True
        if owners.controller(manifest) is None:
            return False  # asks for no owner (a Retain claim): taken as found
        # 409: an earlier try or another replica made it, or it is someone else's.
        existing = await self._call(f"read {kind} {ns}/{name}", read, name, ns, tolerate=(404,),
                                    write=False)
        if existing is TOLERATED:
            raise TransientApiError(f"create {kind} {ns}/{name}: it existed, then was gone")
        foreign = owners.foreign_owner(manifest, existing)
        if foreign is not None:
            raise OwnedByOtherError(foreign)
        return False

    async def create_workload(self, manifest: dict[str, Any]) -> None:
        """Create the Workload of a queued job with the value of its PriorityClass as
        `spec.priority` (what Kueue orders and preempts by; Kueue reads no class itself)."""
        ref = manifest["spec"].get("priorityClassRef")
        if ref is not None:
            found = await self._call(f"read PriorityClass {ref['name']}",
                                     self.scheduling.read_priority_class, ref["name"],
                                     tolerate=(404,), write=False)
            if found is TOLERATED:
                raise CreateRejectedError(f"create {kueue.KIND} {manifest['metadata']['name']}: "
                                          f"PriorityClass {ref['name']} not found")
            manifest = {**manifest, "spec": {**manifest["spec"], "priority": found["value"]}}
        await self.create(manifest)

    async def set_workload_active(self, namespace: str, name: str, active: bool) -> None:
        """spec.active, marked as the operator's doing when false (kueue.ANNOTATION_SUSPENDED)."""
        mark = {kueue.ANNOTATION_SUSPENDED: None if active else "true"}
        await self._call(f"patch {kueue.KIND} {namespace}/{name}",
                         self.custom.patch_namespaced_custom_object, kueue.GROUP, kueue.VERSION,
                         namespace, kueue.PLURAL, name,
                         {"metadata": {"annotations": mark}, "spec": {"active": active}},
                         tolerate=(404,))

    async def update_workload_status(self, namespace: str, action: UpdateWorkloadStatus
                                     ) -> None:
        """Merge-patch the Workload's status as of `resource_version` (409 when Kueue wrote
        since: the decision is made again on what it wrote)."""
        body = {"metadata": {"resourceVersion": action.resource_version},
                "status": action.status}
        await self._call(f"patch {kueue.KIND} {namespace}/{action.name} status",
                         self.custom.patch_namespaced_custom_object_status, kueue.GROUP,
                         kueue.VERSION, namespace, kueue.PLURAL, action.name, body,
                         tolerate=(404,))

    async def restore_config_map(self, manifest: dict[str, Any]) -> None:
        """Put a ConfigMap's data back as `manifest` has it (a JSON patch replacing the whole
        `data`, so keys someone added go too)."""
        meta = manifest["metadata"]
        await self._call(f"patch ConfigMap {meta['namespace']}/{meta['name']}",
                         self.core.patch_namespaced_config_map, meta["name"], meta["namespace"],
                         [{"op": "add", "path": "/data", "value": manifest["data"]}],
                         _content_type="application/json-patch+json")

    async def post_events(self, job: JobRef, events: list[Event]) -> None:
        """Events about the job (core/v1, as `kubectl describe` shows them). Best effort, like
        every Event: a refused one is logged, it does not fail the plan."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for event in events:
            body = {"metadata": {"generateName": f"{job.name}.", "namespace": job.namespace},
                    "involvedObject": {"apiVersion": api.API_VERSION, "kind": api.KIND,
                                       "name": job.name, "namespace": job.namespace,
                                       "uid": job.uid},
                    "type": event.type, "reason": event.reason,
                    "message": event.message[:EVENT_MESSAGE_LIMIT],
                    "firstTimestamp": now, "lastTimestamp": now, "count": 1,
                    "source": {"component": EVENT_SOURCE}}
            what = f"create Event {event.reason} for {job.namespace}/{job.name}"
            for attempt in range(1, EVENT_TRIES + 1):
                try:
                    await self._call(what, self.raw.create_namespaced_event, job.namespace,
                                     body, answer=False)
                    break
                except RejectedError as exc:
                    log.warning("%s", exc)
                    break
                except TransientApiError as exc:  # throttled (429) or a blip: try again
                    if attempt == EVENT_TRIES:
                        log.warning("%s; giving up after %d tries", exc, attempt)
                        break
                    await asyncio.sleep(max(exc.retry_after or 0.0, 0.2 * 2 ** attempt))

    async def delete_pod(self, namespace: str, name: str) -> None:
        await self._call(f"delete Pod {namespace}/{name}", self.raw.delete_pod, name, namespace,
                         tolerate=(404,), answer=False)

    async def delete_job(self, namespace: str, name: str) -> None:
        await self._call(f"delete {api.KIND} {namespace}/{name}",
                         self.custom.delete_namespaced_custom_object, api.GROUP, api.VERSION,
                         namespace, api.PLURAL, name, propagation_policy="Background",
                         tolerate=(404,))

    async def remove_finalizer(self, namespace: str, name: str, finalizer: str,
                               finalizers: list[str]) -> None:
        """Take `finalizer` off the job, whose finalizers were last seen as `finalizers`.
        The patch first tests that list: when it changed since (422), or the job is gone
        (404), nothing is written, and the watch's next event of the job tells again."""
        if finalizer not in finalizers:
            return
        rest = [f for f in finalizers if f != finalizer]
        await self._call(f"remove the finalizer {finalizer} of {api.KIND} {namespace}/{name}",
                         self.custom.patch_namespaced_custom_object, api.GROUP, api.VERSION,
                         namespace, api.PLURAL, name,
                         [{"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                          {"op": "replace", "path": "/metadata/finalizers", "value": rest}],
                         _content_type="application/json-patch+json", tolerate=(404, 409, 422),
                         answer=False)

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]
                           ) -> dict[str, Any] | None:
        """Merge-patch the operator's own status keys; None when the job is gone."""
        patched = await self._call(f"patch {api.KIND} {namespace}/{name} status",
                                   self.raw.patch_job_status, name, namespace,
                                   {"status": status}, tolerate=(404,))
        return None if patched is TOLERATED else patched

    async def set_webhook_ca_bundle(self, name: str, ca_bundle: str) -> int:
        """Put the webhook server's CA (base64 PEM) into every webhook of a
        ValidatingWebhookConfiguration; returns how many webhooks it changed."""
        current = await self._call(f"read ValidatingWebhookConfiguration {name}",
                                   self.admission.read_validating_webhook_configuration, name,
                                   write=False)
        stale = [w["name"] for w in current.get("webhooks") or []
                 if (w.get("clientConfig") or {}).get("caBundle") != ca_bundle]
        if stale:
            patch = {"webhooks": [{"name": n, "clientConfig": {"caBundle": ca_bundle}}
                                  for n in stale]}
            # Each replica serves the webhook with this CA (not a job's write: not fenced).
            await self._call(f"patch ValidatingWebhookConfiguration {name}",
                             self.admission.patch_validating_webhook_configuration, name, patch,
                             write=False)
        return len(stale)

    async def may(self, review: dict[str, Any]) -> bool:
        """Create a SubjectAccessReview (stored nowhere); whether the API server allows it."""
        attributes = review["spec"]["resourceAttributes"]
        answer = await self._call(f"review access to {attributes['verb']} "
                                  f"{attributes['resource']}",
                                  self.authorization.create_subject_access_review, review,
                                  write=False)
        return bool((answer.get("status") or {}).get("allowed"))

    # ------------------------------------------------------------------ plans

    @staticmethod
    def acts_after(plan: Plan, recorded: dict[str, Any] | None) -> bool:
        """Whether the plan's actions follow what `record` returned: not when it wrote a
        status and found the job gone."""
        return recorded is not None or not plan.status

    async def record(self, plan: Plan, job: JobRef) -> dict[str, Any] | None:
        """Write the plan's status, then its Events; returns the job as the status write
        left it (None when the plan has no status, or the job is gone).

        Status first: a restart or failure is on record before any pod is touched, so an
        operator stopped half-way (or an API refusing the deletes) cannot lose it; every
        action is one the next decision re-derives from that status if it did not happen.
        It also keeps the status writable while the API server refuses a create: the
        decision that reports the refusal (and the one that fails the job for it) lands
        even though its creates fail again. The Events are written (not queued, as kopf's
        are) right after the status they explain, before the actions: an operator killed
        or refused during the actions still leaves the transition explained, once (the
        next decision starts from the new status).
        """
        written = None
        if plan.status:
            written = await self.patch_status(job.namespace, job.name, plan.status)
            if written is None:
                return None  # the job is gone
        await self.post_events(job, plan.events)
        if plan.status:
            faults.reached(self.settings.fault_points, plan.case, "after-status")
        return written

    async def carry_out(self, plan: Plan, job: JobRef) -> None:
        """The plan's actions, in order."""
        for action in plan.actions:
            await self._act(action, job)
            faults.reached(self.settings.fault_points, plan.case, faults.point_after(action))

    async def _act(self, action: Any, job: JobRef) -> None:
        """One action of a plan."""
        if isinstance(action, EnsureJobObjects):
            # In order: the ConfigMap comes last and marks the set as complete.
            for manifest in action.manifests:
                await self.create(manifest)
        elif isinstance(action, CreatePods):
            await _gather(self.create(p) for p in action.pods)
        elif isinstance(action, DeletePods):
            await _gather(self.delete_pod(job.namespace, n) for n in action.names)
        elif isinstance(action, DeleteJob):
            await self.delete_job(job.namespace, job.name)
        elif isinstance(action, RestoreConfigMap):
            await self.restore_config_map(action.manifest)
        elif isinstance(action, EnsureWorkload):
            await self.create_workload(action.manifest)
        elif isinstance(action, SetWorkloadActive):
            await self.set_workload_active(job.namespace, action.name, action.active)
        elif isinstance(action, UpdateWorkloadStatus):
            await self.update_workload_status(job.namespace, action)


def _fenced(fence: Callable[[], None], call: Callable[[], Any]) -> Any:
    fence()  # on the thread that sends it, as late as possible
    return call()


def _raw_json(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call without the client's model parsing: the operator needs plain JSON, and the
    models reject objects that lack fields some clusters (and emulators) leave out."""
    data = _answer(fn, *args, **kwargs)
    return loads(data) if data else None


def _no_answer(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    _answer(fn, *args, **kwargs)


def _answer(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    response = fn(*args, _request_timeout=REQUEST_TIMEOUT, _preload_content=False, **kwargs)
    try:
        return response.data  # read whole before the connection goes back to the pool
    finally:
        response.release_conn()


async def _gather(calls) -> None:
    """Run calls concurrently; after all finish, raise the first error (if any)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
