"""Pure: the Kueue Workload of a queued job, as Kueue's own job integrations keep it.

A job with `spec.scheduling.queueName` is one Kueue Workload (`kueue.x-k8s.io/v1beta2`)
with one pod set of `resources.nodes` pods: Kueue reserves quota for the whole gang or for
none of it, so it never admits half a job. The operator plays the part that Kueue's Go
`jobframework` plays for a batch Job (Kueue needs no code of ours and no RBAC on
FineTuneJobs):

- it creates the Workload (owned by the job), and starts pods only once it is `Admitted`;
- when Kueue evicts it (`Evicted=True`: preempted, `PodsReadyTimeout`, deactivated), it
  stops the pods the way `spec.suspend` does (each rank saves a checkpoint on SIGTERM) and,
  once every pod is gone, gives the quota back (`release_patch`), which requeues it;
- it reports `PodsReady` (every rank Ready: Kueue's `waitForPodsReady` evicts a gang that
  cannot all start) and `Finished` (the quota is freed when the job ends);
- `spec.suspend` sets the Workload inactive (`spec.active: false`), Kueue's own way to stop a
  job and keep it out of the queue until it is active again.

This module reads Workloads (`workload_view`) and writes manifests and patches; the policy
that decides with them is `policies/queue.py`, the API calls are `k8s.py`'s.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from collections.abc import Mapping
from typing import Any, Final

from ftjob_api import api, naming
from ftjob_api.contract import rfc3339

from .plan import JobRef

GROUP: Final = "kueue.x-k8s.io"
VERSION: Final = "v1beta2"
PLURAL: Final = "workloads"
FLAVOR_PLURAL: Final = "resourceflavors"
KIND: Final = "Workload"
POD_SET: Final = "main"  # the pod set's name, as Kueue's batch Job integration names it
# On a Workload the operator made inactive for spec.suspend: only such a one is made active
# again (one Kueue deactivated, e.g. past its requeuing limit, or an admin did, stays so).
ANNOTATION_SUSPENDED: Final = f"{api.GROUP}/suspended"
PRIORITY_CLASS_GROUP: Final = "scheduling.k8s.io"


class WorkloadCondition:
    """`status.conditions[].type` of a Workload (Kueue's names)."""

    QUOTA_RESERVED: Final = "QuotaReserved"
    ADMITTED: Final = "Admitted"
    EVICTED: Final = "Evicted"
    REQUEUED: Final = "Requeued"
    PODS_READY: Final = "PodsReady"
    FINISHED: Final = "Finished"


# Evicted reasons after which Kueue requeues at once (the others wait for a backoff, or for
# the Workload to be active again, and Kueue itself sets Requeued=True then).
REQUEUE_AT_ONCE: Final = frozenset({"Preempted", "NodeFailures"})


@dataclass(frozen=True)
class WorkloadView:
    """A job's Workload as the operator reads it."""

    name: str
    resource_version: str
    generation: int
    active: bool
    conditions: tuple[dict[str, Any], ...]
    cluster_queue: str | None  # status.admission.clusterQueue while quota is reserved
    owner_uid: str | None = None  # the controller's uid: the job it belongs to
    flavors: tuple[str, ...] = ()  # the ResourceFlavors of the admission, sorted
    count: int = 1  # pods in its pod set: the gang Kueue admits
    suspended_by_job: bool = False  # made inactive by the operator for spec.suspend

    def condition(self, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.conditions if c.get("type") == type_), None)

    def _true(self, type_: str) -> bool:
        return (self.condition(type_) or {}).get("status") == "True"

    @property
    def admitted(self) -> bool:
        """Quota reserved and every admission check passed: its pods may run."""
        return self._true(WorkloadCondition.ADMITTED) and not self.evicted

    @property
    def quota_reserved(self) -> bool:
        return self._true(WorkloadCondition.QUOTA_RESERVED) or self.cluster_queue is not None

    @property
    def evicted(self) -> bool:
        return self._true(WorkloadCondition.EVICTED)

    @property
    def finished(self) -> bool:
        return self._true(WorkloadCondition.FINISHED)

    def says(self, type_: str) -> tuple[str, str]:
        """(reason, message) of a condition, empty strings when absent."""
        cond = self.condition(type_) or {}
        return str(cond.get("reason") or ""), str(cond.get("message") or "")

    def waiting_for(self) -> str:
        """Why it waits, in Kueue's words (the QuotaReserved=False message), or ''."""
        cond = self.condition(WorkloadCondition.QUOTA_RESERVED) or {}
        return str(cond.get("message") or "") if cond.get("status") == "False" else ""


