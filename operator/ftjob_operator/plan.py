"""What one decision reads and returns: the job as seen (`JobState`) and the `Plan`.

A plan is the whole outcome of `reconcile.decide`: a named case, the actions to carry out
(in order), the status merge patch and the Events, gathered while the policies decide and
handed over once, so that `k8s.py` writes them after the decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class JobState:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> JobState:
        meta = body.get("metadata") or {}
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation") or 1),
            spec=dict(body.get("spec") or {}),
            status=dict(body.get("status") or {}),
        )


@dataclass(frozen=True)
class EnsureJobObjects:
    """ServiceAccount, Role, RoleBinding, Service, ConfigMap and claim (if absent)."""

    spec: dict[str, Any]


@dataclass(frozen=True)
class CreatePods:
    attempt: int
    ranks: tuple[int, ...]
    spec: dict[str, Any]


@dataclass(frozen=True)
class DeletePods:
    names: tuple[str, ...]


@dataclass(frozen=True)
class DeleteJob:
    pass


Action = EnsureJobObjects | CreatePods | DeletePods | DeleteJob


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


class Case(StrEnum):
    """The named cases of the state machine (`Plan.case`); the values are log and metric
    labels."""

    INVALID_SPEC = "invalid spec"
    START = "start"
    CREATE_MISSING = "create missing pods"
    PENDING = "pending"
    RUNNING = "running"
    RANK0_SUCCEEDED_WAITING = "rank 0 succeeded, waiting for the other ranks"
    SUCCEEDED = "succeeded"
    RANK_DELETED_WAITING = "rank deleted, waiting for it to stop"
    GANG_RESTART = "rank failed, gang restart"
    PREEMPTED_RESTART = "preempted, gang restart"
    STALLED_RESTART = "stalled, gang restart"
    PERMANENT_FAILURE = "permanent failure"
    BUDGET_EXHAUSTED = "restart budget exhausted"
    PENDING_TIMEOUT = "pending timeout"
    CREATION_REJECTED = "pod creation rejected"
    DEADLINE_EXCEEDED = "deadline exceeded"
    RESTART_WAITING = "restart, waiting for pods to go"
    BACKING_OFF = "restart, backing off"
    RESTART = "restart"
    SUSPEND = "suspend"
    SUSPEND_WAITING = "suspend, waiting for the checkpoint"
    SUSPEND_CHECKED = "suspended, checkpoint checked"
    RESUME_WAITING = "resume, waiting for pods to go"
    RESUME = "resume"
    FINISHED = "finished"
    TTL_EXPIRED = "finished, ttl expired"


@dataclass
class Plan:
    case: Case
    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # merge patch of changed keys only
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until a timer-based decision is due
