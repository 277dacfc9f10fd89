"""What one decision reads and returns: the job as seen (`JobState`) and the `Plan`.

A plan is the whole outcome of `reconcile.decide`: a named case, the actions to carry out
(in order), the status merge patch and the Events, gathered while the policies decide and
handed over once, so that `k8s.py` writes them after the decision. The actions carry
finished manifests (rendered by `render.py` where the decision is made), so the actuator
creates and deletes what it is given and parses no spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any



@dataclass(frozen=True)
class JobRef:
    """The identity of a FineTuneJob: enough to name, label and own its children."""

    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class JobState(JobRef):
    """The job as read: its identity (a `JobRef`, what its children are named, labelled and
    owned by), generation, spec and status."""

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


Manifest = dict[str, Any]


@dataclass(frozen=True)
class EnsureJobObjects:
    """ServiceAccount, Role, RoleBinding, Service, claim (if any) and ConfigMap, each created
    if absent, one after another in this order: the ConfigMap comes last and marks the set as
    complete."""

    manifests: tuple[Manifest, ...]


@dataclass(frozen=True)
class CreatePods:
    """The pods of one attempt (all ranks, or the missing ones), created concurrently; or
    the export pod of one try (`attempt` is then the try)."""

    attempt: int
    pods: tuple[Manifest, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p["metadata"]["name"] for p in self.pods)


@dataclass(frozen=True)
class DeletePods:
    names: tuple[str, ...]


@dataclass(frozen=True)
class DeleteJob:
    pass


@dataclass(frozen=True)
class RestoreConfigMap:
    """Put the job's ConfigMap (its started spec) back as rendered: someone changed it."""

    manifest: Manifest


@dataclass(frozen=True)
class EnsureWorkload:
    """The Kueue Workload of a queued job (`kueue.render_workload`), created if absent."""

    manifest: Manifest


@dataclass(frozen=True)
class SetWorkloadActive:
    """`spec.active` of the job's Workload: false while the job is suspended."""

    name: str
    active: bool


@dataclass(frozen=True)
class UpdateWorkloadStatus:
    """A merge patch of the Workload's status, refused (409) unless the Workload is still at
    `resource_version`: its conditions list is written whole, from what was read."""

    name: str
    resource_version: str
    status: dict[str, Any]


Action = (EnsureJobObjects | CreatePods | DeletePods | DeleteJob | RestoreConfigMap
          | EnsureWorkload | SetWorkloadActive | UpdateWorkloadStatus)


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
    OWNERSHIP_CONFLICT = "object owned by another"
    STARTED_SPEC_RESTORED = "started spec restored"
    STARTED_SPEC_CHANGED = "started spec changed"
    DEADLINE_EXCEEDED = "deadline exceeded"
    RESTART_WAITING = "restart, waiting for pods to go"
    BACKING_OFF = "restart, backing off"
    RESTART = "restart"
    QUEUED = "queued in Kueue"
    SUSPEND = "suspend"
    SUSPEND_WAITING = "suspend, waiting for the checkpoint"
    SUSPEND_CHECKED = "suspended, checkpoint checked"
    RESUME_WAITING = "resume, waiting for pods to go"
    RESUME = "resume"
    FINISHED = "finished"
    TTL_EXPIRED = "finished, ttl expired"
    # The export step of spec.output, after training succeeded (policies/export.py)
    EXPORT_START = "export, start"
    EXPORTING = "exporting"
    EXPORT_BACKING_OFF = "export, backing off"
    EXPORT_RETRY = "export, retry"
    EXPORTED = "exported"
    EXPORT_WITHHELD = "export withheld"
    EXPORT_FAILED = "export failed"


@dataclass
class Plan:
    case: Case
    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # merge patch of changed keys only
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until a timer-based decision is due
