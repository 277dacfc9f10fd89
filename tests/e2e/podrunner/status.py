"""Pure: what Docker says about a container -> the Pod status the kubelet would write."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps of a termination message
FALLBACK_LOG_LIMIT = 2048  # bytes of log tail used by FallbackToLogsOnError


@dataclass(frozen=True)
class ContainerState:
    """The parts of `docker inspect` .State the pod status needs."""

    running: bool
    exit_code: int
    oom_killed: bool
    started_at: str
    finished_at: str

    @classmethod
    def from_inspect(cls, state: dict[str, Any]) -> ContainerState:
        return cls(
            running=bool(state.get("Running")),
            exit_code=int(state.get("ExitCode", 0)),
            oom_killed=bool(state.get("OOMKilled")),
            started_at=_rfc3339(state.get("StartedAt", "")),
            finished_at=_rfc3339(state.get("FinishedAt", "")),
        )


def _rfc3339(docker_time: str) -> str:
    """Docker's nanosecond timestamps, cut to whole seconds as Kubernetes writes them."""
    if not docker_time or docker_time.startswith("0001-"):
        return ""
    return docker_time.split(".")[0].rstrip("Z") + "Z"


def termination_message(file_text: bytes, policy: str, exit_code: int, log_tail: bytes) -> str:
    message = file_text[-TERMINATION_MESSAGE_LIMIT:]
    if not message.strip() and policy == "FallbackToLogsOnError" and exit_code != 0:
        message = log_tail[-FALLBACK_LOG_LIMIT:]
    return message.decode("utf-8", errors="replace")


def _container_status(name: str, image: str, container_id: str, state: dict[str, Any],
                      ready: bool) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imageID": "",
        "containerID": f"docker://{container_id}" if container_id else "",
        "ready": ready,
        "started": "running" in state,
        "restartCount": 0,
        "state": state,
    }


def _conditions(ready: bool, now: str) -> list[dict[str, Any]]:
    value = "True" if ready else "False"
    return [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": value, "lastTransitionTime": now},
        {"type": "Ready", "status": value, "lastTransitionTime": now},
    ]


def running_status(name: str, image: str, container_id: str, pod_ip: str,
                   state: ContainerState, now: str) -> dict[str, Any]:
    return {"status": {
        "phase": "Running",
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "hostIP": "127.0.0.1",
        "startTime": state.started_at or now,
        "conditions": _conditions(True, now),
        "containerStatuses": [_container_status(
            name, image, container_id, {"running": {"startedAt": state.started_at or now}},
            ready=True)],
    }}


def terminated_status(name: str, image: str, container_id: str, pod_ip: str,
                      state: ContainerState, message: str, now: str) -> dict[str, Any]:
    if state.oom_killed:
        reason = "OOMKilled"
    elif state.exit_code == 0:
        reason = "Completed"
    else:
        reason = "Error"
    terminated = {
        "exitCode": state.exit_code,
        "reason": reason,
        "startedAt": state.started_at or now,
        "finishedAt": state.finished_at or now,
        "containerID": f"docker://{container_id}",
    }
    if message:
        terminated["message"] = message
    return {"status": {
        # restartPolicy Never (the operator restarts whole gangs itself): a pod ends here.
        "phase": "Succeeded" if state.exit_code == 0 else "Failed",
        "podIP": pod_ip,
        "hostIP": "127.0.0.1",
        "conditions": _conditions(False, now),
        "containerStatuses": [_container_status(
            name, image, container_id, {"terminated": terminated}, ready=False)],
    }}


def waiting_status(name: str, image: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {"status": {
        "phase": "Pending",
        "conditions": _conditions(False, now),
        "containerStatuses": [_container_status(
            name, image, "", {"waiting": {"reason": reason, "message": message}}, ready=False)],
    }}
