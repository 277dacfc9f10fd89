"""A running attempt, and the one failure no exit code reports: a rank that hangs (an NCCL
deadlock, a dead GPU, stuck storage) keeps its pod Running. While every pod runs, the
silence since the trainer's last step (status.progress) is compared with an allowance from
spec.restartPolicy; past it, the gang restarts (reason Stalled) through the failure policy."""

from __future__ import annotations

from datetime import datetime, timedelta

from ftjob_api import api

from ..observe import parse_time
from ..plan import Case, Event, Plan
from ..reasons import ConditionType, EventType, Reason
from ..status import condition_of
from . import failure
from .context import Ctx, min_requeue, seconds_until


def running(ctx: Ctx) -> Plan:
    """Every pod of the attempt runs (or, rank 0 aside, has exited 0): Running; while every
    pod of a Running attempt runs, a restart if it stalled."""
    out, attempt, nodes = ctx.out, ctx.attempt, ctx.spec.resources.nodes
    was_running = ctx.phase == api.Phase.RUNNING.value
    stall = None
    if was_running and all(p.phase == "Running" for p in ctx.current.values()):
        stall = _stall(ctx)
        if isinstance(stall, Plan):
            return stall
    plan = ctx.attempt_plan(Case.RUNNING)
    out.phase(api.Phase.RUNNING, Reason.ALL_PODS_RUNNING,
              f"attempt {attempt}: {nodes} pod(s) running")
    out.note_first_step(attempt)
    if not was_running:
        plan.events.append(Event(EventType.NORMAL, Reason.RUNNING,
                                 f"all {nodes} pod(s) of attempt {attempt} are running"))
    plan.requeue_after = min_requeue(ctx.deadline_wait, stall)
    return plan


def stall_allowance(policy: api.RestartPolicy, progress: api.Progress | None,
                    running_since: datetime | None) -> tuple[datetime, int, str] | None:
    """(silent since, allowed seconds, which setting) for the running attempt; None when
    stall detection is off or nothing can be judged. `progress` is None until the attempt
    reported; the start-up allowance then counts from when all its pods ran."""
    if policy.stall_timeout_seconds <= 0:
        return None
    last_step = parse_time(progress.last_step_time) if progress is not None else None
    if last_step is None:
        if running_since is None or policy.startup_timeout_seconds <= 0:
            return None
        return running_since, policy.startup_timeout_seconds, "startupTimeoutSeconds"
    # Silent since the last step or, if later, since the activity changed (the end of an
    # evaluation does not count against the training allowance).
    changed = parse_time(progress.activity_since) if progress is not None else None
    since = max(last_step, changed) if changed is not None else last_step
    if progress is not None and progress.activity in ("evaluating", "saving"):
        if policy.evaluation_timeout_seconds <= 0:
            return None
        return since, policy.evaluation_timeout_seconds, "evaluationTimeoutSeconds"
    return since, policy.stall_timeout_seconds, "stallTimeoutSeconds"


def _legacy_report(progress: api.Progress | None, running_since: datetime | None) -> bool:
    """status.progress from a trainer that predates stall reporting (no `attempt`, no
    `lastStepTime`), written while the current attempt's pods run.

    Such a trainer (pods made before an operator upgrade, or an older image) reports
    progress but never says which attempt wrote it or when it last stepped, so the running
    attempt cannot be judged: the start-up allowance would count from when its pods ran and
    restart every job older than startupTimeoutSeconds. Stall detection is skipped for it.
    A report written before the attempt's pods all ran (a previous attempt's) says nothing
    about this attempt, which keeps the start-up allowance: a trainer that reports nothing
    at all, new or old, is still restarted when it never gets going."""
    if progress is None or progress.attempt is not None:
        return False
    written = parse_time(progress.updated_at)
    return written is None or running_since is None or written >= running_since


def _stall(ctx: Ctx) -> Plan | float | None:
    """A gang restart (reason Stalled) when the running attempt stopped stepping for longer
    than its allowance; else the seconds until it would be due."""
    out, attempt = ctx.out, ctx.attempt
    progress = out.own_progress(attempt)
    running_cond = condition_of(ctx.job.status, ConditionType.RUNNING) or {}
    running_since = (parse_time(running_cond.get("lastTransitionTime"))
                     if running_cond.get("status") == "True" else None)
    if progress is None and _legacy_report(out.read.progress, running_since):
        return None
    allowance = stall_allowance(ctx.spec.restart_policy, progress, running_since)
    if allowance is None:
        return None
    since, limit, setting = allowance
    # Whole seconds on both times: one second more never restarts a healthy job early.
    due = since + timedelta(seconds=limit + 1)
    if ctx.now < due:
        return seconds_until(due, ctx.now)
    return failure.restart(ctx, "retryable", Reason.STALLED, Reason.STALLED,
                           _stall_message(ctx, progress, since, limit, setting))


def _stall_message(ctx: Ctx, progress: api.Progress | None, since: datetime, limit: int,
                   setting: str) -> str:
    silent = int((ctx.now - since).total_seconds())
    if setting == "startupTimeoutSeconds":
        return (f"attempt {ctx.attempt} took no training step in {silent}s after its pods "
                f"started ({setting} {limit}s)")
    step = progress.global_step if progress is not None else None
    doing = f" while {progress.activity}" if progress and progress.activity else ""
    quiet = int((ctx.now - parse_time(progress.last_step_time)).total_seconds()) \
        if progress is not None and progress.last_step_time else silent
    return f"no training step since step {step} for {quiet}s{doing} ({setting} {limit}s)"
