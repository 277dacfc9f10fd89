"""Starting an attempt and getting its pods to run: create them (again, if missing), wait
while they are Pending, and fail the job when a pod stays Pending, the API server keeps
refusing to create the pods, or an object the job needs exists under its name but is owned by
another (`owners`), for longer than spec.restartPolicy.pendingTimeoutSeconds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ftjob_api import api
from ftjob_api.contract import rfc3339

from ..plan import Case, Event, Plan
from ..reasons import ConditionType, EventType, Reason
from . import finish
from .context import Ctx, min_requeue, seconds_until


@dataclass(frozen=True)
class Allowance:
    """Within pendingTimeoutSeconds: when to look again, and the API server's refusal."""

    wait: float | None  # seconds until the first Pending pod or the refusal runs out
    refused: str | None = None  # what the status says while the creates are refused
    reason: str = Reason.POD_CREATION_REJECTED  # ...and the phase's reason then


def pending_message(attempt: int, spec: api.FineTuneJobSpec) -> str:
    # The same text from creation until all pods run: no status write per scheduled pod.
    return f"attempt {attempt}: waiting for {spec.resources.nodes} pod(s) to run"


def start_attempt(ctx: Ctx, attempt: int, ensure: bool, case: Case, event: Event) -> Plan:
    """Create every pod of `attempt` (and the job's objects, if `ensure`): Pending."""
    plan = ctx.plan(case)
    if ensure:
        plan.actions.append(ctx.job_objects())
    plan.actions.append(ctx.create_pods(attempt, range(ctx.spec.resources.nodes)))
    ctx.out.set(attempt=attempt)
    ctx.out.begin_attempt(attempt)
    if not ctx.job.status.get("startTime"):
        ctx.out.set(startTime=rfc3339(ctx.now))
    ctx.out.phase(api.Phase.PENDING, Reason.PODS_CREATED, pending_message(attempt, ctx.spec))
    plan.events.append(event)
    return plan


def allowance(ctx: Ctx) -> Plan | Allowance:
    """The job fails once a pod of the attempt stayed Pending (unschedulable, an image
    pull), or the pods were refused, for longer than pendingTimeoutSeconds; else how long
    is left. Sets the PodCreationRejected condition."""
    stuck = _stuck_pending(ctx)
    if isinstance(stuck, Plan):
        return stuck
    conflict = _conflict(ctx, stuck)
    if conflict is not None:
        return conflict
    return _refusal(ctx, stuck)


def _conflict(ctx: Ctx, wait: float | None) -> Plan | Allowance | None:
    """A create found an object of the job's name that is not the job's (another job's, or
    made by hand: `owners`): not adopted. The job waits (the other may be an older job of
    the same name being garbage-collected) and fails after pendingTimeoutSeconds; the
    OwnershipConflict condition names the object and its owner. None: no conflict."""
    conflict = ctx.conflict if (ctx.ensure or ctx.missing) else None
    if conflict is None:
        ctx.out.condition(ConditionType.OWNERSHIP_CONFLICT, False, Reason.OBJECTS_OWNED)
        return None
    limit = ctx.spec.restart_policy.pending_timeout_seconds
    until = conflict.since + timedelta(seconds=limit)
    if ctx.now >= until:
        return finish.fail(ctx, Reason.OBJECT_OWNED_BY_OTHER,
                           f"for longer than pendingTimeoutSeconds ({limit}s): "
                           f"{conflict.message}", Case.OWNERSHIP_CONFLICT)
    ctx.out.condition(ConditionType.OWNERSHIP_CONFLICT, True, Reason.OBJECT_OWNED_BY_OTHER,
                      conflict.message)
    waiting = (f"attempt {ctx.attempt}: waiting since {rfc3339(conflict.since)} (the job fails "
               f"after pendingTimeoutSeconds, {limit}s): {conflict.message}")
    return Allowance(min_requeue(wait, seconds_until(until, ctx.now)), waiting,
                     Reason.OBJECT_OWNED_BY_OTHER)


def _stuck_pending(ctx: Ctx) -> Plan | float | None:
    limit = ctx.spec.restart_policy.pending_timeout_seconds
    wait = None
    for pod in ctx.current.values():
        if pod.phase == "Pending" and pod.created_at is not None:
            stuck_until = pod.created_at + timedelta(seconds=limit)
            if ctx.now >= stuck_until:
                return finish.fail(ctx, Reason.PENDING_TIMEOUT,
                                   f"pod {pod.name} stayed Pending longer than "
                                   f"pendingTimeoutSeconds ({limit}s)"
                                   + (f": {pod.pod_message}" if pod.pod_message else ""),
                                   Case.PENDING_TIMEOUT)
            wait = min_requeue(wait, seconds_until(stuck_until, ctx.now))
    return wait


def _refusal(ctx: Ctx, wait: float | None) -> Plan | Allowance:
    """The API server refuses to create the pods (a missing RuntimeClass, a ResourceQuota):
    the same allowance as a pod stuck Pending, counted from the first refusal. A refusal
    seen once every pod exists is stale."""
    refusal = ctx.refusal if ctx.missing else None
    if refusal is None:
        ctx.out.condition(ConditionType.POD_CREATION_REJECTED, False, Reason.PODS_CREATED)
        return Allowance(wait)
    limit = ctx.spec.restart_policy.pending_timeout_seconds
    refused_until = refusal.since + timedelta(seconds=limit)
    if ctx.now >= refused_until:
        return finish.fail(ctx, Reason.POD_CREATION_REJECTED,
                           f"the API server refused to create the pods for longer than "
                           f"pendingTimeoutSeconds ({limit}s): {refusal.message}",
                           Case.CREATION_REJECTED)
    refused = (f"attempt {ctx.attempt}: the API server has refused to create the pods since "
               f"{rfc3339(refusal.since)} (the job fails after pendingTimeoutSeconds, "
               f"{limit}s): {refusal.message}")
    ctx.out.condition(ConditionType.POD_CREATION_REJECTED, True, Reason.API_REJECTED, refused)
    return Allowance(min_requeue(wait, seconds_until(refused_until, ctx.now)), refused)


def create_missing(ctx: Ctx, allowed: Allowance) -> Plan:
    """Ranks without a pod: created after the status said so (a crash mid-create), not yet
    seen, or refused. Creates are create-if-absent."""
    out, attempt = ctx.out, ctx.attempt
    plan = ctx.attempt_plan(Case.CREATE_MISSING)
    if ctx.ensure:
        plan.actions.append(ctx.job_objects())
    plan.actions.append(ctx.create_pods(attempt, ctx.missing))
    if allowed.refused is not None:
        out.phase(api.Phase.PENDING, allowed.reason, allowed.refused)
    else:
        out.phase(api.Phase.PENDING, Reason.PODS_CREATED, pending_message(attempt, ctx.spec))
    if ctx.phase not in (api.Phase.PENDING.value, None):
        plan.events.append(Event(EventType.NORMAL, Reason.STARTED,
                                 f"created {ctx.spec.resources.nodes} pod(s) for attempt "
                                 f"{attempt}"))
    plan.requeue_after = min_requeue(ctx.deadline_wait, allowed.wait)
    return plan


def waiting(ctx: Ctx, allowed: Allowance) -> Plan:
    """Every pod exists and some are still Pending."""
    plan = ctx.attempt_plan(Case.PENDING)
    ctx.out.phase(api.Phase.PENDING, Reason.PODS_CREATED,
                  pending_message(ctx.attempt, ctx.spec))
    plan.requeue_after = min_requeue(ctx.deadline_wait, allowed.wait)
    return plan
