"""Play the kubelet on the real API server, for the operator's integration tests.

The scheduler binds pods to the test node (see `nodes.NodeHeartbeat`); each method here
waits for that binding, then writes the pod status the kubelet would write, which produces
the watch events the operator reacts to. With `finish_deletions`, a background loop also
does the kubelet's last step of a graceful deletion (delete with grace 0) for every pod on
the node, except those a test holds with `hold()`.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

TRAINER = "trainer"
MERGE = "application/merge-patch+json"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container(pod: str, image: str) -> dict[str, Any]:
    # The fields a real kubelet always reports (typed clients require them).
    return {"name": TRAINER, "image": image, "imageID": f"docker-pullable://{image}",
            "containerID": f"containerd://{pod}", "restartCount": 0}


class Kubelet:
    def __init__(self, core: Any, node: str, finish_deletions: bool = True,
                 bind_timeout: float = 30.0) -> None:
        self.core = core
        self.node = node
        self.bind_timeout = bind_timeout
        self.held: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if finish_deletions:
            self._thread = threading.Thread(target=self._finish_loop, name="test-kubelet",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------ reading

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return json.loads(self.core.read_namespaced_pod(name, namespace,
                                                        _preload_content=False).data)

    def pods(self, namespace: str | None = None, selector: str | None = None
             ) -> list[dict[str, Any]]:
        kwargs = {"label_selector": selector} if selector else {}
        if namespace:
            resp = self.core.list_namespaced_pod(namespace, _preload_content=False, **kwargs)
        else:
            resp = self.core.list_pod_for_all_namespaces(_preload_content=False, **kwargs)
        return json.loads(resp.data).get("items") or []

    def bound(self, namespace: str, name: str) -> dict[str, Any]:
        """The pod once the scheduler has bound it to a node."""
        deadline = time.monotonic() + self.bind_timeout
        while True:
            pod = self.get(namespace, name)
            if pod["spec"].get("nodeName"):
                return pod
            if time.monotonic() > deadline:
                raise AssertionError(f"pod {namespace}/{name} was not scheduled within "
                                     f"{self.bind_timeout}s: {pod.get('status')}")
            time.sleep(0.05)

    # ------------------------------------------------------------------ writing status

    def _status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        resp = self.core.patch_namespaced_pod_status(name, namespace, {"status": status},
                                                     _content_type=MERGE,
                                                     _preload_content=False)
        return json.loads(resp.data)

    def run(self, namespace: str, name: str) -> dict[str, Any]:
        """Scheduled, image pulled, container started."""
        pod = self.bound(namespace, name)
        image = pod["spec"]["containers"][0].get("image", "")
        started = now()
        return self._status(namespace, name, {
            "phase": "Running", "podIP": "127.0.0.1", "hostIP": "127.0.0.1",
            "startTime": started,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": started}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{**_container(name, image), "ready": True, "started": True,
                                   "state": {"running": {"startedAt": started}}}],
        })

    def terminate(self, namespace: str, name: str, exit_code: int, reason: str | None = None,
                  message: str | None = None) -> dict[str, Any]:
        """The container exited: Succeeded on 0, Failed otherwise (restartPolicy Never)."""
        pod = self.bound(namespace, name)
        image = pod["spec"]["containers"][0].get("image", "")
        terminated: dict[str, Any] = {
            "exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "startedAt": now(), "finishedAt": now()}
        if message is not None:
            terminated["message"] = message
        return self._status(namespace, name, {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{**_container(name, image), "ready": False, "started": False,
                                   "state": {"terminated": terminated}}],
        })

    def disrupt(self, namespace: str, name: str, reason: str = "PreemptionByScheduler",
                message: str = "preempted by a higher-priority pod") -> dict[str, Any]:
        """The DisruptionTarget condition the scheduler or the eviction API adds before a kill."""
        pod = self.get(namespace, name)
        conditions = [c for c in (pod.get("status") or {}).get("conditions") or []
                      if c.get("type") != "DisruptionTarget"]
        conditions.append({"type": "DisruptionTarget", "status": "True", "reason": reason,
                           "message": message, "lastTransitionTime": now()})
        return self._status(namespace, name, {"conditions": conditions})

    def evict(self, namespace: str, name: str, message: str = "node had memory pressure"
              ) -> dict[str, Any]:
        """Node-pressure eviction by the kubelet: Failed with reason Evicted."""
        self.bound(namespace, name)
        return self._status(namespace, name, {"phase": "Failed", "reason": "Evicted",
                                              "message": message})

    # ------------------------------------------------------------------ deletion

    def hold(self, namespace: str, name: str) -> None:
        """Keep a deleted pod Terminating until `remove()` (a slow graceful shutdown)."""
        self.held.add((namespace, name))

    def remove(self, namespace: str, name: str) -> None:
        """Finish a graceful deletion, as the kubelet does once the container is gone."""
        self.held.discard((namespace, name))
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _finish_loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                resp = self.core.list_pod_for_all_namespaces(
                    field_selector=f"spec.nodeName={self.node}", _preload_content=False)
                for pod in json.loads(resp.data).get("items") or []:
                    meta = pod["metadata"]
                    key = (meta["namespace"], meta["name"])
                    if meta.get("deletionTimestamp") and key not in self.held:
                        self.remove(*key)
            except Exception:  # noqa: BLE001, S110 - the next pass retries
                pass
