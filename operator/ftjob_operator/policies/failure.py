"""Failed, preempted and deleted ranks: one dead rank breaks the rendezvous of all, so the
whole gang restarts (after a backoff, within spec.restartPolicy.maxRestarts; preemptions
are free), or the job fails (a permanent failure, the budget spent)."""

from __future__ import annotations

from datetime import timedelta

from ftjob_api import api, contract, naming

from ..observe import PodFailure, classify_pod_failure, parse_time
from ..plan import Case, DeletePods, Event, Plan
from ..reasons import ConditionType, EventType, Reason
from ..status import condition_of
from . import finish, pending
from .context import DELETED_POD_RECHECK_SECONDS, Ctx, min_requeue, seconds_until

# A restart's case and Event reason, by the reason it restarts for; any other retryable
# reason is a GangRestart (a preemption, whatever its reason, a free PREEMPTED_RESTART).
RESTART_CASES: dict[str, tuple[Case, str]] = {
    Reason.STALLED: (Case.STALLED_RESTART, Reason.STALLED),
}


def restart_delay(backoff: int, max_backoff: int, restarts_so_far: int) -> float:
    """Exponential backoff: `backoff`, then doubled per earlier restart, capped."""
    if backoff <= 0:
        return 0.0
    return float(min(backoff * 2 ** max(restarts_so_far - 1, 0), max_backoff))


def rank_failures(ctx: Ctx) -> Plan | None:
    """A restart or a failure when a rank of the current attempt failed, or (once it ran)
    vanished or was deleted; None when every rank is well."""
    current = ctx.current
    failures = [f for p in sorted(current.values(), key=lambda p: p.rank)
                if (f := classify_pod_failure(p)) is not None]
    was_running = ctx.phase == api.Phase.RUNNING.value
    deleted = [p for p in current.values() if p.deleting and not p.terminated
               and classify_pod_failure(p) is None]
    if was_running and deleted and not failures:
        # Deleted by someone else (kubectl delete, a drain, a preemption) and still stopping:
        # the trainer checkpoints on SIGTERM and exits Preempted, which makes the restart
        # free. Judge by that exit code rather than by the deletion itself.
        plan = ctx.attempt_plan(Case.RANK_DELETED_WAITING)
        ctx.out.phase(api.Phase.RUNNING, Reason.PODS_STOPPING,
                      f"pod(s) {', '.join(p.name for p in deleted)} deleted; waiting for them "
                      "to checkpoint and stop")
        plan.requeue_after = min_requeue(ctx.deadline_wait, DELETED_POD_RECHECK_SECONDS)
        return plan
    if was_running:
        failures += [PodFailure("retryable", Reason.POD_DELETED, "pod disappeared while running",
                                pod=naming.pod(ctx.job.name, ctx.attempt, r), rank=r)
                     for r in ctx.missing]
        failures += [PodFailure("retryable", Reason.POD_DELETED, "pod deleted while running",
                                pod=p.name, rank=p.rank, node=p.node) for p in deleted]
    return _on_failure(ctx, failures) if failures else None


def _pick(failures: list[PodFailure]) -> PodFailure:
    """The root cause among failed ranks: the most significant kind (contract.py) first."""
    return min(failures, key=lambda f: contract.kind_significance(f.kind))


def _history_reason(failure: PodFailure) -> str:
    """How the attempt record (status.attempts) says the attempt ended."""
    if failure.kind == "preempted":
        return Reason.PREEMPTED
    return Reason.DELETED if failure.reason == Reason.POD_DELETED else Reason.FAILED


def _on_failure(ctx: Ctx, failures: list[PodFailure]) -> Plan:
    cause = _pick(failures)
    text = cause.describe() + (f" on node {cause.node}" if cause.node else "")
    if cause.kind == "permanent":
        return finish.fail(ctx, cause.reason, cause.describe(), Case.PERMANENT_FAILURE,
                           history_text=text)
    return restart(ctx, cause.kind, cause.reason, _history_reason(cause), cause.describe(),
                   history_text=text)


def restart(ctx: Ctx, kind: str, reason: str, history_reason: str, text: str,
            history_text: str | None = None) -> Plan:
    """Stop the whole gang for the next attempt, or fail once the budget is spent
    (preemptions are free)."""
    out, spec = ctx.out, ctx.spec
    restarts, preemptions = out.read.restarts, out.read.preemptions
    limit = spec.restart_policy.max_restarts
    if kind == "retryable" and restarts >= limit:
        out.end_attempt(history_reason, history_text or text, resumes=False)
        return finish.fail(ctx, Reason.RESTART_BUDGET_EXHAUSTED,
                           f"restart budget exhausted ({limit} restart(s)); last failure: "
                           f"{text}", Case.BUDGET_EXHAUSTED)
    live = tuple(p.name for p in ctx.pods if not p.deleting)
    if kind == "preempted":
        preemptions += 1
        case, event_reason = Case.PREEMPTED_RESTART, Reason.PREEMPTED
        out.set(preemptions=preemptions)
    else:
        restarts += 1
        case, event_reason = RESTART_CASES.get(reason, (Case.GANG_RESTART, Reason.GANG_RESTART))
        out.set(restarts=restarts)
    out.end_attempt(history_reason, history_text or text)
    plan = Plan(case)
    if live:
        plan.actions.append(DeletePods(live))
    delay = restart_delay(spec.restart_policy.backoff_seconds,
                          spec.restart_policy.max_backoff_seconds, restarts + preemptions)
    message = (f"{text}; restarting all {spec.resources.nodes} pod(s) in "
               f"{delay:g}s ({restarts}/{limit} restarts used, {preemptions} preemption(s))")
    out.phase(api.Phase.RESTARTING, reason, message)
    plan.events.append(Event(EventType.WARNING, event_reason, message))
    plan.requeue_after = delay if delay > 0 else None
    return plan


def next_attempt(ctx: Ctx) -> Plan:
    """Restarting: once every old pod is gone and the backoff has passed, the next attempt
    (the trainer resumes from its newest checkpoint)."""
    waiting = ctx.wait_for_old_pods(Case.RESTART_WAITING)
    if waiting is not None:
        return waiting
    policy, out = ctx.spec.restart_policy, ctx.out
    count = out.read.restarts + out.read.preemptions
    delay = restart_delay(policy.backoff_seconds, policy.max_backoff_seconds, count)
    since = parse_time((condition_of(ctx.job.status, ConditionType.RESTARTING) or {})
                       .get("lastTransitionTime")) or ctx.now
    # Condition times have whole seconds: the failure happened up to 1s after `since`.
    due = since + timedelta(seconds=delay + 1) if delay > 0 else since
    if ctx.now < due:
        plan = ctx.plan(Case.BACKING_OFF)
        plan.requeue_after = min_requeue(seconds_until(due, ctx.now), ctx.deadline_wait)
        return plan
    attempt = ctx.attempt + 1
    return pending.start_attempt(
        ctx, attempt, ctx.ensure, Case.RESTART,
        Event(EventType.NORMAL, Reason.RESTARTED,
              f"created {ctx.spec.resources.nodes} pod(s) for attempt {attempt}; the trainer "
              "resumes from its newest checkpoint"))
