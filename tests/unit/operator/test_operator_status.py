"""status.py, the status builder, through decide(): conditions and the attempt history
(status.attempts) with its goodput totals."""

from __future__ import annotations

from datetime import timedelta

from ftjob_operator.observe import Observed
from ftjob_api.contract import rfc3339
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import (EARLIER, NOW, OK, STARTED, job, pod, running,
                                                running_attempt)


def test_conditions_carry_observed_generation_and_keep_transition_time():
    first = decide(job(running(), generation=3), Observed((pod(0), pod(1, phase="Failed",
                                                                     exit_code=1)), STARTED), NOW)
    restart = next(c for c in first.status["conditions"] if c["type"] == "Restarting")
    assert restart["observedGeneration"] == 3 and restart["lastTransitionTime"] == rfc3339(NOW)
    later = NOW + timedelta(seconds=3)
    again = decide(job({**running(), **first.status}, generation=3),
                   Observed((pod(0, deleting=True),), STARTED), later)
    conds = again.status.get("conditions") or first.status["conditions"]
    assert next(c for c in conds if c["type"] == "Restarting")["lastTransitionTime"] == rfc3339(NOW)


def test_each_attempt_is_recorded_from_start_to_end():
    start = decide(job(), Observed(), NOW)
    assert start.status["attempts"] == [{"attempt": 1, "startTime": rfc3339(NOW)}]

    first_step = rfc3339(NOW + timedelta(seconds=30))
    status = running_attempt(1, {"globalStep": 1, "attempt": 1, "lastStepTime": first_step},
                             attempts=start.status["attempts"],
                             checkpoint={"resumedFromStep": 0})
    seen = decide(job(status), Observed((pod(0), pod(1)), STARTED), NOW + timedelta(seconds=31))
    assert seen.status == {"attempts": [{"attempt": 1, "startTime": rfc3339(NOW),
                                         "firstStepTime": first_step, "resumedFromStep": 0}]}

    status.update(seen.status, progress={"globalStep": 13, "attempt": 1,
                                         "lastStepTime": first_step},
                  checkpoint={"resumedFromStep": 0, "latest": {"step": 10, "path": "/o/c"}})
    ended_at = NOW + timedelta(seconds=130)
    failed = decide(job(status), Observed((pod(0), pod(1, phase="Failed", exit_code=20,
                                                      node="node-b")), STARTED), ended_at)
    record = failed.status["attempts"][0]
    assert record == {"attempt": 1, "startTime": rfc3339(NOW), "firstStepTime": first_step,
                      "resumedFromStep": 0, "endTime": rfc3339(ended_at), "reason": "Failed",
                      "message": "rank 1 (pod demo-1-1) failed: OutOfMemory, exit code 20 "
                                 "on node node-b",
                      "lastStep": 13, "stepsLost": 3}
    # 100 s stepping, 10 of 13 steps kept; the job started 100 s before NOW.
    assert failed.status["goodput"] == {"productiveSeconds": 76.9, "wallSeconds": 230.0,
                                        "ratio": 0.334, "stepsLost": 3, "attemptsFolded": 0}


def test_the_next_attempts_first_step_gives_the_downtime():
    ended = rfc3339(NOW - timedelta(seconds=50))
    status = running_attempt(2, {"globalStep": 11, "attempt": 2,
                                 "lastStepTime": rfc3339(NOW - timedelta(seconds=5))},
                             checkpoint={"resumedFromStep": 10})
    status["attempts"][0].update(endTime=ended, reason="Preempted")
    plan = decide(job(status), Observed((pod(0, 2), pod(1, 2)), STARTED), NOW)
    first, second = plan.status["attempts"]
    assert first["downtimeSeconds"] == 45.0
    assert second["resumedFromStep"] == 10 and "endTime" not in second


def test_the_next_attempts_resume_point_settles_the_steps_lost():
    """A drained rank saves on SIGTERM after the operator has closed its attempt: the record
    said 30 steps lost against the checkpoint known then (10); the next attempt resumes from
    40, the last step seen, so none were lost, and the totals follow."""
    ended = NOW - timedelta(seconds=50)
    status = running_attempt(2, {"globalStep": 41, "attempt": 2,
                                 "lastStepTime": rfc3339(NOW - timedelta(seconds=5))},
                             checkpoint={"resumedFromStep": 40})
    status["attempts"][0].update(firstStepTime=rfc3339(ended - timedelta(seconds=40)),
                                 resumedFromStep=0, endTime=rfc3339(ended), reason="Preempted",
                                 lastStep=40, stepsLost=30)
    status["goodput"] = {"productiveSeconds": 10.0, "wallSeconds": 60.0, "ratio": 0.167,
                         "stepsLost": 30, "attemptsFolded": 0}
    plan = decide(job(status), Observed((pod(0, 2), pod(1, 2)), STARTED), NOW)
    first = plan.status["attempts"][0]
    assert first["stepsLost"] == 0
    goodput = plan.status["goodput"]
    # 40 s stepping: 10 s were counted productive (10 of 40 steps kept), now all 40 s.
    assert goodput["stepsLost"] == 0 and goodput["productiveSeconds"] == 40.0
    # A later look changes nothing: settled once.
    again = decide(job({**status, **plan.status}), Observed((pod(0, 2), pod(1, 2)), STARTED), NOW)
    assert (again.status.get("goodput") or goodput)["productiveSeconds"] == 40.0


def test_history_keeps_the_last_20_and_folds_older_ones_into_goodput():
    records = [{"attempt": a, "startTime": EARLIER, "endTime": EARLIER, "reason": "Preempted"}
               for a in range(1, 21)]
    status = {"phase": "Restarting", "attempt": 20, "startTime": EARLIER, "preemptions": 20,
              "attempts": records, "goodput": {"productiveSeconds": 5.0, "wallSeconds": 9.0,
                                               "stepsLost": 4, "attemptsFolded": 3}}
    plan = decide(job(status, restartPolicy={"backoffSeconds": 0}), Observed((), STARTED), NOW)
    assert plan.case == "restart"
    attempts = plan.status["attempts"]
    assert len(attempts) == 20 and [a["attempt"] for a in attempts] == list(range(2, 22))
    assert plan.status["goodput"]["attemptsFolded"] == 4
    assert plan.status["goodput"]["stepsLost"] == 4  # totals kept


def test_success_closes_the_record_with_no_steps_lost():
    status = running_attempt(1, {"globalStep": 50, "attempt": 1,
                                 "lastStepTime": rfc3339(NOW - timedelta(seconds=1))})
    status["attempts"][0].update(firstStepTime=rfc3339(NOW - timedelta(seconds=51)),
                                 resumedFromStep=0)
    plan = decide(job(status), Observed((pod(0, phase="Succeeded", exit_code=0,
                                              termination_message=OK),
                                          pod(1, phase="Succeeded", exit_code=0)), STARTED), NOW)
    record = plan.status["attempts"][0]
    assert record["reason"] == "Succeeded" and record["stepsLost"] == 0
    assert plan.status["goodput"]["productiveSeconds"] == 51.0
    assert plan.status["goodput"]["ratio"] == 0.51  # 100 s since startTime
