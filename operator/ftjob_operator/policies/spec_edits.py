"""Spec edits after the start: only the mutable fields take effect; the job keeps running
the spec in its ConfigMap, and a condition (with a Warning Event, and a warning at
admission) names the fields whose edits are ignored."""

from __future__ import annotations

from typing import Any

from ftjob_api import contract

from ..plan import Event, JobState, Plan
from ..reasons import ConditionType, EventType, Reason
from ..status import StatusBuilder, condition_of

# Spec fields that take effect while a job runs; edits to any other field are ignored
# (the job keeps running the spec in its ConfigMap) and reported in a condition.
MUTABLE_FIELDS = contract.MUTABLE_SPEC_FIELDS


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


def report(job: JobState, started: dict[str, Any] | None, out: StatusBuilder,
           plan: Plan) -> None:
    """The SpecChangeIgnored condition; a Warning Event each time what it says changes."""
    changed = ignored_changes(job.spec, started)
    previous = condition_of(job.status, ConditionType.SPEC_CHANGE_IGNORED)
    if changed:
        text = ignored_changes_message(changed)
        out.condition(ConditionType.SPEC_CHANGE_IGNORED, True, Reason.SPEC_CHANGE_IGNORED, text)
        if previous is None or previous.get("status") != "True" or previous.get("message") != text:
            plan.events.append(Event(EventType.WARNING, Reason.SPEC_CHANGE_IGNORED, text))
    else:
        out.condition(ConditionType.SPEC_CHANGE_IGNORED, False, Reason.SPEC_MATCHES, "")
