"""spec.output: the export step, once training has succeeded. The job's phase stays
Succeeded (training did); `status.output` and the Exported condition say whether the model
was delivered.

Each try is one export pod (`render.render_export_pod`: `ftjob-export` in the trainer
image, on the job file and output claim the ranks used), so a registry outage costs a
new pod, never a retraining. The pod's termination message is `status.output` as JSON;
its exit code says what a failed try means:

- 0 with phase Pushed, Ready or Withheld: finished. Exported True, reason Pushed (in the
  registry) or Delivered (no `oci`: merged and/or gate met); Withheld: Exported False,
  reason QualityGateNotMet.
- EXPORT_REFUSED (14; credentials refused, repository denied): finished, Exported False,
  reason ExportFailed.
- anything else (EXPORT_RETRYABLE 23, a crash, an eviction, a lost node, 0 without a
  result): another try after `retry_delay` (10, 20, 40, 80 s from when the pod ended), up to
  MAX_TRIES; then ExportFailed.

An export pod Pending, or refused by the API server, for longer than
`restartPolicy.pendingTimeoutSeconds` also ends in ExportFailed.

While a try runs, `status.output.phase` is Pushing (with `oci`), else Merging (with
`mergeAdapter`), else Pending (the gate alone), and `attempts` counts the tries. Events:
ExportStarted (each try), ExportRetrying (a failed try, with the pod's message), Exported,
QualityGateNotMet, ExportFailed. Once the export has finished, its pods are deleted per
`cleanPodPolicy` (the ranks were at success), and `deliver` returns None: from then on
`finish.finished` decides, and ttlSecondsAfterFinished counts from Exported's transition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pydantic

from ftjob_api import api, naming

from .. import render
from ..observe import Observed, PodView, Refusal, classify_pod_failure, export_result
from ..plan import Case, CreatePods, DeletePods, Event, JobState, Plan
from ..reasons import ConditionType, EventType, Reason
from ..settings import Settings
from ..status import StatusBuilder
from . import started_spec
from .context import seconds_until
from .spec_edits import effective_spec

MAX_TRIES = 5
BACKOFF_SECONDS = 10.0
FINISHED = api.OUTPUT_FINISHED_PHASES
RESULTS = (api.OutputPhase.PUSHED.value, api.OutputPhase.READY.value,
           api.OutputPhase.WITHHELD.value)


def retry_delay(failed_try: int) -> float:
    """Seconds from the end of failed try `failed_try` (1, 2...) to the next: 10, 20, 40, 80."""
    return BACKOFF_SECONDS * 2 ** max(failed_try - 1, 0)


def in_flight_phase(output: api.OutputSpec) -> api.OutputPhase:
    """status.output.phase while a try runs (the pod does gate, merge and push in one go)."""
    if output.oci is not None:
        return api.OutputPhase.PUSHING
    return api.OutputPhase.MERGING if output.merge_adapter else api.OutputPhase.PENDING


@dataclass
class _Export:
    """What one decision about the export reads."""

    job: JobState
    raw_spec: dict[str, Any]
    spec: api.FineTuneJobSpec
    output: api.OutputSpec
    pods: list[PodView]  # the job's export pods, every try
    out: StatusBuilder
    now: datetime
    settings: Settings
    refusal: Refusal | None

    @property
    def recorded(self) -> int:
        return self.out.read.output.attempts if self.out.read.output is not None else 0

    @property
    def said(self) -> str | None:
        """status.output.message as read."""
        return self.out.read.output.message if self.out.read.output is not None else None

    def status(self) -> api.OutputStatus:
        if self.out.output is None:
            self.out.output = api.OutputStatus()
        return self.out.output

    def in_flight(self, tries: int, message: str | None = None) -> None:
        status = self.status()
        status.phase, status.attempts = in_flight_phase(self.output), tries
        if message is not None:
            status.message = message

    def create(self, try_: int) -> CreatePods:
        digest = started_spec.digest(self.job, self.raw_spec)
        return CreatePods(try_, (render.render_export_pod(
            self.job, self.spec, try_, self.settings, digest,
            goodput=self.job.status.get("goodput")),))


def deliver(job: JobState, observed: Observed, pods: list[PodView], now: datetime,
            settings: Settings = Settings()) -> Plan | None:
    """The export's plan while it has not finished (and in the decision that finishes it);
    None for a job without `spec.output`, not Succeeded, or whose export has finished.
    `pods`: the job's export pods."""
    if job.status.get("phase") != api.Phase.SUCCEEDED.value:
        return None
    raw_spec = effective_spec(job.spec, observed.started_spec)
    if not raw_spec.get("output"):
        return None  # most finished jobs: no spec to parse
    out = StatusBuilder(job, now)
    if out.output is not None and out.output.phase in FINISHED:
        return None
    try:
        spec = api.parse_spec(raw_spec)
    except pydantic.ValidationError:
        return None
    if spec.output is None:
        return None
    # A finished job's observedGeneration stays as it ended (finish.finished).
    out.set(observedGeneration=job.status.get("observedGeneration"))
    ctx = _Export(job, raw_spec, spec, spec.output, pods, out, now, settings,
                  observed.refusal or observed.conflict)
    plan = _decide(ctx)
    plan.status = out.patch()
    return plan


