"""The status builder: what one decision writes to `status`, as a merge patch of the keys
that changed.

The policies set fields, conditions, the attempt history (`status.attempts`, goodput) and
the export's `status.output` on one `StatusBuilder` while they decide; `patch()` is called
once, after the decision. Conditions, attempt records, goodput and output are the `api`
status models, set by field name, and `patch()` passes every key it writes through
`api.FineTuneJobStatus` (`api.to_patch`): a key the model does not know, or a value of the
wrong type, fails there instead of reaching the cluster.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pydantic

from ftjob_api import api
from ftjob_api.contract import rfc3339

from .observe import parse_time
from .plan import JobState
from .reasons import PHASE_CONDITIONS

MAX_ATTEMPT_RECORDS = 20  # status.attempts keeps the newest; older ones live on in goodput


class StatusBuilder:
    """Builds the desired operator-owned status and diffs it against the current one.

    Conditions, attempt records and goodput are held as the `api` status models and set by
    their field names; `set()` takes the wire names of top-level fields, which `patch()`
    checks against `api.FineTuneJobStatus`."""

    def __init__(self, job: JobState, now: datetime):
        self.job = job
        self.now = now
        self.current = job.status
        self.desired: dict[str, Any] = {
            "observedGeneration": job.generation,
        }
        self.read = read_status(job.status)
        self.conditions: list[api.Condition] = [c.model_copy() for c in self.read.conditions]
        self.attempt = self.read.attempt  # the attempt the decision is about
        self.attempts: list[api.AttemptRecord] = [a.model_copy() for a in self.read.attempts]
        self.goodput: api.Goodput | None = (self.read.goodput.model_copy()
                                            if self.read.goodput is not None else None)
        # status.output (spec.output's export step), set by field name like goodput.
        self.output: api.OutputStatus | None = (self.read.output.model_copy(deep=True)
                                                if self.read.output is not None else None)

    def set(self, **values: Any) -> None:
        self.desired.update(values)

    def condition(self, type_: str, status: bool, reason: str, message: str = "",
                  news: bool = False) -> None:
        """Set a condition; `news`: a False one is worth showing even if it never was True."""
        value = "True" if status else "False"
        for cond in self.conditions:
            if cond.type == type_:
                if cond.status != value:
                    cond.last_transition_time = rfc3339(self.now)
                cond.status, cond.reason, cond.message = value, reason, message
                cond.observed_generation = self.job.generation
                return
        if not status and not news:
            return  # a False condition that never was True says nothing
        self.conditions.append(api.Condition(
            type=type_, status=value, reason=reason, message=message,
            last_transition_time=rfc3339(self.now), observed_generation=self.job.generation))

    def phase(self, phase: api.Phase, reason: str, message: str) -> None:
        """Set the phase; its condition turns True and the other phase conditions False."""
        self.set(phase=phase.value, message=message)
        for type_ in PHASE_CONDITIONS:
            if type_ == phase.value:
                self.condition(type_, True, reason, message)
            else:
                self.condition(type_, False, reason, "")

    # -- attempt history (status.attempts) and goodput

    def record(self, attempt: int) -> api.AttemptRecord | None:
        return next((a for a in reversed(self.attempts) if a.attempt == attempt), None)

    def begin_attempt(self, attempt: int) -> None:
        if attempt <= 0 or self.record(attempt) is not None:
            return
        self.attempts.append(api.AttemptRecord(attempt=attempt, start_time=rfc3339(self.now)))
        folded = len(self.attempts) - MAX_ATTEMPT_RECORDS
        if folded > 0:  # their figures are already in the goodput totals
            del self.attempts[:folded]
            goodput = self._goodput()
            goodput.attempts_folded = goodput.attempts_folded + folded

    def _goodput(self) -> api.Goodput:
        if self.goodput is None:
            self.goodput = api.Goodput()
        return self.goodput

    def own_progress(self, attempt: int) -> api.Progress | None:
        """status.progress if this attempt wrote it."""
        progress = self.read.progress
        return progress if progress is not None and progress.attempt == attempt else None

    def note_first_step(self, attempt: int) -> None:
        """Once per attempt: when it first stepped, what it resumed from, and so the
        previous attempt's downtime."""
        progress = self.own_progress(attempt)
        record = self.record(attempt)
        if progress is None or progress.last_step_time is None or record is None \
                or record.first_step_time:
            return
        record.first_step_time = progress.last_step_time
        checkpoint = self.read.checkpoint
        if checkpoint is not None and checkpoint.resumed_from_step is not None:
            record.resumed_from_step = checkpoint.resumed_from_step
        previous = self.record(attempt - 1)
        if previous is not None and record.resumed_from_step is not None:
            self._settle_steps_lost(previous, record.resumed_from_step)
        first = parse_time(progress.last_step_time)
        ended = parse_time(previous.end_time if previous is not None else None)
        if previous is not None and first is not None and ended is not None:
            previous.downtime_seconds = max((first - ended).total_seconds(), 0.0)

    def last_step(self, attempt: int) -> int | None:
        progress = self.own_progress(attempt)
        if progress is not None and progress.global_step is not None:
            return progress.global_step
        return None

    def end_attempt(self, reason: str, message: str, resumes: bool = True) -> None:
        """Close the current attempt's record (once) and add it to the goodput totals.
        `resumes`: another attempt will resume from the newest checkpoint."""
        attempt = self.attempt
        record = self.record(attempt)
        if record is None:
            self.begin_attempt(attempt)
            record = self.record(attempt)
            if record is None:
                return
        if record.end_time:
            return
        self.note_first_step(attempt)
        record.end_time, record.reason = rfc3339(self.now), reason
        record.message = message[:1024]
        last = self.last_step(attempt)
        if last is not None:
            record.last_step = last
        lost = 0
        if resumes and last is not None:
            latest = self.read.checkpoint.latest if self.read.checkpoint else None
            lost = max(last - (latest.step if latest is not None else 0), 0)
        if last is not None or not resumes:
            record.steps_lost = lost
        self._add_goodput(record, lost)

    def _settle_steps_lost(self, previous: api.AttemptRecord, resumed: int) -> None:
        """The steps an attempt lost are known for sure once the next one resumes: an
        attempt stopped gracefully (drain, preemption) saves its checkpoint after the
        operator has already seen it end, so the estimate made then can be too high."""
        if previous.last_step is None or previous.steps_lost is None:
            return
        lost = max(int(previous.last_step) - resumed, 0)
        if lost == previous.steps_lost:
            return
        goodput = self._goodput()
        goodput.steps_lost = max(int(goodput.steps_lost or 0) + lost - previous.steps_lost, 0)
        gained = _productive_seconds(previous, lost) - _productive_seconds(previous,
                                                                           previous.steps_lost)
        previous.steps_lost = lost
        self._add_productive(gained)

    def _add_goodput(self, record: api.AttemptRecord, lost: int) -> None:
        self._goodput().steps_lost = int(self._goodput().steps_lost or 0) + lost
        self._add_productive(_productive_seconds(record, lost))

    def _add_productive(self, productive: float) -> None:
        start = parse_time(self.job.status.get("startTime"))
        wall = max((self.now - start).total_seconds(), 0.0) if start is not None else 0.0
        goodput = self._goodput()
        total = float(goodput.productive_seconds or 0.0) + productive
        goodput.productive_seconds = round(total, 1)
        goodput.wall_seconds = round(wall, 1)
        goodput.ratio = round(min(total / wall, 1.0), 3) if wall > 0 else None
        if "attempts_folded" not in goodput.model_fields_set:
            goodput.attempts_folded = 0

    def patch(self) -> dict[str, Any]:
        desired = dict(self.desired)
        desired["conditions"] = [api.to_patch(c) for c in self.conditions]
        attempts = [api.to_patch(a) for a in self.attempts]
        if attempts or "attempts" in self.current:
            desired["attempts"] = attempts
        goodput = api.to_patch(self.goodput) if self.goodput is not None else {}
        if goodput or "goodput" in self.current:
            desired["goodput"] = goodput
        if self.output is not None:
            desired["output"] = api.to_patch(self.output)
        typed = api.to_patch(api.FineTuneJobStatus.model_validate(desired))
        return {k: v for k, v in typed.items() if self.current.get(k) != v}


