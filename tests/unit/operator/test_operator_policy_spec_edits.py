"""policies/spec_edits.py: spec fields edited after the start are ignored and reported."""

from __future__ import annotations

from ftjob_operator.observe import Observed
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import NOW, STARTED, job, pod, running


def test_spec_edit_is_ignored_and_reported():
    current = job(running(), generation=2, trainingArguments={"max_steps": 9}, suspend=False)
    plan = decide(current, Observed((pod(0), pod(1)), STARTED), NOW)
    cond = next(c for c in plan.status["conditions"] if c["type"] == "SpecChangeIgnored")
    assert cond["status"] == "True" and "trainingArguments" in cond["message"]
    assert [e.reason for e in plan.events] == ["SpecChangeIgnored"]
    assert plan.actions == []  # still the started spec: nothing restarts
