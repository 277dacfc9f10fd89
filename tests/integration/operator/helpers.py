"""Helpers for the operator integration tests: a job manifest, and the few verbs the tests
use (create a job, read its status, children and events, play the kubelet, bring an attempt
up) on the real control plane (`Real`, every test that can) and on the API emulator
(`Emulated`, only the tests that inject API faults). The module-level functions take either.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ftjob_api import api, naming

from tests.conftest import TRAINER_IMAGE
from tests.polling import wait_for

NAME = "demo"
# Deadlines, not speeds: generous, since the control plane, the operator and the tests share
# two cores with whatever else runs on the machine.
TIMEOUT = 90.0
MANAGED = f"{naming.LABEL_MANAGED_BY}={naming.MANAGER}"
EMULATED_NS = "team-a"

BASE_SPEC: dict[str, Any] = {
    "task": "sequence-classification",
    "model": {"path": "/models/tiny"},
    "dataset": {"files": {"train": "/data/train.jsonl"}},
    "trainingArguments": {"max_steps": 5},
    "resources": {"nodes": 2, "cpu": "1", "memory": "1Gi", "shmSize": "64Mi"},
    "storage": {"accessModes": ["ReadWriteMany"], "size": "1Gi"},
    "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 0},
}


def manifest(name: str = NAME, **overrides: Any) -> dict[str, Any]:
    """A FineTuneJob; the backend puts it into its namespace."""
    spec = copy.deepcopy(BASE_SPEC)
    spec.update(overrides)
    return {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
            "spec": spec}


class Kubelet(Protocol):
    """What both kubelets can do; the real one (tests/controlplane/kubelet.py) also disrupts,
    evicts, holds and removes pods."""

    def run(self, namespace: str, name: str) -> dict[str, Any]: ...
    def terminate(self, namespace: str, name: str, exit_code: int, reason: str | None = None,
                  message: str | None = None) -> dict[str, Any]: ...


class Backend(Protocol):
    ns: str
    kubelet: Kubelet

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def get_job(self, name: str = NAME) -> dict[str, Any] | None: ...
    def patch_spec(self, patch: dict[str, Any], name: str = NAME) -> dict[str, Any]: ...
    def delete_job(self, name: str = NAME) -> None: ...
    def list(self, plural: str, group: str = "", selector: str | None = None
             ) -> list[dict[str, Any]]: ...


# --------------------------------------------------------------------------- backends


class Real:
    """The session's control plane, in the test's namespace (the `cluster` fixture). Reads and
    writes as admin; the operator under test runs as the chart's ServiceAccount."""

    def __init__(self, cluster: Any):
        self.cluster = cluster
        self.ns: str = cluster.ns
        self.kubelet = cluster.kubelet
        self.api_client = cluster.session.api_client
        self.custom = cluster.custom

    def _args(self) -> tuple[str, str, str, str]:
        return api.GROUP, api.VERSION, self.ns, api.PLURAL

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        body["metadata"]["namespace"] = self.ns
        return self.custom.create_namespaced_custom_object(*self._args(), body)

    def get_job(self, name: str = NAME) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            return self.custom.get_namespaced_custom_object(*self._args(), name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_spec(self, patch: dict[str, Any], name: str = NAME) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(
            *self._args(), name, {"spec": patch}, _content_type="application/merge-patch+json")

    def delete_job(self, name: str = NAME) -> None:
        self.custom.delete_namespaced_custom_object(*self._args(), name)

    def list(self, plural: str, group: str = "", selector: str | None = None
             ) -> list[dict[str, Any]]:
        from kubernetes import client

        core, rbac = client.CoreV1Api(self.api_client), client.RbacAuthorizationV1Api(
            self.api_client)
        listing = {("", "pods"): core.list_namespaced_pod,
                   ("", "services"): core.list_namespaced_service,
                   ("", "configmaps"): core.list_namespaced_config_map,
                   ("", "serviceaccounts"): core.list_namespaced_service_account,
                   ("", "persistentvolumeclaims"): core.list_namespaced_persistent_volume_claim,
                   ("", "events"): core.list_namespaced_event,
                   ("rbac.authorization.k8s.io", "roles"): rbac.list_namespaced_role,
                   ("rbac.authorization.k8s.io", "rolebindings"):
                       rbac.list_namespaced_role_binding}[(group, plural)]
        kwargs = {"label_selector": selector} if selector else {}
        response = listing(self.ns, _preload_content=False, _request_timeout=30, **kwargs)
        return json.loads(response.data).get("items") or []


class Emulated:
    """The in-process API emulator (the `kube` fixture), namespace `team-a`."""

    def __init__(self, kube: Any):
        self.kube = kube
        self.ns = EMULATED_NS
        self.kubelet = kube.kubelet
        self.store = kube.store
        self.jobs = kube.store.type_of(api.GROUP, api.PLURAL)

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(body)
        body["metadata"]["namespace"] = self.ns
        return self.store.create(self.jobs, self.ns, body)

    def get_job(self, name: str = NAME) -> dict[str, Any] | None:
        from tests.kubeemu import ApiError

        try:
            return self.store.get(self.jobs, self.ns, name)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def patch_spec(self, patch: dict[str, Any], name: str = NAME) -> dict[str, Any]:
        return self.store.patch(self.jobs, self.ns, name, {"spec": patch},
                                "application/merge-patch+json")

    def delete_job(self, name: str = NAME) -> None:
        self.store.delete(self.jobs, self.ns, name)

    def list(self, plural: str, group: str = "", selector: str | None = None
             ) -> list[dict[str, Any]]:
        return self.store.list(self.store.type_of(group, plural), self.ns, selector)[0]


# --------------------------------------------------------------------------- reading


def get_job(h: Backend, name: str = NAME) -> dict[str, Any] | None:
    return h.get_job(name)


def status(h: Backend, name: str = NAME) -> dict[str, Any]:
    return (h.get_job(name) or {}).get("status") or {}


def phase_is(h: Backend, phase: str, name: str = NAME):
    """A probe for wait_for: the status once its phase is `phase`."""
    return lambda: (st := status(h, name)).get("phase") == phase and st


def condition(st: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), None)


