"""policies/stall.py: a running attempt, and the gang restart when it stopped stepping for
longer than its allowance (stall, start-up and evaluation timeouts)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from ftjob_operator.observe import Observed
from ftjob_api.contract import rfc3339
from ftjob_operator.plan import DeletePods
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import (EARLIER, NOW, POLICY, RUNNING_SINCE, STARTED, Case,
                                                check, job, pod, running,
                                                running_attempt, stepped)


CASES: dict[str, Case] = {
    "all pods running -> Running":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER}),
             pods=[pod(0), pod(1)], started=STARTED, case="running",
             status={"phase": "Running"},
             writes={"attempts", "conditions", "message", "observedGeneration", "phase"},
                 events=["Running"]),
    "running and nothing changed -> no write":
        Case(job(running_attempt()), pods=[pod(0), pod(1)], started=STARTED, case="running",
             requeue=3501.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    check(CASES[name])


def test_running_job_with_no_change_writes_nothing():
    plan = decide(job(running(observedGeneration=1, conditions=[])), Observed(
        pods=(pod(0), pod(1)), started_spec=STARTED), NOW)
    # Only the Running condition appears once; a second decision on the result is a no-op.
    settled = job({**running(observedGeneration=1), **plan.status})
    again = decide(settled, Observed(pods=(pod(0), pod(1)), started_spec=STARTED), NOW)
    assert again.status == {} and again.actions == [] and again.events == []


def decide_running(status: dict[str, Any], attempt: int = 1, **spec: Any):
    spec.setdefault("restartPolicy", POLICY)
    return decide(job(status, **spec), Observed((pod(0, attempt), pod(1, attempt)), STARTED), NOW)


@pytest.mark.parametrize("progress, attempt, requeue", [
    (stepped(7, 20), 1, 41.0),  # 60 s after the step (+1 s for whole-second times)
    (stepped(7, 61, activity="evaluating"), 1, 540.0),  # evaluationTimeoutSeconds
    (stepped(7, 61, activity="saving"), 1, 540.0),
    (None, 1, 201.0),  # no report yet: startupTimeoutSeconds from all pods running
    ({"activity": "loading", "attempt": 1, "updatedAt": rfc3339(NOW)}, 1, 201.0),
    (stepped(7, 900, attempt=1), 2, 201.0),  # the previous attempt's step is no news
], ids=["training", "evaluating", "saving", "no report", "loading", "old attempt's progress"])
def test_a_healthy_running_job_writes_nothing_and_wakes_at_its_stall_deadline(
        progress, attempt, requeue):
    status = running_attempt(attempt, progress)
    if progress and progress.get("attempt") == attempt and "lastStepTime" in progress:
        status["attempts"][-1]["firstStepTime"] = progress["lastStepTime"]
        status["attempts"][-1]["resumedFromStep"] = 0
        status["checkpoint"] = {"resumedFromStep": 0}
    plan = decide_running(status, attempt)
    assert (plan.case, plan.actions, plan.status, plan.events) == ("running", [], {}, [])
    assert plan.requeue_after == pytest.approx(requeue)


@pytest.mark.parametrize("progress, setting, limit", [
    (stepped(7, 62), "stallTimeoutSeconds", 60),
    (stepped(7, 602, activity="evaluating"), "evaluationTimeoutSeconds", 600),
    (None, "startupTimeoutSeconds", 300),
], ids=["no step", "endless evaluation", "never started"])
def test_a_stalled_attempt_restarts_the_whole_gang(progress, setting, limit):
    silent_since = RUNNING_SINCE if progress is None else None
    status = running_attempt(1, progress, checkpoint={"latest": {"step": 5, "path": "/o/c-5"},
                                                      "resumedFromStep": 0})
    now = NOW if progress is not None else RUNNING_SINCE + timedelta(seconds=limit + 1)
    plan = decide(job(status, restartPolicy=POLICY), Observed((pod(0), pod(1)), STARTED), now)
    assert plan.case == "stalled, gang restart"
    assert plan.actions == [DeletePods(("demo-1-0", "demo-1-1"))]
    assert plan.status["phase"] == "Restarting" and plan.status["restarts"] == 1
    assert [e.reason for e in plan.events] == ["Stalled"]
    message = plan.events[0].message
    assert f"({setting} {limit}s)" in message and "restarting all 2 pod(s)" in message
    record = plan.status["attempts"][0]
    assert record["reason"] == "Stalled" and record["endTime"] == rfc3339(now)
    if silent_since is None:
        assert message.startswith("no training step since step 7 for ")
        assert record["lastStep"] == 7 and record["stepsLost"] == 2  # checkpoint 5
    else:
        assert message.startswith("attempt 1 took no training step in 301s")
    restarting = next(c for c in plan.status["conditions"] if c["type"] == "Restarting")
    assert restarting["status"] == "True" and restarting["reason"] == "Stalled"


def test_the_training_allowance_starts_again_after_a_long_evaluation():
    progress = {**stepped(7, 3000), "activitySince": rfc3339(NOW - timedelta(seconds=30))}
    plan = decide_running(running_attempt(1, progress))
    assert plan.case == "running" and plan.actions == []
    assert plan.requeue_after == pytest.approx(31.0)  # 60 s from the evaluation's end, +1 s
    late = decide(job(running_attempt(1, progress), restartPolicy=POLICY),
                  Observed((pod(0), pod(1)), STARTED), NOW + timedelta(seconds=31))
    assert late.case == "stalled, gang restart"
    assert "no training step since step 7 for 3031s while training" in late.events[0].message


def test_stall_detection_off_never_restarts():
    plan = decide_running(running_attempt(1, stepped(7, 86400)),
                          restartPolicy={**POLICY, "stallTimeoutSeconds": 0})
    assert plan.case == "running" and plan.actions == [] and plan.requeue_after is None


def test_a_stall_with_the_budget_spent_fails_the_job():
    plan = decide_running(running_attempt(1, stepped(7, 62), restarts=2))
    assert plan.case == "restart budget exhausted" and plan.status["phase"] == "Failed"
    assert "last failure: no training step since step 7" in plan.status["message"]
    assert plan.status["attempts"][0]["reason"] == "Stalled"


def legacy(step: int, written_ago: float) -> dict[str, Any]:
    """What a trainer that predates stall reporting writes: no attempt, no lastStepTime."""
    return {"globalStep": step, "updatedAt": rfc3339(NOW - timedelta(seconds=written_ago))}


@pytest.mark.parametrize("progress, attempt, now, requeue", [
    # Pods from before an operator upgrade, running long past startupTimeoutSeconds: the
    # old trainer cannot be judged, so it is not restarted.
    (legacy(40, 5), 1, NOW + timedelta(seconds=3600), None),
    (legacy(40, 5), 1, NOW, None),
    # A report from before this attempt's pods ran says nothing about this attempt: the
    # start-up allowance still applies (whatever trainer the new pods run).
    (legacy(40, 900), 2, NOW, 201.0),
    # A trainer that reports nothing at all still gets only the start-up allowance.
    (None, 1, NOW, 201.0),
], ids=["old trainer, long run", "old trainer", "old report of a previous attempt",
        "no report"])
def test_a_trainer_without_stall_reporting_is_not_judged(progress, attempt, now, requeue):
    plan = decide(job(running_attempt(attempt, progress), restartPolicy=POLICY),
                  Observed((pod(0, attempt), pod(1, attempt)), STARTED), now)
    assert (plan.case, plan.actions, plan.events) == ("running", [], [])
    assert plan.requeue_after == (None if requeue is None else pytest.approx(requeue))


def test_a_previous_attempts_old_report_does_not_excuse_a_start_up_stall():
    now = RUNNING_SINCE + timedelta(seconds=301)
    plan = decide(job(running_attempt(2, legacy(40, 900)), restartPolicy=POLICY),
                  Observed((pod(0, 2), pod(1, 2)), STARTED), now)
    assert plan.case == "stalled, gang restart"
    assert plan.events[0].message.startswith("attempt 2 took no training step in 301s")


def test_stall_is_judged_only_while_every_pod_runs():
    status = running_attempt(1, stepped(7, 600))
    plan = decide(job(status, restartPolicy=POLICY),
                  Observed((pod(0), pod(1, phase="Succeeded", exit_code=0)), STARTED), NOW)
    assert plan.case == "running" and plan.actions == []