def workload_view(body: dict[str, Any]) -> WorkloadView | None:
    """Summarise a Workload; None for one that is not a job's (no job label)."""
    meta = body.get("metadata") or {}
    if not (meta.get("labels") or {}).get(naming.LABEL_JOB):
        return None
    spec, status = body.get("spec") or {}, body.get("status") or {}
    conditions = tuple(c for c in status.get("conditions") or [] if isinstance(c, dict))
    admission = status.get("admission") or {}
    return WorkloadView(
        name=str(meta.get("name") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
        generation=int(meta.get("generation") or 1),
        active=spec.get("active") is not False,
        conditions=conditions,
        cluster_queue=(str(admission["clusterQueue"]) if admission.get("clusterQueue")
                       else None),
        owner_uid=next((str(o.get("uid")) for o in meta.get("ownerReferences") or []
                        if isinstance(o, dict) and o.get("controller") is True), None),
        count=next((int(p.get("count") or 1) for p in spec.get("podSets") or []
                    if isinstance(p, dict)), 1),
        suspended_by_job=(meta.get("annotations") or {}).get(ANNOTATION_SUSPENDED) == "true",
        flavors=tuple(sorted({str(name) for assignment in admission.get("podSetAssignments") or []
                              if isinstance(assignment, dict)
                              for name in (assignment.get("flavors") or {}).values()})),
    )


@dataclass(frozen=True)
class Placement:
    """Where the flavors Kueue assigned put the pods: the node labels and tolerations of
    those ResourceFlavors, added to each pod as Kueue's own integrations do."""

    node_labels: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[dict[str, Any], ...] = ()


def flavor_placement(body: dict[str, Any]) -> Placement:
    """A ResourceFlavor's spec.nodeLabels and spec.tolerations."""
    spec = body.get("spec") or {}
    labels = spec.get("nodeLabels") or {}
    return Placement(tuple(sorted((str(k), str(v)) for k, v in labels.items())),
                     tuple(t for t in spec.get("tolerations") or [] if isinstance(t, dict)))


def placement_of(workload: WorkloadView | None, flavors: Mapping[str, Placement]) -> Placement:
    """The placement of an admitted Workload's flavors (a flavor not seen adds nothing)."""
    if workload is None:
        return Placement()
    chosen = [flavors[name] for name in workload.flavors if name in flavors]
    return Placement(tuple(sorted({kv for p in chosen for kv in p.node_labels})),
                     tuple(t for p in chosen for t in p.tolerations))


def place(pod: dict[str, Any], placement: Placement) -> dict[str, Any]:
    """The pod with the flavors' node labels in its nodeSelector and their tolerations."""
    if not placement.node_labels and not placement.tolerations:
        return pod
    spec = dict(pod["spec"])
    if placement.node_labels:
        spec["nodeSelector"] = {**(spec.get("nodeSelector") or {}), **dict(placement.node_labels)}
    if placement.tolerations:
        spec["tolerations"] = [*(spec.get("tolerations") or []),
                               *(t for t in placement.tolerations
                                 if t not in (spec.get("tolerations") or []))]
    return {**pod, "spec": spec}


def workload_name(job: str) -> str:
    return f"finetunejob-{job}"


# --------------------------------------------------------------------------- the manifest

# The parts of a pod spec that decide where, and with how much, it runs: what Kueue counts
# against the quota and matches against flavors. The rest (env, volumes, command) stays out
# of the Workload, which cannot change while it holds quota.
_SCHEDULING_KEYS = ("nodeSelector", "affinity", "tolerations", "priorityClassName",
                    "runtimeClassName", "overhead")


def render_workload(job: JobRef, spec: api.FineTuneJobSpec, pod: dict[str, Any],
                    owner: dict[str, Any]) -> dict[str, Any]:
    """The Workload of a queued job: one pod set of `nodes` pods shaped like `pod` (a rank's
    rendered pod). The priority class is named here; its value (`spec.priority`, which
    Kueue compares) is read from the cluster when the Workload is created (`k8s.py`)."""
    pod_spec = copy.deepcopy(pod["spec"])
    template = {key: pod_spec[key] for key in _SCHEDULING_KEYS if key in pod_spec}
    template["containers"] = [_container_demand(c) for c in pod_spec["containers"]]
    if pod_spec.get("initContainers"):
        template["initContainers"] = [_container_demand(c) for c in pod_spec["initContainers"]]
    workload_spec: dict[str, Any] = {
        "queueName": spec.scheduling.queue_name,
        "podSets": [{"name": POD_SET, "count": spec.resources.nodes,
                     "template": {"spec": template}}],
        "active": not spec.suspend,
    }
    annotations = {ANNOTATION_SUSPENDED: "true"} if spec.suspend else {}
    if spec.scheduling.priority_class_name:
        workload_spec["priorityClassRef"] = {"group": PRIORITY_CLASS_GROUP,
                                             "kind": "PriorityClass",
                                             "name": spec.scheduling.priority_class_name}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
        "metadata": {"name": workload_name(job.name), "namespace": job.namespace,
                     "labels": {**naming.common_labels(job.name), "kueue.x-k8s.io/job-uid": job.uid},
                     **({"annotations": annotations} if annotations else {}),
                     "ownerReferences": [owner]},
        "spec": workload_spec,
    }


