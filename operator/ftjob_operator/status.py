"""The status builder: what one decision writes to `status`, as a merge patch of the keys
that changed.

The policies set fields, conditions and the attempt history (`status.attempts`, goodput)
on one `StatusBuilder` while they decide; `patch()` is called once, after the decision.
New conditions and attempt records are built from the `api` status models, and `patch()`
passes every key it writes through `api.FineTuneJobStatus` (`api.to_patch`): a key the
model does not know, or a value of the wrong type, fails there instead of reaching the
cluster.
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
    """Builds the desired operator-owned status and diffs it against the current one."""

    def __init__(self, job: JobState, now: datetime):
        self.job = job
        self.now = now
        self.current = job.status
        self.desired: dict[str, Any] = {
            "observedGeneration": job.generation,
        }
        self.conditions: list[dict[str, Any]] = [dict(c) for c in job.status.get("conditions") or []]
        self.read = read_status(job.status)
        self.attempt = self.read.attempt  # the attempt the decision is about
        self.attempts: list[dict[str, Any]] = [dict(a) for a in job.status.get("attempts") or []]
        self.goodput: dict[str, Any] = dict(job.status.get("goodput") or {})

    def set(self, **values: Any) -> None:
        self.desired.update(values)

    def condition(self, type_: str, status: bool, reason: str, message: str = "",
                  news: bool = False) -> None:
        """Set a condition; `news`: a False one is worth showing even if it never was True."""
        value = "True" if status else "False"
        for cond in self.conditions:
            if cond.get("type") == type_:
                if cond.get("status") != value:
                    cond["lastTransitionTime"] = rfc3339(self.now)
                cond.update(status=value, reason=reason, message=message,
                            observedGeneration=self.job.generation)
                return
        if not status and not news:
            return  # a False condition that never was True says nothing
        self.conditions.append(api.to_patch(api.Condition(
            type=type_, status=value, reason=reason, message=message,
            last_transition_time=rfc3339(self.now), observed_generation=self.job.generation)))

    def phase(self, phase: api.Phase, reason: str, message: str) -> None:
        """Set the phase; its condition turns True and the other phase conditions False."""
        self.set(phase=phase.value, message=message)
        for type_ in PHASE_CONDITIONS:
            if type_ == phase.value:
                self.condition(type_, True, reason, message)
            else:
                self.condition(type_, False, reason, "")

    # -- attempt history (status.attempts) and goodput

    def record(self, attempt: int) -> dict[str, Any] | None:
        return next((a for a in reversed(self.attempts) if a.get("attempt") == attempt), None)

    def begin_attempt(self, attempt: int) -> None:
        if attempt <= 0 or self.record(attempt) is not None:
            return
        self.attempts.append(api.to_patch(api.AttemptRecord(attempt=attempt,
                                                            start_time=rfc3339(self.now))))
        folded = len(self.attempts) - MAX_ATTEMPT_RECORDS
        if folded > 0:  # their figures are already in the goodput totals
            del self.attempts[:folded]
            self.goodput["attemptsFolded"] = int(self.goodput.get("attemptsFolded") or 0) + folded

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
                or record.get("firstStepTime"):
            return
        record["firstStepTime"] = progress.last_step_time
        checkpoint = self.read.checkpoint
        if checkpoint is not None and checkpoint.resumed_from_step is not None:
            record["resumedFromStep"] = checkpoint.resumed_from_step
        previous = self.record(attempt - 1)
        first, ended = parse_time(progress.last_step_time), parse_time(
            (previous or {}).get("endTime"))
        if previous is not None and first is not None and ended is not None:
            previous["downtimeSeconds"] = max((first - ended).total_seconds(), 0.0)

    def last_step(self, attempt: int) -> int | None:
        progress = self.own_progress(attempt)
        if progress is not None and progress.global_step is not None:
            return progress.global_step
        return None

    def end_attempt(self, reason: str, message: str, resumes: bool = True) -> dict[str, Any]:
        """Close the current attempt's record (once) and add it to the goodput totals.
        `resumes`: another attempt will resume from the newest checkpoint."""
        attempt = self.attempt
        record = self.record(attempt)
        if record is None:
            self.begin_attempt(attempt)
            record = self.record(attempt)
            if record is None:
                return {}
        if record.get("endTime"):
            return record
        self.note_first_step(attempt)
        record.update(endTime=rfc3339(self.now), reason=reason, message=message[:1024])
        last = self.last_step(attempt)
        if last is not None:
            record["lastStep"] = last
        lost = 0
        if resumes and last is not None:
            latest = self.read.checkpoint.latest if self.read.checkpoint else None
            lost = max(last - (latest.step if latest is not None else 0), 0)
        if last is not None or not resumes:
            record["stepsLost"] = lost
        self._add_goodput(record, lost)
        return record

    def _add_goodput(self, record: dict[str, Any], lost: int) -> None:
        first, end = parse_time(record.get("firstStepTime")), parse_time(record.get("endTime"))
        productive = 0.0
        if first is not None and end is not None:
            stepping = max((end - first).total_seconds(), 0.0)
            done = int(record.get("lastStep") or 0) - int(record.get("resumedFromStep") or 0)
            productive = stepping * (max(done - lost, 0) / done if done > 0 else 0.0)
        start = parse_time(self.job.status.get("startTime"))
        wall = max((self.now - start).total_seconds(), 0.0) if start is not None else 0.0
        total = float(self.goodput.get("productiveSeconds") or 0.0) + productive
        self.goodput.update(productiveSeconds=round(total, 1), wallSeconds=round(wall, 1),
                            stepsLost=int(self.goodput.get("stepsLost") or 0) + lost,
                            ratio=round(min(total / wall, 1.0), 3) if wall > 0 else None)
        self.goodput.setdefault("attemptsFolded", 0)
        if self.goodput["ratio"] is None:
            del self.goodput["ratio"]

    def patch(self) -> dict[str, Any]:
        desired = dict(self.desired)
        desired["conditions"] = self.conditions
        if self.attempts or "attempts" in self.current:
            desired["attempts"] = self.attempts
        if self.goodput or "goodput" in self.current:
            desired["goodput"] = self.goodput
        typed = api.to_patch(api.FineTuneJobStatus.model_validate(desired))
        return {k: v for k, v in typed.items() if self.current.get(k) != v}


def read_status(status: dict[str, Any]) -> api.FineTuneJobStatus:
    """The status as the API model; a field that does not parse is left at its default
    (the handlers already drop such fields before deciding, see observe.sane_status)."""
    fields = api.FineTuneJobStatus.model_fields
    known = {f.alias or k for k, f in fields.items()} | set(fields)
    clean: dict[str, Any] = {}
    for key, value in status.items():
        if key not in known:
            continue
        try:
            api.FineTuneJobStatus.model_validate({key: value})
        except (pydantic.ValidationError, TypeError, ValueError):
            continue
        clean[key] = value
    return api.FineTuneJobStatus.model_validate(clean)


def condition_of(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of that type in a status as read, or None."""
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), None)
