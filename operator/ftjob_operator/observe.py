"""Pure: child objects as the API shows them -> a small summary the decision reads.

The operator's indexes store `PodView`s (not whole pods) so memory stays flat with many
jobs, and `classify` turns a finished pod into a failure class from its exit code, the
kubelet's reason and the `DisruptionTarget` condition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from . import contract, naming

FailureKind = Literal["permanent", "retryable", "preempted"]

MESSAGE_LIMIT = 1024


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class PodView:
    name: str
    job: str
    attempt: int
    rank: int
    owner_uid: str | None = None
    phase: str = "Pending"
    created_at: datetime | None = None
    deleting: bool = False
    exit_code: int | None = None
    container_reason: str | None = None  # e.g. OOMKilled, Error, Completed
    pod_reason: str | None = None  # e.g. Evicted, NodeLost
    pod_message: str | None = None
    termination_message: str | None = None
    disruption: str | None = None  # reason of a True DisruptionTarget condition

    @property
    def terminated(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    reason: str
    message: str
    pod: str
    rank: int
    exit_code: int | None = None

    def describe(self) -> str:
        code = f", exit code {self.exit_code}" if self.exit_code is not None else ""
        text = f"rank {self.rank} (pod {self.pod}) failed: {self.reason}{code}"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True)
class Observed:
    pods: tuple[PodView, ...] = ()
    # The spec the job started with (its ConfigMap); None before the first start.
    started_spec: dict[str, Any] | None = None


def _int_label(labels: dict[str, str], key: str) -> int | None:
    try:
        return int(labels[key])
    except (KeyError, ValueError):
        return None


def pod_view(pod: dict[str, Any]) -> PodView | None:
    """Summarise a pod; None for a pod without ftjob's attempt/rank labels."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    attempt = _int_label(labels, naming.LABEL_ATTEMPT)
    rank = _int_label(labels, naming.LABEL_RANK)
    job = labels.get(naming.LABEL_JOB)
    if attempt is None or rank is None or not job:
        return None
    owner_uid = next((o.get("uid") for o in meta.get("ownerReferences") or []
                      if o.get("controller")), None)
    status = pod.get("status") or {}
    exit_code = reason = message = None
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") != naming.TRAINER_CONTAINER:
            continue
        term = (cs.get("state") or {}).get("terminated") or {}
        if term:
            exit_code = term.get("exitCode")
            reason = term.get("reason")
            message = term.get("message")
    disruption = next((c.get("reason") or "DisruptionTarget"
                       for c in status.get("conditions") or []
                       if c.get("type") == "DisruptionTarget" and c.get("status") == "True"), None)
    return PodView(
        name=meta.get("name", ""),
        job=job,
        attempt=attempt,
        rank=rank,
        owner_uid=owner_uid,
        phase=status.get("phase") or "Pending",
        created_at=parse_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
        exit_code=exit_code,
        container_reason=reason,
        pod_reason=status.get("reason"),
        pod_message=status.get("message") or _unscheduled_message(status),
        termination_message=message,
        disruption=disruption,
    )


def _unscheduled_message(status: dict[str, Any]) -> str | None:
    """The scheduler's reason a pod is not placed (e.g. `0/3 nodes are available: ...`)."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond.get("message") or cond.get("reason")
    return None


def parse_termination(message: str | None) -> dict[str, Any] | None:
    """The trainer's one-line JSON summary, or None when missing or not a JSON object."""
    if not message:
        return None
    try:
        doc = json.loads(message.strip().splitlines()[-1] if message.strip() else "")
    except (ValueError, IndexError):
        return None
    return doc if isinstance(doc, dict) else None


def _short(text: Any) -> str:
    text = str(text or "").strip()
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def classify(pod: PodView) -> Failure | None:
    """Failure class of a pod, or None while it runs or after it succeeded."""
    if pod.phase == "Succeeded":
        return None
    if pod.phase not in ("Failed", "Unknown") and pod.disruption is None:
        return None
    summary = parse_termination(pod.termination_message) or {}
    trainer_message = _short(summary.get("message") or "")
    code = pod.exit_code
    base = dict(pod=pod.name, rank=pod.rank, exit_code=code)
    if pod.disruption is not None:
        # Any DisruptionTarget (scheduler preemption, eviction API/drain, taint manager, node
        # shutdown) means the pod was taken away, not that training broke: restart for free.
        return Failure("preempted", pod.disruption, _short(pod.pod_message) or trainer_message,
                       **base)
    if code is not None and contract.is_preempted(code):
        return Failure("preempted", contract.exit_reason(code),
                       trainer_message or "stopped on SIGTERM after saving a checkpoint", **base)
    if code is not None and contract.is_permanent(code):
        reason = summary.get("reason") if isinstance(summary.get("reason"), str) else None
        return Failure("permanent", reason or contract.exit_reason(code), trainer_message, **base)
    if pod.container_reason == "OOMKilled":
        return Failure("retryable", "OOMKilled", trainer_message or "container out of memory",
                       **base)
    if pod.pod_reason in ("Evicted", "NodeLost", "UnexpectedAdmissionError", "Terminated"):
        return Failure("retryable", pod.pod_reason, _short(pod.pod_message), **base)
    if pod.phase == "Unknown":
        return Failure("retryable", "NodeLost", _short(pod.pod_message) or "pod state unknown",
                       **base)
    if code is None:
        return Failure("retryable", pod.pod_reason or "Error",
                       _short(pod.pod_message) or trainer_message, **base)
    return Failure("retryable", contract.exit_reason(code), trainer_message, **base)


def success_summary(pod: PodView) -> dict[str, Any]:
    """Metrics and final model from rank 0's termination message (empty when absent)."""
    summary = parse_termination(pod.termination_message) or {}
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
    numeric = {str(k): float(v) for k, v in metrics.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out = {
        "metrics": numeric,
        "globalStep": summary.get("globalStep"),
        "finalModel": summary.get("finalModel"),
    }
    if isinstance(summary.get("stoppedEarly"), str):  # spec.earlyStopping ended the run
        out["stoppedEarly"] = summary["stoppedEarly"]
    return out


def started_spec_from_config_map(cm: dict[str, Any], job_uid: str | None = None
                                 ) -> dict[str, Any] | None:
    """The spec stored in a job's ConfigMap; None if unreadable or from another job uid."""
    raw = (cm.get("data") or {}).get(contract.JOB_FILE_NAME)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        return None
    if job_uid is not None and (doc.get("metadata") or {}).get("uid") != job_uid:
        return None
    return doc["spec"]
