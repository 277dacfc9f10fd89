"""Play the kubelet on emulated pods: run them, end them with an exit code.

Each method changes a pod's status the way the kubelet would, which produces the watch
events the operator reacts to. (Preemption, eviction and graceful deletion are played on the
real control plane: tests/controlplane/kubelet.py.)
"""

from __future__ import annotations

from typing import Any

from .store import ResourceType, Store, now_rfc3339

TRAINER = "trainer"


def _container_ids(pod: str) -> dict[str, str]:
    # The fields a real kubelet always reports (typed clients require them).
    return {"name": TRAINER, "image": "ftjob/trainer:test",
            "imageID": "docker-pullable://ftjob/trainer@sha256:0", "containerID":
            f"containerd://{pod}"}


class Kubelet:
    def __init__(self, store: Store, auto_run: bool = False):
        self.store = store
        self.pods_type: ResourceType = store.type_of("", "pods")
        if auto_run:
            store.hooks.append(self._run_new_pods)

    def _run_new_pods(self, etype: str, rtype: ResourceType, obj: dict[str, Any]) -> None:
        if etype == "ADDED" and rtype.key == "pods":
            meta = obj["metadata"]
            self.run(meta["namespace"], meta["name"])

    def pods(self, namespace: str | None = None, selector: str | None = None
             ) -> list[dict[str, Any]]:
        return self.store.list(self.pods_type, namespace, selector)[0]

    def _set(self, namespace: str, name: str, mutate) -> dict[str, Any]:
        return self.store.update_status(self.pods_type, namespace, name, mutate)

    def run(self, namespace: str, name: str) -> dict[str, Any]:
        """Scheduled, image pulled, container started."""
        def mutate(status: dict[str, Any]) -> None:
            status.update(phase="Running", podIP="10.0.0.1", startTime=now_rfc3339())
            status["containerStatuses"] = [{
                **_container_ids(name), "ready": True, "restartCount": 0,
                "state": {"running": {"startedAt": now_rfc3339()}},
            }]
        return self._set(namespace, name, mutate)

    def terminate(self, namespace: str, name: str, exit_code: int, reason: str | None = None,
                  message: str | None = None) -> dict[str, Any]:
        """The container exited: Succeeded on 0, Failed otherwise (restartPolicy Never)."""
        def mutate(status: dict[str, Any]) -> None:
            status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            terminated: dict[str, Any] = {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "finishedAt": now_rfc3339(),
            }
            if message is not None:
                terminated["message"] = message
            status["containerStatuses"] = [{**_container_ids(name), "ready": False,
                                            "restartCount": 0,
                                            "state": {"terminated": terminated}}]
        return self._set(namespace, name, mutate)
