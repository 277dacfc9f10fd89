"""policies/adoption.py: an output folder the trainer took over from another job
(`status.checkpoint.adoptedFromJobUid`) is announced once: a condition and a Warning Event."""

from __future__ import annotations

from ftjob_operator.observe import Observed
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import NOW, STARTED, job, pod, running_attempt

ADOPTED = {"resumedFromStep": 20, "adoptedFromJobUid": "uid-old"}


def test_an_adoption_is_announced_once():
    state = job(running_attempt(1, checkpoint=ADOPTED))
    plan = decide(state, Observed((pod(0), pod(1)), STARTED), NOW)
    cond = next(c for c in plan.status["conditions"] if c["type"] == "OutputAdopted")
    assert (cond["status"], cond["reason"]) == ("True", "OutputAdopted")
    assert "job uid uid-old" in cond["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "OutputAdopted")]
    again = decide(job({**state.status, **plan.status}), Observed((pod(0), pod(1)), STARTED),
                   NOW)
    assert again.events == [] and "conditions" not in again.status


def test_no_adoption_says_nothing():
    state = job(running_attempt(1, checkpoint={"resumedFromStep": 0}))
    plan = decide(state, Observed((pod(0), pod(1)), STARTED), NOW)
    assert plan.events == [] and "conditions" not in plan.status
