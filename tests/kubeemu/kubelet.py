"""Play the kubelet (and the scheduler's preemption) on emulated pods.

Each method changes a pod's status the way the real component would, which produces the
watch events the operator reacts to.
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
    def __init__(self, store: Store, auto_run: bool = False, graceful: bool = False):
        self.store = store
        if graceful:
            store.graceful_kinds.add("Pod")
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

    def pending(self, namespace: str, name: str, message: str) -> dict[str, Any]:
        """Unschedulable: stays Pending with the scheduler's message."""
        def mutate(status: dict[str, Any]) -> None:
            status["phase"] = "Pending"
            status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                     "reason": "Unschedulable", "message": message}]
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

    def disrupt(self, namespace: str, name: str, reason: str = "PreemptionByScheduler",
                message: str = "preempted by a higher-priority pod") -> dict[str, Any]:
        """The DisruptionTarget condition the scheduler/eviction API adds before a kill."""
        def mutate(status: dict[str, Any]) -> None:
            conditions = [c for c in status.get("conditions") or []
                          if c.get("type") != "DisruptionTarget"]
            conditions.append({"type": "DisruptionTarget", "status": "True", "reason": reason,
                               "message": message, "lastTransitionTime": now_rfc3339()})
            status["conditions"] = conditions
        return self._set(namespace, name, mutate)

    def remove(self, namespace: str, name: str) -> None:
        """Finish a graceful deletion (`Store.graceful_kinds` holds "Pod")."""
        self.store.finish_deletion(self.pods_type, namespace, name)

    def evict(self, namespace: str, name: str, message: str = "node had memory pressure"
              ) -> dict[str, Any]:
        """Node-pressure eviction by the kubelet: Failed with reason Evicted."""
        def mutate(status: dict[str, Any]) -> None:
            status.update(phase="Failed", reason="Evicted", message=message)
        return self._set(namespace, name, mutate)
