"""policies/suspend.py: suspend (stop the gang, check the checkpoint it saved) and resume."""

from __future__ import annotations

from typing import Any

import pytest

from ftjob_operator.observe import Observed
from ftjob_operator.plan import CreatePods, DeletePods
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import (EARLIER, NOW, STARTED, Case, check, job, pod,
                                                running, running_attempt, stepped)


CASES: dict[str, Case] = {
    "suspend -> delete pods, Suspended":
        Case(job(running(), suspend=True), pods=[pod(0), pod(1)], started=STARTED,
             case="suspend, waiting for the checkpoint", actions=[DeletePods],
             status={"phase": "Suspended"},
             writes={"conditions", "message", "observedGeneration", "phase"}, events=["Suspended"],
                 requeue=5.0),
    "suspended, resumed, pods gone -> new attempt, not counted":
        Case(job({"phase": "Suspended", "attempt": 1, "startTime": EARLIER}), started=STARTED,
             case="resume", actions=[CreatePods], status={"attempt": 2, "phase": "Pending"},
             writes={"attempt", "attempts", "conditions", "message", "observedGeneration",
                 "phase"}, events=["Resumed"], created=["demo-2-0", "demo-2-1"]),
    "created suspended -> no pods":
        Case(job(suspend=True), case="suspend", status={"phase": "Suspended"},
             writes={"conditions", "message", "observedGeneration", "phase"},
                 events=["Suspended"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    check(CASES[name])


def suspending(progress: dict[str, Any] | None, latest: int | None) -> dict[str, Any]:
    status = running_attempt(1, progress, phase="Suspended")
    checkpoint: dict[str, Any] = {"resumedFromStep": 0}
    if latest is not None:
        checkpoint["latest"] = {"step": latest, "path": f"/output/checkpoint-{latest}"}
    status["checkpoint"] = checkpoint
    return status


def test_suspend_waits_for_the_pods_before_judging_the_checkpoint():
    plan = decide(job(suspending(stepped(12, 1), None), suspend=True),
                  Observed((pod(0, deleting=True), pod(1, deleting=True)), STARTED), NOW)
    assert plan.case == "suspend, waiting for the checkpoint" and plan.actions == []
    assert plan.status["message"] == ("suspending: waiting for 2 pod(s) of attempt 1 to save a "
                                      "checkpoint and stop")
    assert plan.requeue_after == 5.0 and "attempts" not in plan.status


def test_suspend_with_the_checkpoint_at_the_last_step_is_confirmed():
    plan = decide(job(suspending(stepped(12, 1), 12), suspend=True), Observed((), STARTED), NOW)
    assert plan.case == "suspended, checkpoint checked"
    record = plan.status["attempts"][0]
    assert (record["reason"], record["lastStep"], record["stepsLost"]) == ("Suspended", 12, 0)
    cond = next(c for c in plan.status["conditions"] if c["type"] == "SuspendCheckpointSaved")
    assert cond["status"] == "True" and "checkpoint-12 verified" in cond["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "SuspendCheckpointSaved")]
    again = decide(job({**suspending(stepped(12, 1), 12), **plan.status}, suspend=True),
                   Observed((), STARTED), NOW)
    assert again.status == {} and again.events == []  # recorded once


def test_suspend_whose_save_failed_says_so():
    plan = decide(job(suspending(stepped(12, 1), 10), suspend=True), Observed((), STARTED), NOW)
    record = plan.status["attempts"][0]
    assert record["stepsLost"] == 2
    assert "not saved (newest verified checkpoint: step 10); resuming loses 2" in record["message"]
    cond = next(c for c in plan.status["conditions"] if c["type"] == "SuspendCheckpointSaved")
    assert cond["status"] == "False" and cond["reason"] == "CheckpointMissing"
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "SuspendCheckpointFailed")]


def test_suspend_before_the_first_step_claims_nothing():
    plan = decide(job(suspending(None, None), suspend=True), Observed((), STARTED), NOW)
    assert plan.status["attempts"][0]["message"] == "attempt 1 suspended before its first step"
    assert not any(c["type"] == "SuspendCheckpointSaved" for c in plan.status["conditions"])