def _decide(c: _Export) -> Plan:
    tries = max([c.recorded, *(p.attempt for p in c.pods)])
    if tries == 0:
        return _start(c, 1)
    pod = next((p for p in c.pods if p.attempt == tries), None)
    if pod is None:
        return _missing(c, tries)
    if not pod.terminated and pod.phase != "Unknown":
        return _waiting(c, tries, pod)
    result = export_result(pod) if pod.phase == "Succeeded" else None
    if result is not None and result.phase in RESULTS:
        return _delivered(c, tries, result)
    permanent, failure = _failure(pod)
    if permanent:
        return _fail(c, tries, failure)
    if tries >= MAX_TRIES:
        return _fail(c, tries, f"gave up after {MAX_TRIES} tries; the last: {failure}")
    return _retry(c, tries, pod, failure)


def _start(c: _Export, try_: int, after: str | None = None) -> Plan:
    """Create the export pod of `try_`; `after`: what the try before it ran into."""
    plan = Plan(Case.EXPORT_START if try_ == 1 else Case.EXPORT_RETRY)
    plan.actions.append(c.create(try_))
    name = naming.export_pod(c.job.name, try_)
    text = f"export pod {name} created (try {try_} of {MAX_TRIES})"
    c.in_flight(try_, f"{text}; try {try_ - 1} failed: {after}" if after else text)
    plan.events.append(Event(EventType.NORMAL, Reason.EXPORT_STARTED, text))
    return plan


def _missing(c: _Export, tries: int) -> Plan:
    """The status counts a try whose pod is not there: created after the status said so (an
    operator stopped in between), not seen yet, refused, or deleted by someone. Created
    (again: creates are create-if-absent), unless the API server has refused it too long."""
    plan = Plan(Case.EXPORT_START if tries == 1 else Case.EXPORT_RETRY)
    name = naming.export_pod(c.job.name, tries)
    if c.refusal is not None:
        limit = c.spec.restart_policy.pending_timeout_seconds
        until = c.refusal.since + timedelta(seconds=limit)
        if c.now >= until:
            return _fail(c, tries, f"the API server refused to create export pod {name} for "
                                   f"longer than pendingTimeoutSeconds ({limit}s): "
                                   f"{c.refusal.message}")
        plan.requeue_after = seconds_until(until, c.now)
    plan.actions.append(c.create(tries))
    c.in_flight(tries)
    return plan


def _waiting(c: _Export, tries: int, pod: PodView) -> Plan:
    """A try in flight: nothing to do unless its pod stays Pending too long."""
    plan = Plan(Case.EXPORTING)
    c.in_flight(tries)  # adopts a pod newer than the status (nothing changes otherwise)
    if pod.phase == "Pending" and pod.created_at is not None:
        limit = c.spec.restart_policy.pending_timeout_seconds
        until = pod.created_at + timedelta(seconds=limit)
        if c.now >= until:
            why = f": {pod.pod_message}" if pod.pod_message else ""
            return _fail(c, tries, f"export pod {pod.name} stayed Pending longer than "
                                   f"pendingTimeoutSeconds ({limit}s){why}")
        plan.requeue_after = seconds_until(until, c.now)
    return plan


def _failure(pod: PodView) -> tuple[bool, str]:
    """(permanent, what happened) of a try that delivered nothing."""
    if pod.phase == "Succeeded":
        return False, (f"export pod {pod.name} exited 0 without a result (Pushed, Ready or "
                       "Withheld) in its termination message")
    failure = classify_pod_failure(pod)
    if failure is None:
        return False, f"export pod {pod.name} ended {pod.phase}"
    code = f", exit code {failure.exit_code}" if failure.exit_code is not None else ""
    text = f"export pod {pod.name} failed: {failure.reason}{code}"
    return failure.kind == "permanent", f"{text}: {failure.message}" if failure.message else text