def _container_demand(container: dict[str, Any]) -> dict[str, Any]:
    demand = {"name": container["name"], "image": container.get("image", "")}
    if container.get("resources"):
        demand["resources"] = container["resources"]
    return demand


# --------------------------------------------------------------------------- status patches


def _condition(view: WorkloadView, type_: str, status: bool, reason: str, message: str,
               now: datetime) -> dict[str, Any]:
    value = "True" if status else "False"
    previous = view.condition(type_) or {}
    changed = previous.get("status") != value
    return {"type": type_, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": (rfc3339(now) if changed or not previous.get("lastTransitionTime")
                                   else previous["lastTransitionTime"]),
            "observedGeneration": view.generation}


def with_conditions(view: WorkloadView, updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The whole conditions list with `updates` replacing those of their types (a merge patch
    replaces a list, so every condition Kueue wrote is carried over as it was)."""
    types = {u["type"] for u in updates}
    return [c for c in view.conditions if c.get("type") not in types] + updates


def release_patch(view: WorkloadView, now: datetime) -> dict[str, Any]:
    """Give the quota of an evicted Workload back once its pods are gone, as jobframework
    does: no admission, QuotaReserved=False, Admitted=False and Requeued (True where Kueue
    requeues at once; otherwise Kueue sets it when its backoff ends). Evicted stays True
    until Kueue admits the Workload again."""
    reason, message = view.says(WorkloadCondition.EVICTED)
    reason = reason or "Pending"
    updates = [
        _condition(view, WorkloadCondition.QUOTA_RESERVED, False, "Pending", message, now),
        _condition(view, WorkloadCondition.ADMITTED, False, "NoReservation",
                   "The workload has no reservation", now),
        _condition(view, WorkloadCondition.REQUEUED, reason in REQUEUE_AT_ONCE, reason,
                   message, now),
        # Not Ready for the next admission: a stale True would switch its timeout off.
        _condition(view, WorkloadCondition.PODS_READY, False, "WaitForStart",
                   "Not all pods are ready or succeeded", now),
    ]
    return {"admission": None, "conditions": with_conditions(view, updates)}


def pods_ready_condition(view: WorkloadView, ready: bool, now: datetime) -> dict[str, Any] | None:
    """The PodsReady condition Kueue's waitForPodsReady reads, in jobframework's words; None
    when it already says so."""
    previous_reason, _ = view.says(WorkloadCondition.PODS_READY)
    was_ready = (view.condition(WorkloadCondition.PODS_READY) or {}).get("status") == "True"
    if ready:
        reason = "Recovered" if previous_reason in ("WaitForRecovery", "Recovered") else "Started"
        message = "All pods reached readiness and the workload is running"
    elif was_ready and view.admitted:
        reason, message = "WaitForRecovery", "At least one pod has failed, waiting for recovery"
    else:
        reason, message = "WaitForStart", "Not all pods are ready or succeeded"
    if was_ready == ready and previous_reason == reason:
        return None
    return _condition(view, WorkloadCondition.PODS_READY, ready, reason, message, now)


def finished_condition(view: WorkloadView, succeeded: bool, message: str, now: datetime
                       ) -> dict[str, Any]:
    return _condition(view, WorkloadCondition.FINISHED, True,
                      "Succeeded" if succeeded else "Failed", message or "finished", now)


def queued_phase_message(view: WorkloadView | None, queue: str, refused: str | None = None
                         ) -> str:
    """What a job waiting for quota says: the LocalQueue, and Kueue's reason once given, or
    why its Workload cannot be created (`refused`: no PriorityClass, no Kueue CRD...)."""
    text = f"queued in Kueue LocalQueue {queue}"
    if view is None and refused is not None:
        return f"{text}: its Workload cannot be created: {refused}"
    why = view.waiting_for() if view is not None else ""
    return f"{text}: {why}" if why else f"{text}: waiting for Kueue to admit it"


def finished_phase(status: dict[str, Any]) -> bool | None:
    """True/False for a Succeeded/Failed job, None while it runs."""
    phase = status.get("phase")
    if phase not in api.FINISHED_PHASES:
        return None
    return phase == api.Phase.SUCCEEDED.value