def read_status(status: dict[str, Any]) -> api.FineTuneJobStatus:
    """The status as the API model; a field that does not parse is left at its default
    (the handlers already drop such fields before deciding, see observe.sane_status)."""
    fields = api.FineTuneJobStatus.model_fields
    known = {f.alias or k for k, f in fields.items()} | set(fields)
    ours = {k: v for k, v in status.items() if k in known}
    try:
        return api.FineTuneJobStatus.model_validate(ours)  # the usual case: all parse
    except (pydantic.ValidationError, TypeError, ValueError):
        pass
    clean: dict[str, Any] = {}
    for key, value in ours.items():
        try:
            api.FineTuneJobStatus.model_validate({key: value})
        except (pydantic.ValidationError, TypeError, ValueError):
            continue
        clean[key] = value
    return api.FineTuneJobStatus.model_validate(clean)


def condition_of(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of that type in a status as read, or None."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)


def _productive_seconds(record: api.AttemptRecord, lost: int) -> float:
    """Of an ended attempt's stepping time, the share spent on steps that were kept."""
    first, end = parse_time(record.first_step_time), parse_time(record.end_time)
    if first is None or end is None:
        return 0.0
    stepping = max((end - first).total_seconds(), 0.0)
    done = int(record.last_step or 0) - int(record.resumed_from_step or 0)
    return stepping * (max(done - lost, 0) / done if done > 0 else 0.0)
