"""policies/trials.py: each finished hyperparameter-search trial is announced once."""

from __future__ import annotations

from ftjob_operator.observe import Observed
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import NOW, STARTED, job, pod, running


def test_each_finished_trial_is_announced_once():
    search = {"trials": "1/4", "trialsCompleted": 1, "trialsTotal": 4, "bestTrial": 0,
              "bestValue": 0.68899, "bestParams": {"learning_rate": 1e-3}}
    observed = Observed((pod(0), pod(1)), STARTED)
    before = decide(job(running(search={**search, "trialsCompleted": 0, "trials": "0/4"})),
                    observed, NOW)
    assert before.events == []  # no trial finished yet
    plan = decide(job(running(search=search)), observed, NOW)
    assert [(e.reason, e.message) for e in plan.events] == [
        ("TrialFinished", "1/4 trials finished; best trial 0: 0.689")]
    # Announced: the condition remembers it, also across an operator restart.
    settled = job({**running(search=search), **plan.status})
    assert decide(settled, observed, NOW).events == []
    nxt = {**search, "trialsCompleted": 2, "trials": "2/4", "bestTrial": 1, "bestValue": 0.5}
    again = decide(job({**running(search=nxt), **plan.status}), observed, NOW)
    assert [e.message for e in again.events] == ["2/4 trials finished; best trial 1: 0.5"]
    cond = next(c for c in again.status["conditions"] if c["type"] == "SearchProgress")
    assert (cond["status"], cond["reason"]) == ("True", "TrialFinished")
