"""How a job ends: success, the terminal failure every policy ends in, an invalid spec,
activeDeadlineSeconds, and what a finished job still does (stop leftover pods, delete the
job ttlSecondsAfterFinished after it finished, and after its export: policies/export.py)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Annotated

import pydantic

from ftjob_api import api
from ftjob_api.contract import rfc3339

from ..observe import PodView, parse_time, success_summary
from ..plan import Case, DeleteJob, DeletePods, Event, JobState, Plan
from ..reasons import ConditionType, EventType, Reason
from ..status import StatusBuilder, condition_of
from .context import Ctx, seconds_until

_TTL_FIELD = api.FineTuneJobSpec.model_fields["ttl_seconds_after_finished"]
# The API model's own field (its type and bounds: an int >= 0, or None), to read it from a
# spec that may not parse as a whole. Strict, as the CRD schema: "10" or true is no TTL.
_TTL = pydantic.TypeAdapter(Annotated[(_TTL_FIELD.annotation, *_TTL_FIELD.metadata)])


def ttl_seconds(job: JobState) -> int | None:
    """spec.ttlSecondsAfterFinished as the API model reads it; None if unset or invalid.

    Read from the job's current spec: the field is mutable (the current value is the
    effective one), and a finished job's spec need not parse as a whole (a job that failed
    with InvalidSpec is still deleted after its TTL)."""
    try:
        return _TTL.validate_python(job.spec.get(_TTL_FIELD.alias), strict=True)
    except pydantic.ValidationError:
        return None


def ttl_wait(job: JobState, finished_at: datetime | None, now: datetime) -> float | None:
    """Seconds until ttlSecondsAfterFinished deletes a job that finished at `finished_at`
    (0.0: due now); None without a TTL or a finish time."""
    ttl = ttl_seconds(job)
    if ttl is None or finished_at is None:
        return None
    return seconds_until(finished_at + timedelta(seconds=ttl), now)


def active_deadline(spec: api.FineTuneJobSpec, status: api.FineTuneJobStatus,
                    held: bool = False) -> datetime | None:
    """When activeDeadlineSeconds ends the job; None without one, before the start and
    while suspended or `held` (waiting in a Kueue queue)."""
    started_at = parse_time(status.start_time)
    if spec.active_deadline_seconds is None or started_at is None or spec.suspend or held:
        return None
    # startTime has whole seconds, rounded down: never cut a job short because of it.
    return started_at + timedelta(seconds=spec.active_deadline_seconds + 1)


def deadline_exceeded(ctx: Ctx) -> Plan | None:
    if ctx.deadline is None or ctx.now < ctx.deadline:
        return None
    return fail(ctx, Reason.DEADLINE_EXCEEDED,
                f"ran longer than activeDeadlineSeconds ({ctx.spec.active_deadline_seconds}s)",
                Case.DEADLINE_EXCEEDED)


def success(ctx: Ctx) -> Plan | None:
    """Rank 0 exited 0 (its summary is the job's result): succeeded once no rank still
    runs. None while rank 0 has not succeeded."""
    rank0 = ctx.current.get(0)
    if rank0 is None or rank0.phase != "Succeeded":
        return None
    if all(p.terminated for p in ctx.current.values()):
        return _succeed(ctx, rank0)
    return ctx.attempt_plan(Case.RANK0_SUCCEEDED_WAITING)


def _succeed(ctx: Ctx, rank0: PodView) -> Plan:
    out = ctx.out
    plan = Plan(Case.SUCCEEDED)
    _clean_up_pods(ctx, plan)
    summary = success_summary(rank0)
    step = summary["globalStep"]
    model = summary["finalModel"]
    message = "training finished"
    if summary.get("stoppedEarly"):
        message += f", {summary['stoppedEarly']}"  # spec.earlyStopping; names the step
    elif isinstance(step, int):
        message += f" at step {step}"
    if isinstance(model, str):
        message += f"; final model in {model}"
    out.end_attempt(Reason.SUCCEEDED, message, resumes=False)
    out.phase(api.Phase.SUCCEEDED, Reason.COMPLETED, message)
    out.set(completionTime=rfc3339(out.now))
    if summary["metrics"]:
        metrics = {k: v for k, v in summary["metrics"].items() if math.isfinite(v)}
        out.set(metrics=metrics)
    plan.events.append(Event(EventType.NORMAL, Reason.SUCCEEDED, message))
    plan.requeue_after = ttl_wait(ctx.job, ctx.now, ctx.now)
    return plan


def fail(ctx: Ctx, reason: str, message: str, case: Case,
         history_text: str | None = None) -> Plan:
    """The job fails: pods per cleanPodPolicy, the attempt closed, Failed, a Warning Event
    named `reason`."""
    out = ctx.out
    plan = Plan(case)
    _clean_up_pods(ctx, plan)
    out.end_attempt(Reason.FAILED, history_text or message, resumes=False)
    out.phase(api.Phase.FAILED, reason, message)
    out.set(completionTime=rfc3339(out.now))
    plan.events.append(Event(EventType.WARNING, reason, message))
    plan.requeue_after = ttl_wait(ctx.job, ctx.now, ctx.now)
    return plan


def _clean_up_pods(ctx: Ctx, plan: Plan) -> None:
    """Delete the pods `spec.cleanPodPolicy` names once the job has finished."""
    policy = ctx.spec.clean_pod_policy
    if policy == "None":
        return
    doomed = tuple(p.name for p in ctx.pods if not p.deleting
                   and (policy == "All" or not p.terminated))
    if doomed:
        plan.actions.append(DeletePods(doomed))


def invalid(job: JobState, out: StatusBuilder, message: str) -> Plan:
    """The spec cannot run: Failed with InvalidSpec before anything is created."""
    out.phase(api.Phase.FAILED, Reason.INVALID_SPEC, message)
    out.condition(ConditionType.INVALID_SPEC, True, Reason.INVALID_SPEC, message)
    out.set(completionTime=job.status.get("completionTime") or rfc3339(out.now))
    plan = Plan(Case.INVALID_SPEC)
    if job.status.get("phase") != api.Phase.FAILED.value:
        plan.events.append(Event(EventType.WARNING, Reason.INVALID_SPEC, message))
    plan.status = out.patch()
    return plan


def finished_at(status: dict) -> datetime | None:
    """When ttlSecondsAfterFinished starts counting: the job's completionTime or, with
    spec.output, when the export finished (the Exported condition's transition), whichever
    is later. (`decide` asks `policies/export.py` first: while the export has not finished,
    this is not reached.)"""
    exported = condition_of(status, ConditionType.EXPORTED) or {}
    times = [t for t in (parse_time(status.get("completionTime")),
                         parse_time(exported.get("lastTransitionTime")))
             if t is not None and t.tzinfo is not None]  # RFC 3339, as the API writes them
    return max(times) if times else None


def finished(job: JobState, pods: list[PodView], now: datetime) -> Plan:
    """A Succeeded or Failed job: its status is final; only pods still running (ranks, an
    export pod) are stopped, and the job is deleted once its TTL is over."""
    plan = Plan(Case.FINISHED)
    # A failed job leaves no rank running (a peer may still wait on a dead rendezvous);
    # terminated pods stay for their logs.
    alive = tuple(p.name for p in pods if not p.terminated and not p.deleting)
    if alive:
        plan.actions.append(DeletePods(alive))
    wait = ttl_wait(job, finished_at(job.status), now)
    if wait == 0.0:
        plan.case = Case.TTL_EXPIRED
        plan.actions.append(DeleteJob())
        plan.events.append(Event(EventType.NORMAL, Reason.DELETED,
                                 f"deleted {ttl_seconds(job)}s after it finished "
                                 "(ttlSecondsAfterFinished)"))
    else:
        plan.requeue_after = wait
    plan.status = {}  # a finished job's status is final; observedGeneration stays as it ended
    return plan