def pods(h: Backend, name: str = NAME, attempt: int | None = None) -> list[dict[str, Any]]:
    selector = f"{naming.LABEL_JOB}={name}"
    if attempt is not None:
        selector += f",{naming.LABEL_ATTEMPT}={attempt}"
    return h.list("pods", selector=selector)


def pod_names(h: Backend, name: str = NAME) -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods(h, name))


def objects(h: Backend, plural: str, group: str = "") -> list[dict[str, Any]]:
    """The operator's objects of one kind in the namespace (not what the cluster itself puts
    into every namespace: the `default` ServiceAccount, the `kube-root-ca.crt` ConfigMap)."""
    return h.list(plural, group, MANAGED)


def events(h: Backend, name: str = NAME) -> list[dict[str, Any]]:
    return [e for e in h.list("events")
            if (e.get("involvedObject") or {}).get("kind") == api.KIND
            and (e.get("involvedObject") or {}).get("name") == name]


def event_reasons(h: Backend, name: str = NAME) -> list[str]:
    return [e["reason"] for e in events(h, name)]


def wait_event(h: Backend, reason: str, name: str = NAME) -> list[str]:
    """Events are posted in the background: poll until one with `reason` lands."""
    return wait_for(lambda: (r := event_reasons(h, name)) and reason in r and r, TIMEOUT,
                    what=f"a {reason} event", describe=lambda: str(event_reasons(h, name)))


