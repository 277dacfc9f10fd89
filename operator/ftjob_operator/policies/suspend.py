"""spec.suspend (set by a user or a queue such as Kueue): stop every pod (the trainer saves
a checkpoint on SIGTERM), then say whether the stop saved a verified checkpoint at the last
step; on resume, a new attempt that no budget counts."""

from __future__ import annotations

from ftjob_api import api

from ..plan import Case, DeletePods, Event, Plan
from ..reasons import ConditionType, EventType, Reason
from . import pending
from .context import DELETED_POD_RECHECK_SECONDS, Ctx


def suspend(ctx: Ctx, cause: str | None = None) -> Plan:
    """Stop the pods, then check the checkpoint once every pod of the attempt is gone.
    `cause`: who suspends, when not spec.suspend (Kueue taking the quota back)."""
    out, attempt = ctx.out, ctx.attempt
    plan = ctx.plan(Case.SUSPEND)
    plan.requeue_after = None
    if ctx.live:
        plan.actions.append(DeletePods(tuple(p.name for p in ctx.live)))
    if ctx.phase != api.Phase.SUSPENDED.value:
        plan.events.append(Event(EventType.NORMAL, Reason.SUSPENDED,
                                 f"suspended{f' by {cause}' if cause else ''}; "
                                 f"stopping {len(ctx.live)} pod(s)"))
    record = out.record(attempt)
    if attempt == 0 or (record is not None and record.end_time):
        said = (record.message if record is not None and record.reason == Reason.SUSPENDED
                else None)
        out.phase(api.Phase.SUSPENDED, Reason.SUSPENDED,
                  said or f"suspended by {cause or 'spec.suspend'}")
        return plan
    stopping = [p for p in ctx.pods if p.attempt == attempt and not p.terminated]
    if stopping:
        plan.case = Case.SUSPEND_WAITING
        out.phase(api.Phase.SUSPENDED, Reason.SUSPENDING,
                  f"suspending: waiting for {len(stopping)} pod(s) of attempt {attempt} to save "
                  "a checkpoint and stop")
        plan.requeue_after = DELETED_POD_RECHECK_SECONDS
        return plan
    text = _check_checkpoint(ctx, plan, f" by {cause}" if cause else "")
    plan.case = Case.SUSPEND_CHECKED
    out.phase(api.Phase.SUSPENDED, Reason.SUSPENDED, text)
    return plan


def _check_checkpoint(ctx: Ctx, plan: Plan, by: str) -> str:
    """Every pod of the attempt is gone: close its record, confirming (or denying) that the
    newest verified checkpoint is at its last step. Returns what the status says; `by`
    names who suspended it, when not spec.suspend."""
    out, attempt = ctx.out, ctx.attempt
    last = out.last_step(attempt)
    stepped = (progress := out.own_progress(attempt)) is not None \
        and progress.last_step_time is not None
    latest = out.read.checkpoint.latest if out.read.checkpoint else None
    saved = latest.step if latest is not None else None
    if not stepped or last is None:
        text = f"attempt {attempt} suspended{by} before its first step"
        out.end_attempt(Reason.SUSPENDED, text)
    elif saved == last:
        text = (f"attempt {attempt} suspended{by} at step {last}; checkpoint-{last} verified, "
                "resuming loses no step")
        out.end_attempt(Reason.SUSPENDED, text)
        out.condition(ConditionType.SUSPEND_CHECKPOINT_SAVED, True, Reason.CHECKPOINT_VERIFIED,
                      text)
        plan.events.append(Event(EventType.NORMAL, Reason.SUSPEND_CHECKPOINT_SAVED, text))
    else:
        lost = last - (saved or 0)
        text = (f"attempt {attempt} suspended{by} at step {last} but its checkpoint was not saved "
                f"(newest verified checkpoint: {f'step {saved}' if saved is not None else 'none'}"
                f"); resuming loses {lost} step(s)")
        out.end_attempt(Reason.SUSPENDED, text)
        out.condition(ConditionType.SUSPEND_CHECKPOINT_SAVED, False, Reason.CHECKPOINT_MISSING,
                      text, news=True)
        plan.events.append(Event(EventType.WARNING, Reason.SUSPEND_CHECKPOINT_FAILED, text))
    return text


def resume(ctx: Ctx) -> Plan:
    """Suspended and no longer asked to: once every old pod is gone, the next attempt."""
    waiting = ctx.wait_for_old_pods(Case.RESUME_WAITING)
    if waiting is not None:
        return waiting
    attempt = ctx.attempt + 1
    return pending.start_attempt(
        ctx, attempt, ctx.ensure, Case.RESUME,
        Event(EventType.NORMAL, Reason.RESUMED,
              f"resumed; created {ctx.spec.resources.nodes} pod(s) for attempt {attempt}"))
