"""Pure: decide(job, observed, now, settings) -> Plan. The whole state machine, no I/O.

Every decision is derived from the job's status and the pods as seen, so the operator can
be restarted at any moment (mid-create, mid-restart) and converge: repeating a decision
on a stale view creates nothing twice (creates are create-if-absent) and writes the same
status values again. Each case has a name (`Plan.case`) that the tests table against.

This module only dispatches, in the order below; each policy lives in its own module of
`policies/` (see there), the status builder in `status.py`, the plan's types in `plan.py`
and every condition type and reason in `reasons.py`. The plan's creates carry the manifests
rendered (by `render.py`, also pure) with `settings`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pydantic

from ftjob_api import api, validation
from ftjob_api.contract import rfc3339
from ftjob_api.problems import errors

from .observe import Observed, PodView
from .plan import Case, Event, JobState, Plan
from .policies import (adoption, export, failure, finish, pending, queue, spec_edits, stall,
                       started_spec, suspend, trials)
from .policies.context import Ctx
from .policies.spec_edits import effective_spec
from .reasons import EventType, Reason
from .settings import Settings
from .status import StatusBuilder



def decide(job: JobState, observed: Observed, now: datetime,
           settings: Settings = Settings()) -> Plan:
    status = job.status
    pods = [p for p in observed.pods if p.owner_uid in (None, job.uid)]
    exports = [p for p in observed.exports if p.owner_uid in (None, job.uid)]
    out = StatusBuilder(job, now)

    if status.get("phase") in api.FINISHED_PHASES:
        # spec.output: the export step after training succeeded, until it has finished
        plan = (export.deliver(job, observed, exports, now, settings)
                or finish.finished(job, pods + exports, now))
        return _with_queue(job, observed, pods, plan, now)

    # -- the started spec (its ConfigMap) changed by someone else: put back, or the job fails
    if (plan := started_spec.verify(job, observed, out)) is not None:
        plan.status = out.patch()
        return plan

    started = observed.started_spec
    if started is None and out.read.attempt == 0 and not pods:
        problems = errors(validation.validate_spec(job.spec, allowed=settings.allowed))
        if problems:
            return finish.invalid(job, out, "; ".join(str(p) for p in problems))

    raw_spec = effective_spec(job.spec, started)
    try:
        spec = api.parse_spec(raw_spec)
    except pydantic.ValidationError as exc:  # only a spec edited to nonsense in a mutable field
        return finish.invalid(job, out, str(exc).splitlines()[0])

    plan = _decide_phase(job, spec, raw_spec, pods, observed, out, now, settings)
    spec_edits.report(job, started, out, plan)
    trials.announce(status, out, plan)
    adoption.announce(status, out, plan)
    plan.status = out.patch()  # every status change of the decision, written once
    return _with_queue(job, observed, pods, plan, now)


def _with_queue(job: JobState, observed: Observed, pods: list[PodView], plan: Plan,
                now: datetime) -> Plan:
    """The Workload's side of the decision (Kueue), once the job's status is decided."""
    queue.sync(job, {**job.status, **plan.status}, observed.workload, pods, plan, now)
    return plan


def _decide_phase(job: JobState, spec: api.FineTuneJobSpec, raw_spec: dict[str, Any],
                  pods: list[PodView], observed: Observed, out: StatusBuilder,
                  now: datetime, settings: Settings) -> Plan:
    recorded = out.read.attempt
    attempt = max([recorded, *(p.attempt for p in pods)])
    out.attempt = attempt
    # Waiting in a Kueue queue counts like a suspend: not against activeDeadlineSeconds.
    held = queue.held(spec, observed.workload)
    ctx = Ctx(job, spec, raw_spec, pods, [p for p in pods if not p.deleting], attempt,
              observed.started_spec is None, out, now,
              finish.active_deadline(spec, out.read, held), observed.refusal, settings,
              observed.conflict, observed.placement)

    # -- running longer than activeDeadlineSeconds
    if (plan := finish.deadline_exceeded(ctx)) is not None:
        return plan

    # -- rank 0 finished training while the job was being stopped (a suspend or a Kueue
    #    eviction that came at the last step): done, nothing is left to resume
    if (rank0 := ctx.current.get(0)) is not None and rank0.phase == "Succeeded":
        return _active_attempt(ctx)

    # -- suspended by the user: stop every pod; the trainer checkpoints on SIGTERM
    if spec.suspend:
        return suspend.suspend(ctx)

    # -- queued (Kueue): no pods without an admitted Workload; stopped when it is evicted
    if (plan := queue.hold(ctx, observed.workload)) is not None:
        return plan

    # -- a new attempt is due: never started, resumed after suspend, or restarting
    if attempt == 0:
        return pending.start_attempt(
            ctx, 1, True, Case.START,
            Event(EventType.NORMAL, Reason.STARTED,
                  f"created {spec.resources.nodes} pod(s) for attempt 1"))
    if attempt == recorded and ctx.phase == api.Phase.SUSPENDED.value:
        return suspend.resume(ctx)
    if attempt == recorded and ctx.phase == api.Phase.RESTARTING.value:
        return failure.next_attempt(ctx)

    # -- an attempt is in flight (Pending/Running, or adopted after a crash mid-create)
    return _active_attempt(ctx)


def _active_attempt(ctx: Ctx) -> Plan:
    out = ctx.out
    out.set(attempt=ctx.attempt)
    out.begin_attempt(ctx.attempt)
    if not ctx.job.status.get("startTime"):
        out.set(startTime=rfc3339(ctx.now))

    # -- rank 0 exited 0; a rank failed (a gang restart); the pods cannot get going
    if (plan := finish.success(ctx)) is not None:
        return plan
    if (plan := failure.rank_failures(ctx)) is not None:
        return plan
    allowed = pending.allowance(ctx)
    if isinstance(allowed, Plan):
        return allowed

    # -- the attempt as it goes: pods to create, all running (or stalled), some Pending
    if ctx.missing:
        return pending.create_missing(ctx, allowed)
    if all(p.phase in ("Running", "Succeeded") for p in ctx.current.values()):
        return stall.running(ctx)
    return pending.waiting(ctx, allowed)