def describe(h: Backend, name: str = NAME) -> str:
    """What a failing wait shows: the job's status and its pods' phases."""
    return json.dumps({"status": status(h, name),
                       "pods": {p["metadata"]["name"]: [
                           (p.get("status") or {}).get("phase"),
                           bool(p["metadata"].get("deletionTimestamp")),
                           p["spec"].get("nodeName")] for p in pods(h, name)}}, indent=1)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def settled_audit_events(h: Real, user: str | None = None) -> list[dict[str, Any]]:
    """The API server's audit log (tests/controlplane/install.py: audit_events) once it holds
    the requests answered so far. The server writes a request's event after it has sent the
    response, so a client that stopped can read the log before its last requests are in:
    send one more request (as admin: a GET of a ConfigMap that does not exist, under a
    unique name) and poll until that one is logged."""
    import uuid

    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from tests.controlplane.install import audit_events

    log = h.cluster.plane.audit_log
    offset = log.stat().st_size if log.exists() else 0
    marker = f"audit-marker-{uuid.uuid4().hex[:12]}"
    try:
        client.CoreV1Api(h.api_client).read_namespaced_config_map(marker, h.ns,
                                                                  _request_timeout=30)
    except ApiException as exc:
        if exc.status != 404:
            raise

    def logged() -> bool:
        if not log.exists():
            return False
        with log.open("rb") as f:  # the log only grows: read what came after the request
            f.seek(offset)
            return f'"{marker}"'.encode() in f.read()

    wait_for(logged, TIMEOUT, what=f"the audit log to record the request for {marker}",
             interval=0.5)
    return audit_events(h.cluster.plane, user)


# --------------------------------------------------------------------------- acting


def summary(**fields: Any) -> str:
    """The trainer's one-line termination message."""
    return json.dumps(fields)


def run_all(h: Backend, name: str = NAME, attempt: int | None = None) -> None:
    for pod in pods(h, name, attempt):
        h.kubelet.run(h.ns, pod["metadata"]["name"])


def bring_up(h: Backend, attempt: int = 1, name: str = NAME, nodes: int = 2,
             timeout: float = TIMEOUT) -> dict[str, Any]:
    """Play the kubelet for one attempt: wait for its pods, run them, wait for the job to be
    Running in that attempt; returns that status."""
    wait_for(lambda: len(pods(h, name, attempt)) == nodes, timeout,
             what=f"attempt {attempt}: {nodes} pods", describe=lambda: describe(h, name))
    run_all(h, name, attempt)
    return wait_for(lambda: (st := status(h, name)).get("phase") == "Running"
                    and st.get("attempt") == attempt and st, timeout,
                    what=f"attempt {attempt} Running", describe=lambda: describe(h, name))


def succeed(h: Backend, attempt: int, name: str = NAME, **fields: Any) -> None:
    """Rank 1 exits 0, then rank 0 with the trainer's success summary."""
    h.kubelet.terminate(h.ns, naming.pod(name, attempt, 1), 0)
    h.kubelet.terminate(h.ns, naming.pod(name, attempt, 0), 0, message=summary(
        status="succeeded", **({"globalStep": 5, "metrics": {}} | fields)))


# --------------------------------------------------------------------------- the operator process


ROOT = Path(__file__).resolve().parents[3]


def healthz_ok(port: int) -> bool:
    """Whether the operator's liveness endpoint on `port` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def operator_process(cluster: Any, log_path: Path, kubeconfig: Path | None = None,
                     wait_healthy: bool = True, **env: str) -> Iterator[subprocess.Popen]:
    """`python -m ftjob_operator` of this checkout as the chart's ServiceAccount (or as
    `kubeconfig` has it), watching the test's namespace only, until /healthz answers (unless
    `wait_healthy` is False: a test that arms a fault point may see it die before); stopped
    at the end (SIGCONT first: a test may have SIGSTOPped it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(log_path, "a")  # noqa: SIM115 - closed in finally
    path = os.pathsep.join(str(ROOT / d) for d in ("api", "operator"))  # this checkout's
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftjob_operator"], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": path,
             "KUBECONFIG": str(kubeconfig or cluster.session.operator_kubeconfig),
             "FTJOB_NAMESPACES": cluster.ns, "FTJOB_RESYNC_SECONDS": "2",
             "FTJOB_TRAINER_IMAGE": TRAINER_IMAGE, "FTJOB_LIVENESS_PORT": str(port), **env})

    try:
        if wait_healthy:
            wait_for(lambda: healthz_ok(port) or proc.poll() is not None, TIMEOUT,
                     what="/healthz")
            assert proc.poll() is None, log_path.read_text()
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def operator_log(path: Path, chars: int = 4000) -> str:
    return "\n--- operator log (tail) ---\n" + path.read_text(errors="replace")[-chars:]