def _retry(c: _Export, tries: int, pod: PodView, failure: str) -> Plan:
    """A retryable failure: the next try once its delay has passed since the pod ended."""
    delay = retry_delay(tries)
    ended = pod.finished_at or pod.created_at or c.now
    # Whole seconds on finishedAt: one second more never tries again early.
    due = ended + timedelta(seconds=delay + 1)
    text = f"try {tries} of {MAX_TRIES} failed: {failure}; next try in {delay:g}s"
    told = c.said == text
    if c.now >= due:
        plan = _start(c, tries + 1, after=failure)
    else:
        plan = Plan(Case.EXPORT_BACKING_OFF, requeue_after=seconds_until(due, c.now))
        c.in_flight(tries, text)
    if not told:  # said once, even when the operator was away for the whole delay
        plan.events.insert(0, Event(EventType.WARNING, Reason.EXPORT_RETRYING, text))
    return plan


def _delivered(c: _Export, tries: int, result: api.OutputStatus) -> Plan:
    """The pod exited 0 with its result: Pushed, Ready or Withheld."""
    status = c.status()
    for field in result.model_fields_set:
        setattr(status, field, getattr(result, field))
    status.attempts = tries
    if result.phase == api.OutputPhase.WITHHELD.value:
        plan = Plan(Case.EXPORT_WITHHELD)
        text = gate_message(result)
        c.out.condition(ConditionType.EXPORTED, False, Reason.QUALITY_GATE_NOT_MET, text,
                        news=True)
        plan.events.append(Event(EventType.WARNING, Reason.QUALITY_GATE_NOT_MET, text))
    else:
        plan = Plan(Case.EXPORTED)
        pushed = result.phase == api.OutputPhase.PUSHED.value
        text = delivered_message(result)
        c.out.condition(ConditionType.EXPORTED, True,
                        Reason.PUSHED if pushed else Reason.DELIVERED, text)
        plan.events.append(Event(EventType.NORMAL, Reason.EXPORTED, text))
    if result.message is None:
        status.message = text  # not an earlier try's error
    _clean_up(c, plan)
    return plan


def _fail(c: _Export, tries: int, text: str) -> Plan:
    """No delivery: refused, tries spent, or a pod that never got going."""
    plan = Plan(Case.EXPORT_FAILED)
    status = c.status()
    status.phase, status.attempts, status.message = api.OutputPhase.FAILED, tries, text
    c.out.condition(ConditionType.EXPORTED, False, Reason.EXPORT_FAILED, text, news=True)
    plan.events.append(Event(EventType.WARNING, Reason.EXPORT_FAILED, text))
    _clean_up(c, plan)
    return plan


def _clean_up(c: _Export, plan: Plan) -> None:
    """The export has finished: no export pod left running, and the finished ones deleted
    as `cleanPodPolicy` says (All; Running and None keep them, with their logs)."""
    all_ = c.spec.clean_pod_policy == "All"
    doomed = tuple(p.name for p in c.pods if not p.deleting and (all_ or not p.terminated))
    if doomed:
        plan.actions.append(DeletePods(doomed))


def gate_message(result: api.OutputStatus) -> str:
    """What the Exported condition says of a model the gate held back (pure)."""
    gate = result.gate
    if gate is None:
        return f"quality gate not met: {result.message or 'not pushed'}"
    if gate.value is None:
        return (f"quality gate not met: {gate.metric} is not among the final metrics "
                f"(gate: {gate.comparison} {gate.bound:g}); the model was not delivered")
    relation = "below the minimum" if gate.comparison == "min" else "above the maximum"
    return (f"quality gate not met: {gate.metric} {gate.value:.4g} is {relation} "
            f"{gate.bound:g}; the model was not delivered")


def delivered_message(result: api.OutputStatus) -> str:
    """What the Exported condition says of a delivered model (pure)."""
    if result.phase == api.OutputPhase.PUSHED.value:
        text = f"pushed {result.reference or 'the model'}"
        if result.digest:
            text += f" ({result.digest})"
    else:
        text = f"delivered without a push: {result.message or 'model ready'}"
    gate = result.gate
    if gate is not None and gate.value is not None:
        sign = ">=" if gate.comparison == "min" else "<="
        text += f"; quality gate met: {gate.metric} {gate.value:.4g} {sign} {gate.bound:g}"
    return text
