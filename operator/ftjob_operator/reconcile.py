"""Pure: decide(job, observed, now) -> Plan. The whole state machine, no I/O.

Every decision is derived from the job's status and the pods as seen, so the operator can
be restarted at any moment (mid-create, mid-restart) and converge: repeating a decision
on a stale view creates nothing twice (creates are create-if-absent) and writes the same
status values again. Each case has a name (`Plan.case`) that the tests table against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pydantic

from . import api, naming, validation
from .observe import Failure, Observed, PodView, classify, parse_time, success_summary
from .problems import errors

# Spec fields that take effect while a job runs; edits to any other field are ignored
# (the job keeps running the spec in its ConfigMap) and reported in a condition.
MUTABLE_FIELDS = ("suspend", "restartPolicy", "activeDeadlineSeconds", "ttlSecondsAfterFinished",
                  "cleanPodPolicy")

# Conditions that mirror the phase; at most one of them is True.
# How often to look again at a pod someone else deleted (pod events wake the loop sooner).
DELETED_POD_RECHECK_SECONDS = 5.0
PHASE_CONDITIONS = ("Running", "Restarting", "Suspended", "Succeeded", "Failed")


# --------------------------------------------------------------------------- inputs/outputs


@dataclass(frozen=True)
class JobState:
    name: str
    namespace: str
    uid: str
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


@dataclass(frozen=True)
class EnsureJobObjects:
    """ServiceAccount, Role, RoleBinding, Service, ConfigMap and claim (if absent)."""

    spec: dict[str, Any]


@dataclass(frozen=True)
class CreatePods:
    attempt: int
    ranks: tuple[int, ...]
    spec: dict[str, Any]


@dataclass(frozen=True)
class DeletePods:
    names: tuple[str, ...]


@dataclass(frozen=True)
class DeleteJob:
    pass


Action = EnsureJobObjects | CreatePods | DeletePods | DeleteJob


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    case: str
    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # merge patch of changed keys only
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until a timer-based decision is due


# --------------------------------------------------------------------------- helpers


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


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


class _Status:
    """Builds the desired operator-owned status and diffs it against the current one."""

    def __init__(self, job: JobState, now: datetime):
        self.job = job
        self.now = now
        self.current = job.status
        self.desired: dict[str, Any] = {
            "observedGeneration": job.generation,
        }
        self.conditions: list[dict[str, Any]] = [dict(c) for c in job.status.get("conditions") or []]

    def set(self, **values: Any) -> None:
        self.desired.update(values)

    def condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        value = "True" if status else "False"
        for cond in self.conditions:
            if cond.get("type") == type_:
                if cond.get("status") != value:
                    cond["lastTransitionTime"] = rfc3339(self.now)
                cond.update(status=value, reason=reason, message=message,
                            observedGeneration=self.job.generation)
                return
        if not status:
            return  # a False condition that never was True says nothing
        self.conditions.append({"type": type_, "status": value, "reason": reason,
                                "message": message, "lastTransitionTime": rfc3339(self.now),
                                "observedGeneration": self.job.generation})

    def phase(self, phase: api.Phase, reason: str, message: str) -> None:
        self.set(phase=phase.value, message=message)
        for type_ in PHASE_CONDITIONS:
            if type_ == phase.value:
                self.condition(type_, True, reason, message)
            else:
                self.condition(type_, False, reason, "")

    def patch(self) -> dict[str, Any]:
        desired = dict(self.desired)
        desired["conditions"] = self.conditions
        return {k: v for k, v in desired.items() if self.current.get(k) != v}


def _condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


# --------------------------------------------------------------------------- decide


def decide(job: JobState, observed: Observed, now: datetime) -> Plan:
    status = job.status
    phase = status.get("phase")
    pods = [p for p in observed.pods if p.owner_uid in (None, job.uid)]
    out = _Status(job, now)

    if phase in api.FINISHED_PHASES:
        return _finished(job, pods, out, now)

    started = observed.started_spec
    if started is None and int(status.get("attempt") or 0) == 0 and not pods:
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
    previous = _condition(status, "SpecChangeIgnored")
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


def _announce_trials(status: dict[str, Any], out: _Status, plan: Plan) -> None:
    """An event each time the trainer's status.search shows another finished trial. The
    `SearchProgress` condition remembers what was announced, so an operator restart does not
    announce it again."""
    text = search_message(status.get("search"))
    if text is None:
        return
    previous = _condition(status, "SearchProgress")
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


def _invalid(job: JobState, out: _Status, message: str) -> Plan:
    out.phase(api.Phase.FAILED, "InvalidSpec", message)
    out.condition("InvalidSpec", True, "InvalidSpec", message)
    out.set(completionTime=job.status.get("completionTime") or rfc3339(out.now))
    plan = Plan("invalid spec")
    if job.status.get("phase") != api.Phase.FAILED.value:
        plan.events.append(Event("Warning", "InvalidSpec", message))
    plan.status = out.patch()
    return plan


def _finished(job: JobState, pods: list[PodView], out: _Status, now: datetime) -> Plan:
    plan = Plan("finished")
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
            plan.case = "finished, ttl expired"
            plan.actions.append(DeleteJob())
            plan.events.append(Event("Normal", "Deleted",
                                     f"deleted {ttl}s after it finished (ttlSecondsAfterFinished)"))
        else:
            plan.requeue_after = _seconds_until(expiry, now)
    plan.status = {}  # a finished job's status is final; observedGeneration stays as it ended
    return plan


def _start_attempt(job: JobState, spec: api.FineTuneJobSpec, raw_spec: dict[str, Any],
                   attempt: int, out: _Status, ensure: bool, case: str,
                   event: Event) -> Plan:
    plan = Plan(case)
    if ensure:
        plan.actions.append(EnsureJobObjects(raw_spec))
    plan.actions.append(CreatePods(attempt, tuple(range(spec.resources.nodes)), raw_spec))
    out.set(attempt=attempt)
    if not job.status.get("startTime"):
        out.set(startTime=rfc3339(out.now))
    out.phase(api.Phase.PENDING, "PodsCreated", _pending_message(attempt, spec))
    plan.events.append(event)
    return plan


def _decide_phase(job: JobState, spec: api.FineTuneJobSpec, raw_spec: dict[str, Any],
                  pods: list[PodView], observed: Observed, out: _Status, now: datetime) -> Plan:
    status = job.status
    phase = status.get("phase")
    recorded = int(status.get("attempt") or 0)
    attempt = max([recorded, *(p.attempt for p in pods)])
    live = [p for p in pods if not p.deleting]
    ensure = observed.started_spec is None
    nodes = spec.resources.nodes

    # -- suspended by the user: stop every pod (the trainer checkpoints on SIGTERM)
    if spec.suspend:
        plan = Plan("suspend")
        if live:
            plan.actions.append(DeletePods(tuple(p.name for p in live)))
        if phase != api.Phase.SUSPENDED.value:
            plan.events.append(Event("Normal", "Suspended",
                                     f"suspended; stopping {len(live)} pod(s)"))
        out.phase(api.Phase.SUSPENDED, "Suspended", "suspended by spec.suspend")
        return plan

    # -- running longer than activeDeadlineSeconds
    deadline_s = spec.active_deadline_seconds
    started_at = parse_time(status.get("startTime"))
    deadline_wait = None
    if deadline_s is not None and started_at is not None:
        # startTime has whole seconds, rounded down: never cut a job short because of it.
        deadline = started_at + timedelta(seconds=deadline_s + 1)
        if now >= deadline:
            return _fail(job, pods, out, "DeadlineExceeded",
                         f"ran longer than activeDeadlineSeconds ({deadline_s}s)",
                         "deadline exceeded")
        deadline_wait = _seconds_until(deadline, now)

    # -- a new attempt is due: never started, resumed after suspend, or restarting
    if attempt == 0:
        plan = _start_attempt(job, spec, raw_spec, 1, out, True, "start",
                              Event("Normal", "Started", f"created {nodes} pod(s) for attempt 1"))
        plan.requeue_after = deadline_wait
        return plan

    waiting_for_new = phase in (api.Phase.SUSPENDED.value, api.Phase.RESTARTING.value)
    if waiting_for_new and attempt == recorded:
        return _await_new_attempt(job, spec, raw_spec, pods, live, attempt, ensure, out, now,
                                  deadline_wait)

    # -- an attempt is in flight (Pending/Running, or adopted after a crash mid-create)
    return _active_attempt(job, spec, raw_spec, pods, live, attempt, ensure, out, now,
                           deadline_wait)


def _await_new_attempt(job: JobState, spec: api.FineTuneJobSpec, raw_spec: dict[str, Any],
                       pods: list[PodView], live: list[PodView], attempt: int, ensure: bool,
                       out: _Status, now: datetime, deadline_wait: float | None) -> Plan:
    status = job.status
    resuming = status.get("phase") == api.Phase.SUSPENDED.value
    if pods:
        # Gang semantics: the next attempt starts only when every old pod is gone.
        plan = Plan("resume, waiting for pods to go" if resuming
                    else "restart, waiting for pods to go")
        if live:
            plan.actions.append(DeletePods(tuple(p.name for p in live)))
        out.set(phase=status.get("phase"))
        plan.requeue_after = deadline_wait
        return plan
    if resuming:
        plan = _start_attempt(job, spec, raw_spec, attempt + 1, out, ensure, "resume",
                              Event("Normal", "Resumed",
                                    f"resumed; created {spec.resources.nodes} pod(s) for "
                                    f"attempt {attempt + 1}"))
        plan.requeue_after = deadline_wait
        return plan
    policy = spec.restart_policy
    count = int(status.get("restarts") or 0) + int(status.get("preemptions") or 0)
    delay = restart_delay(policy.backoff_seconds, policy.max_backoff_seconds, count)
    since = parse_time((_condition(status, "Restarting") or {}).get("lastTransitionTime")) or now
    # Condition times have whole seconds: the failure happened up to 1s after `since`.
    due = since + timedelta(seconds=delay + 1) if delay > 0 else since
    if now < due:
        plan = Plan("restart, backing off")
        plan.requeue_after = _min_requeue(_seconds_until(due, now), deadline_wait)
        return plan
    plan = _start_attempt(job, spec, raw_spec, attempt + 1, out, ensure, "restart",
                          Event("Normal", "Restarted",
                                f"created {spec.resources.nodes} pod(s) for attempt "
                                f"{attempt + 1}; the trainer resumes from its newest checkpoint"))
    plan.requeue_after = deadline_wait
    return plan


def _active_attempt(job: JobState, spec: api.FineTuneJobSpec, raw_spec: dict[str, Any],
                    pods: list[PodView], live: list[PodView], attempt: int, ensure: bool,
                    out: _Status, now: datetime, deadline_wait: float | None) -> Plan:
    status = job.status
    phase = status.get("phase")
    nodes = spec.resources.nodes
    out.set(attempt=attempt)
    if not status.get("startTime"):
        out.set(startTime=rfc3339(now))
    current = {p.rank: p for p in pods if p.attempt == attempt and p.rank < nodes}
    leftovers = tuple(p.name for p in live if p.attempt != attempt or p.rank >= nodes)

    def plan_of(case: str) -> Plan:
        plan = Plan(case, requeue_after=deadline_wait)
        if leftovers:
            plan.actions.append(DeletePods(leftovers))
        return plan

    # -- success: rank 0 exited 0 (its summary is the job's result) and no rank still runs
    rank0 = current.get(0)
    if rank0 is not None and rank0.phase == "Succeeded":
        if all(p.terminated for p in current.values()):
            return _succeed(job, rank0, pods, out)
        return plan_of("rank 0 succeeded, waiting for the other ranks")

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
        plan = plan_of("rank deleted, waiting for it to stop")
        out.phase(api.Phase.RUNNING, "PodsStopping",
                  f"pod(s) {', '.join(p.name for p in deleted)} deleted; waiting for them to "
                  "checkpoint and stop")
        plan.requeue_after = _min_requeue(deadline_wait, DELETED_POD_RECHECK_SECONDS)
        return plan
    if was_running:
        failures += [Failure("retryable", "PodDeleted", "pod disappeared while running",
                             pod=naming.pod(job.name, attempt, r), rank=r) for r in missing]
        failures += [Failure("retryable", "PodDeleted", "pod deleted while running",
                             pod=p.name, rank=p.rank) for p in deleted]
    if failures:
        return _on_failure(job, spec, pods, failures, out, now)

    # -- pods stuck Pending (unschedulable, image pull) past the limit
    limit = spec.restart_policy.pending_timeout_seconds
    pending_wait = None
    for pod in current.values():
        if pod.phase == "Pending" and pod.created_at is not None:
            stuck_until = pod.created_at + timedelta(seconds=limit)
            if now >= stuck_until:
                return _fail(job, pods, out, "PendingTimeout",
                             f"pod {pod.name} stayed Pending longer than "
                             f"pendingTimeoutSeconds ({limit}s)"
                             + (f": {pod.pod_message}" if pod.pod_message else ""),
                             "pending timeout")
            pending_wait = _min_requeue(pending_wait, _seconds_until(stuck_until, now))

    if missing:
        # Created after the status said so (crash mid-create) or not yet seen: create-if-absent.
        plan = plan_of("create missing pods")
        if ensure:
            plan.actions.append(EnsureJobObjects(raw_spec))
        plan.actions.append(CreatePods(attempt, tuple(missing), raw_spec))
        out.phase(api.Phase.PENDING, "PodsCreated", _pending_message(attempt, spec))
        if phase not in (api.Phase.PENDING.value, None):
            plan.events.append(Event("Normal", "Started",
                                     f"created {nodes} pod(s) for attempt {attempt}"))
        plan.requeue_after = _min_requeue(deadline_wait, pending_wait)
        return plan

    if all(p.phase in ("Running", "Succeeded") for p in current.values()):
        plan = plan_of("running")
        out.phase(api.Phase.RUNNING, "AllPodsRunning",
                  f"attempt {attempt}: {nodes} pod(s) running")
        if phase != api.Phase.RUNNING.value:
            plan.events.append(Event("Normal", "Running",
                                     f"all {nodes} pod(s) of attempt {attempt} are running"))
        return plan

    plan = plan_of("pending")
    out.phase(api.Phase.PENDING, "PodsCreated", _pending_message(attempt, spec))
    plan.requeue_after = _min_requeue(deadline_wait, pending_wait)
    return plan


def _pending_message(attempt: int, spec: api.FineTuneJobSpec) -> str:
    # The same text from creation until all pods run: no status write per scheduled pod.
    return f"attempt {attempt}: waiting for {spec.resources.nodes} pod(s) to run"


def _pick(failures: list[Failure]) -> Failure:
    """The root cause among failed ranks: a permanent error wins; a preemption explains
    the rendezvous timeouts it causes on the peers."""
    for kind in ("permanent", "preempted", "retryable"):
        for failure in failures:
            if failure.kind == kind:
                return failure
    return failures[0]


def _on_failure(job: JobState, spec: api.FineTuneJobSpec, pods: list[PodView],
                failures: list[Failure], out: _Status, now: datetime) -> Plan:
    status = job.status
    cause = _pick(failures)
    if cause.kind == "permanent":
        return _fail(job, pods, out, cause.reason, cause.describe(), "permanent failure")
    restarts = int(status.get("restarts") or 0)
    preemptions = int(status.get("preemptions") or 0)
    limit = spec.restart_policy.max_restarts
    if cause.kind == "retryable" and restarts >= limit:
        return _fail(job, pods, out, "RestartBudgetExhausted",
                     f"restart budget exhausted ({limit} restart(s)); last failure: "
                     f"{cause.describe()}", "restart budget exhausted")
    live = tuple(p.name for p in pods if not p.deleting)
    if cause.kind == "preempted":
        preemptions += 1
        case, event_reason = "preempted, gang restart", "Preempted"
        out.set(preemptions=preemptions)
    else:
        restarts += 1
        case, event_reason = "rank failed, gang restart", "GangRestart"
        out.set(restarts=restarts)
    plan = Plan(case)
    if live:
        plan.actions.append(DeletePods(live))
    delay = restart_delay(spec.restart_policy.backoff_seconds,
                          spec.restart_policy.max_backoff_seconds, restarts + preemptions)
    message = (f"{cause.describe()}; restarting all {spec.resources.nodes} pod(s) in "
               f"{delay:g}s ({restarts}/{limit} restarts used, {preemptions} preemption(s))")
    out.phase(api.Phase.RESTARTING, cause.reason, message)
    plan.events.append(Event("Warning", event_reason, message))
    plan.requeue_after = delay if delay > 0 else None
    return plan


def _fail(job: JobState, pods: list[PodView], out: _Status, reason: str, message: str,
          case: str) -> Plan:
    plan = Plan(case)
    _clean_up_pods(job, pods, plan)
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


def _succeed(job: JobState, rank0: PodView, pods: list[PodView], out: _Status) -> Plan:
    plan = Plan("succeeded")
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