# --------------------------------------------------------------------------- pod creations


class PodCreations:
    """Every pod created in the namespace, by name, from a watch (the emulator: a store hook).
    A name created twice shows up twice; `created_at` / `deleted_at` are monotonic times of
    the first sighting. After a 410 (an API server restart) it lists again: a pod created and
    deleted within that gap goes unseen."""

    def __init__(self, h: Backend):
        import time

        self._clock = time.monotonic
        self._uids: dict[str, list[str]] = defaultdict(list)
        self.created_at: dict[str, float] = {}
        self.deleted_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if isinstance(h, Emulated):
            h.store.hooks.append(self._hook)
            self._thread = None
        else:
            self._start_watch(h)

    @property
    def names(self) -> list[str]:
        with self._lock:
            return [n for n, uids in self._uids.items() for _ in uids]

    def duplicates(self) -> list[str]:
        with self._lock:
            return sorted(n for n, uids in self._uids.items() if len(uids) > 1)

    def _seen(self, etype: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self._lock:
            if etype == "DELETED":
                self.deleted_at.setdefault(meta["name"], self._clock())
            elif meta["uid"] not in self._uids[meta["name"]]:
                self._uids[meta["name"]].append(meta["uid"])
                self.created_at.setdefault(meta["name"], self._clock())

    def _hook(self, etype: str, rtype: Any, obj: dict[str, Any]) -> None:
        if rtype.key == "pods" and obj["metadata"].get("namespace") == EMULATED_NS:
            self._seen(etype, obj)

    def _start_watch(self, h: Real) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        core = client.CoreV1Api(h.api_client)

        def listed() -> str:
            """Every pod now (a uid seen before is not a new creation); a name known but not
            listed went away meanwhile. Returns the list's resourceVersion."""
            listing = json.loads(core.list_namespaced_pod(h.ns, _preload_content=False).data)
            items = listing.get("items") or []
            for pod in items:
                self._seen("ADDED", pod)
            present = {p["metadata"]["name"] for p in items}
            with self._lock:
                for name in set(self._uids) - present:
                    self.deleted_at.setdefault(name, self._clock())
            return listing["metadata"]["resourceVersion"]

        version = listed()

        def loop(version: str = version) -> None:
            from kubernetes import watch

            while not self._stop.is_set():
                stream = watch.Watch()
                try:
                    for event in stream.stream(core.list_namespaced_pod, h.ns,
                                               resource_version=version, timeout_seconds=5,
                                               allow_watch_bookmarks=True,
                                               _preload_content=False):
                        obj = event["raw_object"]
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            self._seen(event["type"], obj)
                        if self._stop.is_set():
                            break
                except ApiException as exc:  # 410 Gone (an API server restarted, a
                    # compaction): the version is too old to resume from, so list again
                    if exc.status == 410:
                        try:
                            version = listed()
                        except Exception:  # noqa: BLE001 - the next 410 lists again
                            pass
                    self._stop.wait(0.2)
                except Exception:  # noqa: BLE001 - the next pass resumes from `version`
                    self._stop.wait(0.2)
                finally:
                    stream.stop()

        self._thread = threading.Thread(target=loop, name="pod-creations", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
