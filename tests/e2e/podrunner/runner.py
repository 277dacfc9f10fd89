"""The loop: Pods bound to our Node -> containers in Docker -> Pod status back in the API.

The runner plays the kubelet of one Node (registered and kept Ready by
`tests.controlplane.nodes.NodeHeartbeat`): the real scheduler binds pods to that node, and
each step lists the pods bound to it (a list every half second is simpler and sturdier than
a watch), starts containers for new ones, stops containers of deleted ones (SIGTERM, the
grace period, then SIGKILL, as the kubelet does), writes each change of a container's state
into the Pod's status, and finishes a graceful deletion (delete with grace 0) once the
container is gone. Like the kubelet, it mounts the pod's projected ServiceAccount token
(from the TokenRequest API, bound to the pod) and the cluster CA at the standard in-cluster
path, and sets KUBERNETES_SERVICE_HOST/PORT to the API server.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import status as pod_status
from . import translate
from .addresses import AddressBook, hosts_entries
from .docker import Docker, DockerError

log = logging.getLogger("podrunner")

LABEL_RUNNER = "ftjob-e2e.runner"
LABEL_POD = "ftjob-e2e.pod"
MERGE_PATCH = "application/merge-patch+json"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Tracked:
    """One pod the runner has taken on, from its first sight to its container's removal."""

    namespace: str
    name: str
    uid: str
    pod: dict[str, Any]
    container: str
    address: str
    ports: set[int]
    rendezvous: tuple[str, int] | None
    started: bool = False
    exited: bool = False  # the container has ended (its pod may stay, e.g. Succeeded)
    reported: str = ""  # the last state written to the API: waiting:<reason>, running, done
    stop_requested_at: float | None = None
    grace: float = 30.0
    killed: bool = False
    gone: bool = False  # the Pod object no longer exists
    work: Path = field(default_factory=Path)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class PodRunner:
    """Runs the Pods bound to Node `node` as Docker containers.

    `core` is a kubernetes `CoreV1Api` with the kubelet's rights (here: admin).
    `api_server` is the (host, port) processes in the pods reach the API server at.
    """

    def __init__(self, core: Any, work_dir: Path, node: str, api_server: tuple[str, int],
                 docker: Docker | None = None, poll_seconds: float = 0.5) -> None:
        self.core = core
        self.work_dir = Path(work_dir)
        self.node = node
        self.api_server = api_server
        self.docker = docker or Docker()
        self.poll_seconds = poll_seconds
        self.runner_id = uuid.uuid4().hex[:8]
        self.addresses = AddressBook()
        self._tracked: dict[str, Tracked] = {}
        self._ran_uids: set[str] = set()  # a pod runs once: restartPolicy Never
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []  # step failures, for tests to show

    # ------------------------------------------------------------------ public API

    def start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        # Its own log file: what the runner did is the first thing to read after a failure.
        handler = logging.FileHandler(self.work_dir / "runner.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        self._log_handler = handler
        self._thread = threading.Thread(target=self._loop, name="podrunner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and remove every container this runner started (logs are kept)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for name in self.docker.containers(f"{LABEL_RUNNER}={self.runner_id}"):
            self._save_logs(name)
            self.docker.remove(name)
        log.removeHandler(self._log_handler)
        self._log_handler.close()

    def claim_dir(self, namespace: str, claim: str) -> Path:
        """The host folder that backs a bound PersistentVolumeClaim (its hostPath volume)."""
        pvc = json.loads(self.core.read_namespaced_persistent_volume_claim(
            claim, namespace, _preload_content=False).data)
        volume = (pvc.get("spec") or {}).get("volumeName")
        if not volume or (pvc.get("status") or {}).get("phase") != "Bound":
            raise translate.UnsupportedPod(f"claim {namespace}/{claim} is not bound")
        pv = json.loads(self.core.read_persistent_volume(volume, _preload_content=False).data)
        host_path = (pv.get("spec") or {}).get("hostPath") or {}
        if not host_path.get("path"):
            raise translate.UnsupportedPod(f"volume {volume} of claim {namespace}/{claim} "
                                           "is not a hostPath volume")
        return Path(host_path["path"])

    def container_name(self, namespace: str, pod: str) -> str:
        """The Docker name of a pod's container (and of its saved log, `<name>.log`)."""
        return f"ftjob-e2e-{self.runner_id}-{namespace}-{pod}"

    def container_of(self, namespace: str, pod: str) -> str | None:
        with self._lock:
            tracked = self._tracked.get(f"{namespace}/{pod}")
            return tracked.container if tracked and tracked.started else None

    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a bad step
                log.exception("pod runner step failed")
                self.errors.append(repr(exc))
            self._stop.wait(self.poll_seconds)

    def step(self) -> None:
        pods = {translate.pod_key(p): p for p in self._list_pods()}
        with self._lock:
            for key, tracked in list(self._tracked.items()):
                pod = pods.get(key)
                if pod is None or pod["metadata"].get("uid", "") != tracked.uid:
                    tracked.gone = True
                    self._request_stop(tracked, None)
                else:
                    tracked.pod = pod
                    if pod["metadata"].get("deletionTimestamp"):
                        self._request_stop(tracked, pod)
            for key, pod in pods.items():
                tracked = self._tracked.get(key)
                if tracked is None or tracked.gone:
                    if tracked is not None and tracked.gone:
                        continue  # the old container of a recreated name is still stopping
                    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                        continue  # finished before this runner started
                    if pod["metadata"].get("uid") in self._ran_uids:
                        continue
                    tracked = self._track(pod)
                if not tracked.started and tracked.stop_requested_at is None:
                    self._try_start(tracked, pod)
            for tracked in list(self._tracked.values()):
                if tracked.started:
                    self._observe(tracked)
                elif tracked.stop_requested_at is not None:
                    # Deleted before its container ever started: nothing to stop.
                    if not tracked.gone:
                        self._delete_now(tracked)
                    del self._tracked[tracked.key]

    # ------------------------------------------------------------------ API side

    def _list_pods(self) -> list[dict[str, Any]]:
        resp = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={self.node}", _preload_content=False)
        return json.loads(resp.data).get("items") or []

    def _patch_status(self, tracked: Tracked, body: dict[str, Any]) -> None:
        if tracked.gone:
            return
        try:
            self.core.patch_namespaced_pod_status(tracked.name, tracked.namespace, body,
                                                  _content_type=MERGE_PATCH,
                                                  _preload_content=False)
        except Exception as exc:  # noqa: BLE001
            status = getattr(exc, "status", None)
            if status == 404:
                tracked.gone = True
                return
            raise

    def _read_key(self, namespace: str, kind: str, name: str, key: str) -> str | None:
        data = self._read_data(namespace, kind, name)
        return None if data is None else data.get(key)

    def _read_data(self, namespace: str, kind: str, name: str) -> dict[str, str] | None:
        read = (self.core.read_namespaced_config_map if kind == "configMap"
                else self.core.read_namespaced_secret)
        try:
            body = json.loads(read(name, namespace, _preload_content=False).data)
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) == 404:
                return None
            raise
        data = dict(body.get("data") or {})
        if kind == "secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
        return data

    # ------------------------------------------------------------------ start

    def _track(self, pod: dict[str, Any]) -> Tracked:
        meta = pod["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        uid = meta.get("uid", "")
        work = self.work_dir / "pods" / namespace / f"{name}-{(uid or uuid.uuid4().hex)[:8]}"
        tracked = Tracked(
            namespace=namespace, name=name, uid=uid, pod=pod,
            container=self.container_name(namespace, name),
            address=self.addresses.address(namespace, name),
            ports=translate.host_ports(pod), rendezvous=translate.rendezvous(pod),
            grace=translate.grace_period_seconds(pod),
            work=work,
        )
        self._tracked[tracked.key] = tracked
        return tracked

    def _report_waiting(self, tracked: Tracked, reason: str, message: str) -> None:
        if tracked.reported == f"waiting:{reason}:{message}":
            return
        log.info("pod %s waiting: %s: %s", tracked.key, reason, message)
        container = translate.the_container(tracked.pod)
        self._patch_status(tracked, pod_status.waiting_status(
            container["name"], container.get("image", ""), reason, message, _now()))
        tracked.reported = f"waiting:{reason}:{message}"

    def _port_taken(self, tracked: Tracked) -> bool:
        """Whether another pod's live container holds the port this pod meets its gang on.

        One host network stands in for one network per pod: a new gang must wait until the
        old gang's rank 0 is gone, or its ranks would join the old rendezvous store.
        """
        if tracked.rendezvous is None:
            return False
        master, port = tracked.rendezvous
        return any(other is not tracked and other.started and not other.exited
                   and port in other.ports
                   and (other.namespace, other.name) != (tracked.namespace, master)
                   for other in self._tracked.values())

    def _try_start(self, tracked: Tracked, pod: dict[str, Any]) -> None:
        tracked.pod = pod
        if self._port_taken(tracked):
            return  # the previous holder of the port is still stopping: stay Pending
        try:
            container = translate.the_container(pod)
            image = container.get("image", "")
            if not self.docker.image_exists(image):
                self._report_waiting(tracked, "ErrImageNeverPull",
                                     f"image {image!r} is not present and cannot be pulled")
                return
            inputs = self._inputs(tracked, pod, image)
            args = translate.docker_run_args(pod, inputs)
        except translate.UnsupportedPod as exc:
            self._report_waiting(tracked, "CreateContainerConfigError", str(exc))
            return
        log.info("pod %s: starting container %s at %s", tracked.key, tracked.container,
                 tracked.address)
        try:
            self.docker.run(args)
        except DockerError as exc:
            self.docker.remove(tracked.container)
            self._report_waiting(tracked, "CreateContainerError", str(exc))
            return
        tracked.started = True
        self._ran_uids.add(tracked.uid)

    def _inputs(self, tracked: Tracked, pod: dict[str, Any], image: str) -> translate.RunInputs:
        tracked.work.mkdir(parents=True, exist_ok=True)
        termination = tracked.work / "termination-log"
        termination.touch()
        termination.chmod(0o666)
        env = translate.resolve_env(
            pod, tracked.address,
            lambda kind, name, key: self._read_key(tracked.namespace, kind, name, key))
        # What the kubelet gives every container: where the `kubernetes` Service is. Its
        # ClusterIP is not routable here, so it points at the API server itself.
        host, port = self.api_server
        env += [("KUBERNETES_SERVICE_HOST", host), ("KUBERNETES_SERVICE_PORT", str(port)),
                ("KUBERNETES_PORT", f"tcp://{host}:{port}")]
        volumes = self._volumes(tracked, pod)
        for mount in translate.the_container(pod).get("volumeMounts") or []:
            host = volumes.get(mount["name"])
            if mount.get("subPath") and host is not None and host.path is not None:
                # The kubelet creates a missing subPath folder (here: writable by the pod).
                sub = host.path / mount["subPath"]
                if not sub.exists():
                    sub.mkdir(parents=True)
                    sub.chmod(0o777)
        return translate.RunInputs(
            container_name=tracked.container,
            image=image,
            env=env,
            volumes=volumes,
            hosts=self._hosts(tracked, pod),
            termination_file=termination,
            labels={LABEL_RUNNER: self.runner_id, LABEL_POD: tracked.key},
        )

    def _hosts(self, tracked: Tracked, pod: dict[str, Any]) -> dict[str, str]:
        """Every pod name of the namespace seen so far, plus the master the pod will dial."""
        subdomain = pod["spec"].get("subdomain")
        known = [(t.name, t.pod["spec"].get("subdomain"), t.namespace)
                 for t in self._tracked.values() if t.namespace == tracked.namespace]
        master = translate.master_address(translate.the_container(pod))
        if master:
            known.append((master.split(".")[0], subdomain, tracked.namespace))
        return hosts_entries(known, self.addresses)

    def _volumes(self, tracked: Tracked, pod: dict[str, Any]) -> dict[str, translate.HostVolume]:
        out: dict[str, translate.HostVolume] = {}
        for volume in pod["spec"].get("volumes") or []:
            name = volume["name"]
            where = f"pod {tracked.key}: volume {name}"
            if "persistentVolumeClaim" in volume:
                path = self.claim_dir(tracked.namespace, volume["persistentVolumeClaim"]["claimName"])
                path.mkdir(parents=True, exist_ok=True)
                out[name] = translate.HostVolume(path=path)
            elif "projected" in volume:
                out[name] = translate.HostVolume(path=self._projected(tracked, pod, volume))
            elif "configMap" in volume or "secret" in volume:
                kind = "configMap" if "configMap" in volume else "secret"
                ref = volume[kind]
                source = ref.get("name") or ref.get("secretName")
                data = self._read_data(tracked.namespace, kind, source)
                if data is None:
                    raise translate.UnsupportedPod(f"{where}: {kind} {source!r} not found")
                path = tracked.work / "volumes" / name
                shutil.rmtree(path, ignore_errors=True)
                path.mkdir(parents=True)
                items = ref.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    if item["key"] not in data:
                        raise translate.UnsupportedPod(f"{where}: key {item['key']!r} not in "
                                                       f"{kind} {source!r}")
                    target = path / item["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(data[item["key"]])
                    target.chmod(0o644)
                out[name] = translate.HostVolume(path=path)
            elif "emptyDir" in volume:
                empty = volume["emptyDir"] or {}
                if empty.get("medium") == "Memory":
                    out[name] = translate.HostVolume(memory=True, size_limit=empty.get("sizeLimit"))
                else:
                    path = tracked.work / "volumes" / name
                    path.mkdir(parents=True, exist_ok=True)
                    path.chmod(0o777)
                    out[name] = translate.HostVolume(path=path)
            else:
                kinds = sorted(k for k in volume if k != "name")
                raise translate.UnsupportedPod(f"{where}: type {kinds} is not supported")
        return out

    def _projected(self, tracked: Tracked, pod: dict[str, Any], volume: dict[str, Any]) -> Path:
        """Write a projected volume: ServiceAccount token, ConfigMap keys, downward API."""
        where = f"pod {tracked.key}: volume {volume['name']}"
        path = tracked.work / "volumes" / volume["name"]
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        files: dict[str, str] = {}
        for source in volume["projected"].get("sources") or []:
            if "serviceAccountToken" in source:
                files[source["serviceAccountToken"]["path"]] = self._token(
                    pod, source["serviceAccountToken"])
            elif "configMap" in source:
                ref = source["configMap"]
                data = self._read_data(tracked.namespace, "configMap", ref["name"]) or {}
                for item in ref.get("items") or [{"key": k, "path": k} for k in data]:
                    if item["key"] not in data:
                        if ref.get("optional"):
                            continue
                        raise translate.UnsupportedPod(f"{where}: configMap {ref['name']!r} "
                                                       f"has no key {item['key']!r} (yet)")
                    files[item["path"]] = data[item["key"]]
            elif "downwardAPI" in source:
                for item in source["downwardAPI"].get("items") or []:
                    field_path = (item.get("fieldRef") or {}).get("fieldPath")
                    value = translate.pod_field(pod, field_path, tracked.address)
                    if value is None:
                        raise translate.UnsupportedPod(f"{where}: downwardAPI {field_path} "
                                                       "is not supported")
                    files[item["path"]] = value
            else:
                raise translate.UnsupportedPod(f"{where}: projected source {sorted(source)} "
                                               "is not supported")
        for relative, text in files.items():
            target = path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            target.chmod(0o644)  # the kubelet's default mode is 0644 (fsGroup aside)
        return path

    def _token(self, pod: dict[str, Any], projection: dict[str, Any]) -> str:
        """A ServiceAccount token bound to the pod, from the TokenRequest API."""
        meta = pod["metadata"]
        spec: dict[str, Any] = {
            "expirationSeconds": int(projection.get("expirationSeconds") or 3607),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                               "uid": meta["uid"]},
        }
        if projection.get("audience"):
            spec["audiences"] = [projection["audience"]]
        account = pod["spec"].get("serviceAccountName") or "default"
        done = self.core.create_namespaced_service_account_token(
            account, meta["namespace"], {"apiVersion": "authentication.k8s.io/v1",
                                         "kind": "TokenRequest", "spec": spec},
            _preload_content=False)
        return json.loads(done.data)["status"]["token"]

    # ------------------------------------------------------------------ observe / stop

    def _request_stop(self, tracked: Tracked, pod: dict[str, Any] | None) -> None:
        if tracked.stop_requested_at is not None:
            return
        tracked.stop_requested_at = time.monotonic()
        if pod is not None:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            if grace is not None:
                tracked.grace = float(grace)
        if tracked.started:
            log.info("pod %s %s: SIGTERM, %ss grace", tracked.key,
                     "gone" if pod is None else "deleted", tracked.grace)
            self.docker.kill(tracked.container, "TERM")

    def _observe(self, tracked: Tracked) -> None:
        if tracked.reported == "removed":
            return
        raw = self.docker.state(tracked.container)
        if raw is None:
            state = None
        else:
            state = pod_status.ContainerState.from_inspect(raw)
        container = translate.the_container(tracked.pod)
        image = container.get("image", "")
        if state is not None and state.running:
            if (tracked.stop_requested_at is not None and not tracked.killed
                    and time.monotonic() - tracked.stop_requested_at >= tracked.grace):
                log.info("pod %s: grace period over, SIGKILL", tracked.key)
                self.docker.kill(tracked.container, "KILL")
                tracked.killed = True
            if tracked.reported != "running" and tracked.stop_requested_at is None:
                self._patch_status(tracked, pod_status.running_status(
                    container["name"], image, tracked.container, tracked.address, state, _now()))
                tracked.reported = "running"
            return
        tracked.exited = True
        if tracked.reported != "done" and state is not None:
            log.info("pod %s: container exited %s", tracked.key, state.exit_code)
            message = pod_status.termination_message(
                (tracked.work / "termination-log").read_bytes(),
                container.get("terminationMessagePolicy", "File"), state.exit_code,
                self.docker.logs(tracked.container, tail=80))
            self._patch_status(tracked, pod_status.terminated_status(
                container["name"], image, tracked.container, tracked.address, state, message,
                _now()))
            tracked.reported = "done"
        if tracked.stop_requested_at is not None:
            if not tracked.gone:
                # Graceful deletion: the kubelet removes the object once the container ended.
                self._delete_now(tracked)
            self._save_logs(tracked.container)
            self.docker.remove(tracked.container)
            tracked.reported = "removed"
            del self._tracked[tracked.key]

    def _delete_now(self, tracked: Tracked) -> None:
        """Finish a graceful deletion: the container is gone, so the object may go too."""
        tracked.gone = True
        try:
            # With a body, the API server reads the options from it, not from the query.
            self.core.delete_namespaced_pod(
                tracked.name, tracked.namespace,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": tracked.uid}},
                _preload_content=False)
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "status", None) not in (404, 409):
                raise

    def _save_logs(self, container: str) -> None:
        self.logs_dir().mkdir(parents=True, exist_ok=True)
        (self.logs_dir() / f"{container}.log").write_bytes(
            self.docker.logs(container, timestamps=True))
