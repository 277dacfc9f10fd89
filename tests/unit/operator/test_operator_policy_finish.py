"""policies/finish.py: success, activeDeadlineSeconds, a finished job and
ttlSecondsAfterFinished."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ftjob_operator.observe import Observed
from ftjob_operator.policies import finish
from ftjob_api.contract import rfc3339
from ftjob_operator.plan import DeleteJob, DeletePods
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import (EARLIER, NOW, OK, STARTED, Case, check, job, pod,
                                                running, running_attempt)


CASES: dict[str, Case] = {
    "rank 0 succeeded, rank 1 still running -> wait":
        Case(job(running_attempt()), pods=[pod(0, phase="Succeeded", exit_code=0), pod(1)],
             started=STARTED, case="rank 0 succeeded, waiting for the other ranks"),
    "all ranks exited 0 -> Succeeded with numeric metrics":
        Case(job(running()), pods=[pod(0, phase="Succeeded", exit_code=0, termination_message=OK),
                                   pod(1, phase="Succeeded", exit_code=0)],
             started=STARTED, case="succeeded",
             status={"phase": "Succeeded", "metrics": {"eval_accuracy": 0.9},
                     "completionTime": rfc3339(NOW)},
             writes={"attempts", "completionTime", "conditions", "goodput", "message", "metrics",
                    "observedGeneration", "phase"}, events=["Succeeded"]),
    "succeeded with cleanPodPolicy All -> every pod deleted":
        Case(job(running(), cleanPodPolicy="All"),
             pods=[pod(0, phase="Succeeded", exit_code=0, termination_message=OK),
                   pod(1, phase="Succeeded", exit_code=0)],
             started=STARTED, case="succeeded", actions=[DeletePods],
             status={"phase": "Succeeded"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message", "metrics",
                    "observedGeneration", "phase"}, events=["Succeeded"]),
    "past activeDeadlineSeconds -> Failed":
        Case(job(running(), activeDeadlineSeconds=50), pods=[pod(0), pod(1)], started=STARTED,
             case="deadline exceeded", actions=[DeletePods], status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["DeadlineExceeded"]),
    "before activeDeadlineSeconds -> requeue at the deadline":
        Case(job(running(), activeDeadlineSeconds=160), pods=[pod(0), pod(1)], started=STARTED,
             case="running", requeue=61.0,  # whole-second startTime: one second of slack
             writes={"attempts", "conditions", "message", "observedGeneration"}),
    "finished -> nothing; TTL later":
        Case(job({"phase": "Succeeded", "completionTime": rfc3339(NOW - timedelta(seconds=5))},
                 ttlSecondsAfterFinished=10), started=STARTED, case="finished", requeue=5.0),
    "finished, TTL over -> delete the job":
        Case(job({"phase": "Failed", "completionTime": rfc3339(NOW - timedelta(seconds=11))},
                 ttlSecondsAfterFinished=10), case="finished, ttl expired", actions=[DeleteJob],
             events=["Deleted"]),
    "finished with a rank still running -> stop it":
        Case(job({"phase": "Failed", "completionTime": EARLIER}), pods=[pod(1)],
             case="finished", actions=[DeletePods]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    check(CASES[name])


# --------------------------------------------------------------------------- ttlSecondsAfterFinished


@pytest.mark.parametrize("pods, case", [
    ((pod(0, phase="Succeeded", exit_code=0, termination_message=OK),
      pod(1, phase="Succeeded", exit_code=0)), "succeeded"),
    ((pod(0, phase="Failed", exit_code=11), pod(1)), "permanent failure"),
], ids=["succeeded", "failed"])
def test_a_job_that_finishes_wakes_when_its_ttl_is_over(pods, case):
    plan = decide(job(running(), ttlSecondsAfterFinished=30), Observed(pods, STARTED), NOW)
    assert plan.case == case and plan.requeue_after == 30.0
    untimed = decide(job(running()), Observed(pods, STARTED), NOW)
    assert untimed.case == case and untimed.requeue_after is None


def test_a_job_that_failed_with_an_invalid_spec_is_still_deleted_after_its_ttl():
    done = {"phase": "Failed", "completionTime": rfc3339(NOW - timedelta(seconds=11))}
    plan = decide(job(done, task="seq2seq", ttlSecondsAfterFinished=10), Observed(), NOW)
    assert plan.case == "finished, ttl expired" and plan.actions == [DeleteJob()]
    assert [(e.reason, e.message) for e in plan.events] == [
        ("Deleted", "deleted 10s after it finished (ttlSecondsAfterFinished)")]


@pytest.mark.parametrize("ttl, seconds", [(0, 0), (10, 10), (None, None), (-1, None),
                                          (True, None), ("10", None), (10.0, None)])
def test_the_ttl_is_read_as_the_api_model_types_it(ttl, seconds):
    spec = {} if ttl is None else {"ttlSecondsAfterFinished": ttl}
    assert finish.ttl_seconds(job(**spec)) == seconds
    assert finish.ttl_wait(job(**spec), NOW, NOW) == (None if seconds is None else float(seconds))
