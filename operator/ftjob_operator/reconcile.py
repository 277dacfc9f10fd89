"""Pure: decide(job, observed, now) -> Plan. The whole state machine, no I/O.

Every decision is derived from the job's status and the pods as seen, so the operator can
be restarted at any moment (mid-create, mid-restart) and converge: repeating a decision
on a stale view creates nothing twice (creates are create-if-absent) and writes the same
status values again. Each case has a name (`Plan.case`) that the tests table against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pydantic

from . import api, contract, naming, validation
from .observe import (Failure, Observed, PodView, Refusal, classify, parse_time,
                      success_summary)
from .plan import (Action, Case, CreatePods, DeleteJob, DeletePods, EnsureJobObjects, Event,
                   JobState, Plan)
from .problems import errors
from .status import StatusBuilder, condition_of, read_status, rfc3339

# Spec fields that take effect while a job runs; edits to any other field are ignored
# (the job keeps running the spec in its ConfigMap) and reported in a condition.
MUTABLE_FIELDS = ("suspend", "restartPolicy", "activeDeadlineSeconds", "ttlSecondsAfterFinished",
                  "cleanPodPolicy")

# How often to look again at a pod someone else deleted (pod events wake the loop sooner).
DELETED_POD_RECHECK_SECONDS = 5.0


# --------------------------------------------------------------------------- helpers


def effective_spec(current: dict[str, Any], started: dict[str, Any] | None) -> dict[str, Any]:
    """The started spec with the mutable fields taken from the current one."""
    if started is None:
        return dict(current)
    spec = {k: v for k, v in started.items() if k not in MUTABLE_FIELDS}
    spec.update({k: current[k] for k in MUTABLE_FIELDS if k in current})
    return spec


def ignored_changes(current: dict[str, Any], started: dict[str, Any] | None) -> list[str]:
    """Top-level spec fields edited after the start (they do not take effect)."""
    if started is None:
        return []
    keys = (set(current) | set(started)) - set(MUTABLE_FIELDS)
    return sorted(k for k in keys if current.get(k) != started.get(k))


def ignored_changes_message(changed: list[str]) -> str:
    """What the SpecChangeIgnored condition (and the admission warning) says."""
    return (f"spec fields {', '.join(changed)} changed after the job started; the job keeps "
            f"running the spec it started with (only {', '.join(MUTABLE_FIELDS)} take effect)")


def restart_delay(backoff: int, max_backoff: int, restarts_so_far: int) -> float:
    """Exponential backoff: `backoff`, then doubled per earlier restart, capped."""
    if backoff <= 0:
        return 0.0
    return float(min(backoff * 2 ** max(restarts_so_far - 1, 0), max_backoff))


def _seconds_until(moment: datetime, now: datetime) -> float:
    return max((moment - now).total_seconds(), 0.0)


def _min_requeue(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


# --------------------------------------------------------------------------- decide


def decide(job: JobState, observed: Observed, now: datetime) -> Plan:
    status = job.status
    phase = status.get("phase")
    pods = [p for p in observed.pods if p.owner_uid in (None, job.uid)]
    out = StatusBuilder(job, now)

    if phase in api.FINISHED_PHASES:
        return _finished(job, pods, out, now)

    started = observed.started_spec
    if started is None and out.read.attempt == 0 and not pods:
        problems = errors(validation.validate_spec(job.spec))
        if problems:
            return _invalid(job, out, "; ".join(str(p) for p in problems))

    raw_spec = effective_spec(job.spec, started)
    try:
        spec = api.parse_spec(raw_spec)
    except pydantic.ValidationError as exc:  # only a spec edited to nonsense in a mutable field
        return _invalid(job, out, str(exc).splitlines()[0])

    plan = _decide_phase(job, spec, raw_spec, pods, observed, out, now)
    changed = ignored_changes(job.spec, started)
    previous = condition_of(status, "SpecChangeIgnored")
    if changed:
        text = ignored_changes_message(changed)
        out.condition("SpecChangeIgnored", True, "SpecChangeIgnored", text)
        if previous is None or previous.get("status") != "True" or previous.get("message") != text:
            plan.events.append(Event("Warning", "SpecChangeIgnored", text))
    else:
        out.condition("SpecChangeIgnored", False, "SpecMatches", "")
    _announce_trials(status, out, plan)
    plan.status = out.patch()
    return plan


def _announce_trials(status: dict[str, Any], out: StatusBuilder, plan: Plan) -> None:
    """An event each time the trainer's status.search shows another finished trial. The
    `SearchProgress` condition remembers what was announced, so an operator restart does not
    announce it again."""
    text = search_message(status.get("search"))
    if text is None:
        return
    previous = condition_of(status, "SearchProgress")
    if previous is not None and previous.get("message") == text:
        return
    out.condition("SearchProgress", True, "TrialFinished", text)
    plan.events.append(Event("Normal", "TrialFinished", text))


def search_message(search: Any) -> str | None:
    """`2/4 trials finished; best trial 1: 0.689` from status.search, or None before the
    first finished trial (pure)."""
    if not isinstance(search, dict) or not search.get("trialsCompleted"):
        return None
    text = f"{search['trialsCompleted']}/{search.get('trialsTotal')} trials finished"
    if search.get("bestTrial") is not None and isinstance(search.get("bestValue"), (int, float)):
        text += f"; best trial {search['bestTrial']}: {search['bestValue']:.4g}"
    return text


def _invalid(job: JobState, out: StatusBuilder, message: str) -> Plan:
    out.phase(api.Phase.FAILED, "InvalidSpec", message)
    out.condition("InvalidSpec", True, "InvalidSpec", message)
    out.set(completionTime=job.status.get("completionTime") or rfc3339(out.now))
    plan = Plan(Case.INVALID_SPEC)
    if job.status.get("phase") != api.Phase.FAILED.value:
        plan.events.append(Event("Warning", "InvalidSpec", message))
    plan.status = out.patch()
    return plan


def _finished(job: JobState, pods: list[PodView], out: StatusBuilder, now: datetime) -> Plan:
    plan = Plan(Case.FINISHED)
    # A failed job leaves no rank running (a peer may still wait on a dead rendezvous);
    # terminated pods stay for their logs.
    alive = tuple(p.name for p in pods if not p.terminated and not p.deleting)
    if alive:
        plan.actions.append(DeletePods(alive))
    ttl = job.spec.get("ttlSecondsAfterFinished")
    done = parse_time(job.status.get("completionTime"))
    if isinstance(ttl, int) and done is not None:
        expiry = done + timedelta(seconds=ttl)
        if now >= expiry:
            plan.case = Case.TTL_EXPIRED
            plan.actions.append(DeleteJob())
            plan.events.append(Event("Normal", "Deleted",
                                     f"deleted {ttl}s after it finished (ttlSecondsAfterFinished)"))
        else:
            plan.requeue_after = _seconds_until(expiry, now)
    plan.status = {}  # a finished job's status is final; observedGeneration stays as it ended
    return plan


@dataclass
class _Ctx:
    """What every step of one decision about a started job reads."""

    job: JobState
    spec: api.FineTuneJobSpec
    raw_spec: dict[str, Any]
    pods: list[PodView]  # this job's pods, all attempts
    live: list[PodView]  # ...of them not being deleted
    attempt: int  # the newest attempt (status or pods)
    ensure: bool  # the job's objects (ConfigMap...) may not exist yet
    out: StatusBuilder
    now: datetime
    deadline_wait: float | None  # seconds until activeDeadlineSeconds, if set
    refusal: Refusal | None = None  # the API server refuses to create the pods

    @property
    def phase(self) -> str | None:
        return self.job.status.get("phase")

    def plan(self, case: Case) -> Plan:
        return Plan(case, requeue_after=self.deadline_wait)


def _start_attempt(ctx: _Ctx, attempt: int, ensure: bool, case: Case, event: Event
                   ) -> Plan:
    plan = ctx.plan(case)
    if ensure:
        plan.actions.append(EnsureJobObjects(ctx.raw_spec))
    plan.actions.append(CreatePods(attempt, tuple(range(ctx.spec.resources.nodes)), ctx.raw_spec))
    ctx.out.set(attempt=attempt)
    ctx.out.begin_attempt(attempt)
    if not ctx.job.status.get("startTime"):
        ctx.out.set(startTime=rfc3339(ctx.now))
    ctx.out.phase(api.Phase.PENDING, "PodsCreated", _pending_message(attempt, ctx.spec))
    plan.events.append(event)
    return plan


def _decide_phase(job: JobState, spec: api.FineTuneJobSpec, raw_spec: dict[str, Any],
                  pods: list[PodView], observed: Observed, out: StatusBuilder, now: datetime) -> Plan:
    status = out.read
    phase = job.status.get("phase")
    recorded = status.attempt
    attempt = max([recorded, *(p.attempt for p in pods)])
    out.attempt = attempt
    nodes = spec.resources.nodes

    # -- running longer than activeDeadlineSeconds
    deadline_s = spec.active_deadline_seconds
    started_at = parse_time(status.start_time)
    deadline_wait = None
    if deadline_s is not None and started_at is not None and not spec.suspend:
        # startTime has whole seconds, rounded down: never cut a job short because of it.
        deadline = started_at + timedelta(seconds=deadline_s + 1)
        if now >= deadline:
            return _fail(job, pods, out, "DeadlineExceeded",
                         f"ran longer than activeDeadlineSeconds ({deadline_s}s)",
                         Case.DEADLINE_EXCEEDED)
        deadline_wait = _seconds_until(deadline, now)

    ctx = _Ctx(job, spec, raw_spec, pods, [p for p in pods if not p.deleting], attempt,
               observed.started_spec is None, out, now, deadline_wait, observed.refusal)

    # -- suspended by the user (or a queue): stop every pod; the trainer checkpoints on SIGTERM
    if spec.suspend:
        return _suspend(ctx)

    # -- a new attempt is due: never started, resumed after suspend, or restarting
    if attempt == 0:
        return _start_attempt(ctx, 1, True, Case.START,
                              Event("Normal", "Started", f"created {nodes} pod(s) for attempt 1"))

    waiting_for_new = phase in (api.Phase.SUSPENDED.value, api.Phase.RESTARTING.value)
    if waiting_for_new and attempt == recorded:
        return _await_new_attempt(ctx)

    # -- an attempt is in flight (Pending/Running, or adopted after a crash mid-create)
    return _active_attempt(ctx)


def _suspend(ctx: _Ctx) -> Plan:
    """Stop the pods, then say whether the stop saved a verified checkpoint at the last step
    (the trainer saves on SIGTERM and reports the checkpoint once it verified it)."""
    out, attempt = ctx.out, ctx.attempt
    plan = ctx.plan(Case.SUSPEND)
    plan.requeue_after = None
    if ctx.live:
        plan.actions.append(DeletePods(tuple(p.name for p in ctx.live)))
    if ctx.phase != api.Phase.SUSPENDED.value:
        plan.events.append(Event("Normal", "Suspended",
                                 f"suspended; stopping {len(ctx.live)} pod(s)"))
    record = out.record(attempt) or {}
    if attempt == 0 or record.get("endTime"):
        said = record.get("message") if record.get("reason") == "Suspended" else None
        out.phase(api.Phase.SUSPENDED, "Suspended", said or "suspended by spec.suspend")
        return plan
    stopping = [p for p in ctx.pods if p.attempt == attempt and not p.terminated]
    if stopping:
        plan.case = Case.SUSPEND_WAITING
        out.phase(api.Phase.SUSPENDED, "Suspending",
                  f"suspending: waiting for {len(stopping)} pod(s) of attempt {attempt} to save "
                  "a checkpoint and stop")
        plan.requeue_after = DELETED_POD_RECHECK_SECONDS
        return plan
    # Every pod of the attempt is gone: confirm (or deny) the checkpoint.
    last = out.last_step(attempt)
    stepped = (progress := out.own_progress(attempt)) is not None \
        and progress.last_step_time is not None
    latest = out.read.checkpoint.latest if out.read.checkpoint else None
    saved = latest.step if latest is not None else None
    if not stepped or last is None:
        text = f"attempt {attempt} suspended before its first step"
        out.end_attempt("Suspended", text)
    elif saved == last:
        text = (f"attempt {attempt} suspended at step {last}; checkpoint-{last} verified, "
                "resuming loses no step")
        out.end_attempt("Suspended", text)
        out.condition("SuspendCheckpointSaved", True, "CheckpointVerified", text)
        plan.events.append(Event("Normal", "SuspendCheckpointSaved", text))
    else:
        lost = last - (saved or 0)
        text = (f"attempt {attempt} suspended at step {last} but its checkpoint was not saved "
                f"(newest verified checkpoint: {f'step {saved}' if saved is not None else 'none'}"
                f"); resuming loses {lost} step(s)")
        out.end_attempt("Suspended", text)
        out.condition("SuspendCheckpointSaved", False, "CheckpointMissing", text, news=True)
        plan.events.append(Event("Warning", "SuspendCheckpointFailed", text))
    plan.case = Case.SUSPEND_CHECKED
    out.phase(api.Phase.SUSPENDED, "Suspended", text)
    return plan


def _await_new_attempt(ctx: _Ctx) -> Plan:
    out, attempt, spec = ctx.out, ctx.attempt, ctx.spec
    resuming = ctx.phase == api.Phase.SUSPENDED.value
    if ctx.pods:
        # Gang semantics: the next attempt starts only when every old pod is gone.
        plan = ctx.plan(Case.RESUME_WAITING if resuming
                        else Case.RESTART_WAITING)
        if ctx.live:
            plan.actions.append(DeletePods(tuple(p.name for p in ctx.live)))
        out.set(phase=ctx.phase)
        return plan
    if resuming:
        return _start_attempt(ctx, attempt + 1, ctx.ensure, Case.RESUME,
                              Event("Normal", "Resumed",
                                    f"resumed; created {spec.resources.nodes} pod(s) for "
                                    f"attempt {attempt + 1}"))
    policy = spec.restart_policy
    count = out.read.restarts + out.read.preemptions
    delay = restart_delay(policy.backoff_seconds, policy.max_backoff_seconds, count)
    since = parse_time((condition_of(ctx.job.status, "Restarting") or {})
                       .get("lastTransitionTime")) or ctx.now
    # Condition times have whole seconds: the failure happened up to 1s after `since`.
    due = since + timedelta(seconds=delay + 1) if delay > 0 else since
    if ctx.now < due:
        plan = ctx.plan(Case.BACKING_OFF)
        plan.requeue_after = _min_requeue(_seconds_until(due, ctx.now), ctx.deadline_wait)
        return plan
    return _start_attempt(ctx, attempt + 1, ctx.ensure, Case.RESTART,
                          Event("Normal", "Restarted",
                                f"created {spec.resources.nodes} pod(s) for attempt "
                                f"{attempt + 1}; the trainer resumes from its newest checkpoint"))


def _active_attempt(ctx: _Ctx) -> Plan:
    job, spec, out, now, attempt = ctx.job, ctx.spec, ctx.out, ctx.now, ctx.attempt
    phase = ctx.phase
    nodes = spec.resources.nodes
    out.set(attempt=attempt)
    out.begin_attempt(attempt)
    if not job.status.get("startTime"):
        out.set(startTime=rfc3339(now))
    current = {p.rank: p for p in ctx.pods if p.attempt == attempt and p.rank < nodes}
    leftovers = tuple(p.name for p in ctx.live if p.attempt != attempt or p.rank >= nodes)

    def plan_of(case: Case) -> Plan:
        plan = ctx.plan(case)
        if leftovers:
            plan.actions.append(DeletePods(leftovers))
        return plan

    # -- success: rank 0 exited 0 (its summary is the job's result) and no rank still runs
    rank0 = current.get(0)
    if rank0 is not None and rank0.phase == "Succeeded":
        if all(p.terminated for p in current.values()):
            return _succeed(job, rank0, ctx.pods, out)
        return plan_of(Case.RANK0_SUCCEEDED_WAITING)

    # -- failures: one dead rank breaks the rendezvous of all, so the gang restarts
    failures = [f for p in sorted(current.values(), key=lambda p: p.rank)
                if (f := classify(p)) is not None]
    was_running = phase == api.Phase.RUNNING.value
    missing = [r for r in range(nodes) if r not in current]
    deleted = [p for p in current.values() if p.deleting and not p.terminated
               and classify(p) is None]
    if was_running and deleted and not failures:
        # Deleted by someone else (kubectl delete, a drain, a preemption) and still stopping:
        # the trainer checkpoints on SIGTERM and exits Preempted, which makes the restart
        # free. Judge by that exit code rather than by the deletion itself.
        plan = plan_of(Case.RANK_DELETED_WAITING)
        out.phase(api.Phase.RUNNING, "PodsStopping",
                  f"pod(s) {', '.join(p.name for p in deleted)} deleted; waiting for them to "
                  "checkpoint and stop")
        plan.requeue_after = _min_requeue(ctx.deadline_wait, DELETED_POD_RECHECK_SECONDS)
        return plan
    if was_running:
        failures += [Failure("retryable", "PodDeleted", "pod disappeared while running",
                             pod=naming.pod(job.name, attempt, r), rank=r) for r in missing]
        failures += [Failure("retryable", "PodDeleted", "pod deleted while running",
                             pod=p.name, rank=p.rank, node=p.node) for p in deleted]
    if failures:
        return _on_failure(ctx, failures)

    # -- pods stuck Pending (unschedulable, image pull) past the limit
    limit = spec.restart_policy.pending_timeout_seconds
    pending_wait = None
    for pod in current.values():
        if pod.phase == "Pending" and pod.created_at is not None:
            stuck_until = pod.created_at + timedelta(seconds=limit)
            if now >= stuck_until:
                return _fail(job, ctx.pods, out, "PendingTimeout",
                             f"pod {pod.name} stayed Pending longer than "
                             f"pendingTimeoutSeconds ({limit}s)"
                             + (f": {pod.pod_message}" if pod.pod_message else ""),
                             Case.PENDING_TIMEOUT)
            pending_wait = _min_requeue(pending_wait, _seconds_until(stuck_until, now))

    # -- the API server refuses to create the pods (a missing RuntimeClass, a ResourceQuota):
    # the same allowance as a pod stuck Pending, counted from the first refusal
    refusal = ctx.refusal if missing else None
    if refusal is not None:
        refused_until = refusal.since + timedelta(seconds=limit)
        if now >= refused_until:
            return _fail(job, ctx.pods, out, "PodCreationRejected",
                         f"the API server refused to create the pods for longer than "
                         f"pendingTimeoutSeconds ({limit}s): {refusal.message}",
                         Case.CREATION_REJECTED)
        pending_wait = _min_requeue(pending_wait, _seconds_until(refused_until, now))
        refused = (f"attempt {attempt}: the API server has refused to create the pods since "
                   f"{rfc3339(refusal.since)} (the job fails after pendingTimeoutSeconds, "
                   f"{limit}s): {refusal.message}")
        out.condition("PodCreationRejected", True, "ApiRejected", refused)
    else:
        out.condition("PodCreationRejected", False, "PodsCreated")

    if missing:
        # Created after the status said so (crash mid-create) or not yet seen: create-if-absent.
        plan = plan_of(Case.CREATE_MISSING)
        if ctx.ensure:
            plan.actions.append(EnsureJobObjects(ctx.raw_spec))
        plan.actions.append(CreatePods(attempt, tuple(missing), ctx.raw_spec))
        if refusal is not None:
            out.phase(api.Phase.PENDING, "PodCreationRejected", refused)
        else:
            out.phase(api.Phase.PENDING, "PodsCreated", _pending_message(attempt, spec))
        if phase not in (api.Phase.PENDING.value, None):
            plan.events.append(Event("Normal", "Started",
                                     f"created {nodes} pod(s) for attempt {attempt}"))
        plan.requeue_after = _min_requeue(ctx.deadline_wait, pending_wait)
        return plan

    if all(p.phase in ("Running", "Succeeded") for p in current.values()):
        if phase == api.Phase.RUNNING.value and all(p.phase == "Running"
                                                    for p in current.values()):
            stall = _stall(ctx)
            if isinstance(stall, Plan):
                return stall
        else:
            stall = None
        plan = plan_of(Case.RUNNING)
        out.phase(api.Phase.RUNNING, "AllPodsRunning",
                  f"attempt {attempt}: {nodes} pod(s) running")
        out.note_first_step(attempt)
        if phase != api.Phase.RUNNING.value:
            plan.events.append(Event("Normal", "Running",
                                     f"all {nodes} pod(s) of attempt {attempt} are running"))
        plan.requeue_after = _min_requeue(ctx.deadline_wait, stall)
        return plan

    plan = plan_of(Case.PENDING)
    out.phase(api.Phase.PENDING, "PodsCreated", _pending_message(attempt, spec))
    plan.requeue_after = _min_requeue(ctx.deadline_wait, pending_wait)
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


def _stall(ctx: _Ctx) -> Plan | float | None:
    """A gang restart (reason Stalled) when the running attempt stopped stepping for longer
    than its allowance; else the seconds until it would be due."""
    out, attempt = ctx.out, ctx.attempt
    progress = out.own_progress(attempt)
    running = condition_of(ctx.job.status, "Running") or {}
    running_since = (parse_time(running.get("lastTransitionTime"))
                     if running.get("status") == "True" else None)
    if progress is None and _legacy_report(out.read.progress, running_since):
        return None
    allowance = stall_allowance(ctx.spec.restart_policy, progress, running_since)
    if allowance is None:
        return None
    since, limit, setting = allowance
    # Whole seconds on both times: one second more never restarts a healthy job early.
    due = since + timedelta(seconds=limit + 1)
    if ctx.now < due:
        return _seconds_until(due, ctx.now)
    silent = int((ctx.now - since).total_seconds())
    step = progress.global_step if progress is not None else None
    if setting == "startupTimeoutSeconds":
        text = (f"attempt {attempt} took no training step in {silent}s after its pods started "
                f"({setting} {limit}s)")
    else:
        doing = f" while {progress.activity}" if progress and progress.activity else ""
        quiet = int((ctx.now - parse_time(progress.last_step_time)).total_seconds()) \
            if progress is not None and progress.last_step_time else silent
        text = (f"no training step since step {step} for {quiet}s{doing} "
                f"({setting} {limit}s)")
    return _restart(ctx, "retryable", "Stalled", "Stalled", text)


def _pending_message(attempt: int, spec: api.FineTuneJobSpec) -> str:
    # The same text from creation until all pods run: no status write per scheduled pod.
    return f"attempt {attempt}: waiting for {spec.resources.nodes} pod(s) to run"


def _pick(failures: list[Failure]) -> Failure:
    """The root cause among failed ranks: the most significant kind (contract.py) first."""
    return min(failures, key=lambda f: contract.kind_significance(f.kind))


def _history_reason(failure: Failure) -> str:
    if failure.kind == "preempted":
        return "Preempted"
    return "Deleted" if failure.reason == "PodDeleted" else "Failed"


def _on_failure(ctx: _Ctx, failures: list[Failure]) -> Plan:
    cause = _pick(failures)
    text = cause.describe() + (f" on node {cause.node}" if cause.node else "")
    if cause.kind == "permanent":
        return _fail(ctx.job, ctx.pods, ctx.out, cause.reason, cause.describe(),
                     Case.PERMANENT_FAILURE, history_text=text)
    return _restart(ctx, cause.kind, cause.reason, _history_reason(cause), cause.describe(),
                    history_text=text)


def _restart(ctx: _Ctx, kind: str, reason: str, history_reason: str, text: str,
             history_text: str | None = None) -> Plan:
    """Stop the whole gang for the next attempt, or fail once the budget is spent
    (preemptions are free)."""
    out, spec = ctx.out, ctx.spec
    restarts, preemptions = out.read.restarts, out.read.preemptions
    limit = spec.restart_policy.max_restarts
    if kind == "retryable" and restarts >= limit:
        out.end_attempt(history_reason, history_text or text, resumes=False)
        return _fail(ctx.job, ctx.pods, out, "RestartBudgetExhausted",
                     f"restart budget exhausted ({limit} restart(s)); last failure: {text}",
                     Case.BUDGET_EXHAUSTED)
    live = tuple(p.name for p in ctx.pods if not p.deleting)
    if kind == "preempted":
        preemptions += 1
        case, event_reason = Case.PREEMPTED_RESTART, "Preempted"
        out.set(preemptions=preemptions)
    else:
        restarts += 1
        case, event_reason = (Case.STALLED_RESTART, "Stalled") if reason == "Stalled" \
            else (Case.GANG_RESTART, "GangRestart")
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
    plan.events.append(Event("Warning", event_reason, message))
    plan.requeue_after = delay if delay > 0 else None
    return plan


def _fail(job: JobState, pods: list[PodView], out: StatusBuilder, reason: str, message: str,
          case: Case, history_text: str | None = None) -> Plan:
    plan = Plan(case)
    _clean_up_pods(job, pods, plan)
    out.end_attempt("Failed", history_text or message, resumes=False)
    out.phase(api.Phase.FAILED, reason, message)
    out.set(completionTime=rfc3339(out.now))
    plan.events.append(Event("Warning", reason, message))
    ttl = job.spec.get("ttlSecondsAfterFinished")
    if isinstance(ttl, int):
        plan.requeue_after = float(ttl)
    return plan


def _clean_up_pods(job: JobState, pods: list[PodView], plan: Plan) -> None:
    """Delete the pods `spec.cleanPodPolicy` names once the job has finished."""
    policy = job.spec.get("cleanPodPolicy", "Running")
    if policy == "None":
        return
    doomed = tuple(p.name for p in pods if not p.deleting
                   and (policy == "All" or not p.terminated))
    if doomed:
        plan.actions.append(DeletePods(doomed))


def _succeed(job: JobState, rank0: PodView, pods: list[PodView], out: StatusBuilder) -> Plan:
    plan = Plan(Case.SUCCEEDED)
    _clean_up_pods(job, pods, plan)
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
    out.end_attempt("Succeeded", message, resumes=False)
    out.phase(api.Phase.SUCCEEDED, "Completed", message)
    out.set(completionTime=rfc3339(out.now))
    if summary["metrics"]:
        metrics = {k: v for k, v in summary["metrics"].items() if math.isfinite(v)}
        out.set(metrics=metrics)
    plan.events.append(Event("Normal", "Succeeded", message))
    ttl = job.spec.get("ttlSecondsAfterFinished")
    if isinstance(ttl, int):
        plan.requeue_after = float(ttl)
    return plan
