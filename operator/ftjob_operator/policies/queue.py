"""spec.scheduling.queueName: Kueue decides when the job runs (`kueue.py` says how its
Workload is kept).

`hold` comes before an attempt starts or goes on: without an admitted Workload no pod is
created, and pods that run when Kueue takes the quota back (a preemption, a gang that did
not get Ready in time) are stopped as `spec.suspend` stops them, so each rank saves a
checkpoint and the next admission resumes from it without spending the restart budget.
`sync` comes after every decision and keeps the Workload's side: active or not, the quota
given back once the pods are gone, PodsReady and Finished.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ftjob_api import api

from .. import kueue
from ..kueue import WorkloadCondition, WorkloadView
from ..observe import PodView
from ..plan import Case, Event, JobState, Plan, SetWorkloadActive, UpdateWorkloadStatus
from ..reasons import ConditionType, EventType, Reason
from ..status import condition_of
from . import suspend
from .context import Ctx


def held(spec: api.FineTuneJobSpec, workload: WorkloadView | None) -> bool:
    """Whether Kueue keeps the job from running (queued, or its quota taken back)."""
    return bool(spec.scheduling.queue_name) and not (workload is not None and workload.admitted)


def hold(ctx: Ctx, workload: WorkloadView | None) -> Plan | None:
    """None when the job may run (no queue, or Kueue admitted it); else the plan that keeps
    it waiting, or stops its pods."""
    queue = ctx.spec.scheduling.queue_name
    if not queue:
        return None
    out = ctx.out
    if workload is not None and workload.admitted:
        out.condition(ConditionType.QUEUED, False, Reason.ADMITTED,
                      f"admitted by Kueue ClusterQueue {workload.cluster_queue or '?'}")
        return None  # `sync` posts the Admitted Event

    if any(not p.terminated for p in ctx.pods) or _attempt_open(ctx):
        # Kueue took the quota back while the attempt runs: stop it, checkpoint and all.
        cause = _eviction(workload)
        plan = suspend.suspend(ctx, cause)
        if ctx.phase != api.Phase.SUSPENDED.value:
            plan.events.append(Event(EventType.NORMAL, Reason.EVICTED_BY_QUEUE,
                                     f"{cause}; stopping the pods to save a checkpoint"))
        return plan

    plan = ctx.plan(Case.QUEUED)
    if workload is None:
        plan.actions.append(ctx.ensure_workload())
    message = kueue.queued_phase_message(workload, queue,
                                         ctx.refusal.message if ctx.refusal else None)
    if not _queued(ctx.job.status):
        plan.events.append(Event(EventType.NORMAL, Reason.QUEUED,
                                 f"queued in Kueue LocalQueue {queue}"))
    out.condition(ConditionType.QUEUED, True, Reason.QUEUED, message)
    phase = api.Phase.PENDING if ctx.attempt == 0 else api.Phase.SUSPENDED
    out.phase(phase, Reason.QUEUED, message)
    return plan


def _attempt_open(ctx: Ctx) -> bool:
    """An attempt that started and has no end on record (its pods are gone: the suspend
    closes it, checking the checkpoint)."""
    record = ctx.out.record(ctx.attempt)
    return ctx.attempt > 0 and record is not None and not record.end_time


def _queued(status: dict[str, Any]) -> bool:
    return (condition_of(status, ConditionType.QUEUED) or {}).get("status") == "True"


def _eviction(workload: WorkloadView | None) -> str:
    if workload is None:
        return "Kueue (its Workload is gone)"
    reason, message = workload.says(WorkloadCondition.EVICTED)
    if workload.evicted:
        return f"Kueue ({reason}: {message})" if message else f"Kueue ({reason})"
    return "Kueue (the quota is no longer reserved)"


def sync(job: JobState, status: dict[str, Any], workload: WorkloadView | None,
         pods: list[PodView], plan: Plan, now: datetime) -> None:
    """Add to `plan` what keeps the Workload in step with the job: `status` is the job's
    status after the plan. Nothing without a Workload, or once it is Finished."""
    if _queued(job.status) and not _queued(status):
        plan.events.append(Event(EventType.NORMAL, Reason.ADMITTED, str(
            (condition_of(status, ConditionType.QUEUED) or {}).get("message") or "admitted")))
    if workload is None or workload.finished:
        return
    finished = kueue.finished_phase(status)
    if finished is not None:
        plan.actions.append(UpdateWorkloadStatus(workload.name, workload.resource_version, {
            "conditions": kueue.with_conditions(workload, [kueue.finished_condition(
                workload, finished, str(status.get("message") or ""), now)])}))
        return
    status_update = _status_update(workload, status, pods, now)
    if status_update is not None:
        plan.actions.append(status_update)
    # After the status patch, which names the resourceVersion read: this one changes it.
    if job.spec.get("suspend") and workload.active:
        plan.actions.append(SetWorkloadActive(workload.name, False))
    elif not job.spec.get("suspend") and not workload.active and workload.suspended_by_job:
        plan.actions.append(SetWorkloadActive(workload.name, True))


def _status_update(workload: WorkloadView, status: dict[str, Any], pods: list[PodView],
                   now: datetime) -> UpdateWorkloadStatus | None:
    """The quota given back once an evicted job's pods are all gone, or else PodsReady as
    it now is (every rank of the attempt Ready); None when nothing changed."""
    if workload.quota_reserved and not workload.admitted and workload.evicted and not any(
            not p.terminated for p in pods):
        return UpdateWorkloadStatus(workload.name, workload.resource_version,
                                    kueue.release_patch(workload, now))
    attempt = int(status.get("attempt") or 0)
    ready = workload.admitted and sum(
        1 for p in pods if p.attempt == attempt and (p.ready or p.phase == "Succeeded")
        and not p.deleting) >= workload.count
    if workload.condition(WorkloadCondition.PODS_READY) is None and not ready:
        return None  # absent reads as WaitForStart: no write needed
    condition = kueue.pods_ready_condition(workload, ready, now)
    if condition is None:
        return None
    return UpdateWorkloadStatus(workload.name, workload.resource_version, {
        "conditions": kueue.with_conditions(workload, [condition])})
