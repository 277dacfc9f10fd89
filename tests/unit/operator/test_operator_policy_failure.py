"""policies/failure.py: failed, preempted and deleted ranks: gang restart, backoff, the restart
budget, the next attempt, and how the attempt record names the failure."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from ftjob_operator.observe import Observed
from ftjob_operator.plan import CreatePods, DeletePods
from ftjob_operator.policies.failure import restart_delay
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import (NOW, STARTED, Case, check, job, pod, restarting,
                                                running, running_attempt)


CASES: dict[str, Case] = {
    "permanent failure with cleanPodPolicy None -> the running rank is kept":
        Case(job(running(), cleanPodPolicy="None"),
             pods=[pod(0, phase="Failed", exit_code=11), pod(1)],
             started=STARTED, case="permanent failure", status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["InvalidData"]),
    "rank failed retryable -> gang restart, restarts+1":
        Case(job(running()), pods=[pod(0), pod(1, phase="Failed", exit_code=1)],
             started=STARTED, case="rank failed, gang restart", actions=[DeletePods],
             status={"phase": "Restarting", "restarts": 1}, requeue=10.0,
             writes={"attempts", "conditions", "goodput", "message", "observedGeneration", "phase",
                    "restarts"}, events=["GangRestart"]),
    "OOMKilled -> gang restart":
        Case(job(running()), pods=[pod(0), pod(1, phase="Failed", exit_code=137,
                                                container_reason="OOMKilled")],
             started=STARTED, case="rank failed, gang restart", actions=[DeletePods],
             writes={"attempts", "conditions", "goodput", "message", "observedGeneration", "phase",
                    "restarts"}, events=["GangRestart"], requeue=10.0),
    "rank failed permanent -> Failed, stop the other rank":
        Case(job(running()), pods=[pod(0, phase="Failed", exit_code=11), pod(1)],
             started=STARTED, case="permanent failure", actions=[DeletePods],
             status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["InvalidData"]),
    "preempted (DisruptionTarget) -> restart without budget":
        Case(job(running(restarts=2)), pods=[pod(0, phase="Failed", exit_code=21),
                                             pod(1, phase="Running", disruption="PreemptionByScheduler")],
             started=STARTED, case="preempted, gang restart", actions=[DeletePods],
             status={"phase": "Restarting", "preemptions": 1},
             writes={"attempts", "conditions", "goodput", "message", "observedGeneration", "phase",
                    "preemptions"}, events=["Preempted"], requeue=40.0),
    "SIGTERM exit code 30 -> preempted":
        Case(job(running()), pods=[pod(0, phase="Failed", exit_code=30), pod(1)],
             started=STARTED, case="preempted, gang restart", actions=[DeletePods],
             writes={"attempts", "conditions", "goodput", "message", "observedGeneration", "phase",
                    "preemptions"}, events=["Preempted"], requeue=10.0),
    "budget exhausted -> Failed":
        Case(job(running(restarts=2)), pods=[pod(0), pod(1, phase="Failed", exit_code=21)],
             started=STARTED, case="restart budget exhausted", actions=[DeletePods],
             status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["RestartBudgetExhausted"]),
    "rank deleted by someone else, still stopping -> wait for its exit code":
        Case(job(running()), pods=[pod(0), pod(1, deleting=True)], started=STARTED,
             case="rank deleted, waiting for it to stop", requeue=5.0,
             status={"message": "pod(s) demo-1-1 deleted; waiting for them to checkpoint and "
                                "stop"},
             writes={"attempts", "conditions", "message", "observedGeneration"}),
    "deleted rank checkpointed and exited 30, peer gone -> preempted, budget untouched":
        Case(job(running(restarts=2)), pods=[pod(0, phase="Failed", exit_code=30, deleting=True)],
             started=STARTED, case="preempted, gang restart",
             status={"phase": "Restarting", "preemptions": 1},
             writes={"attempts", "conditions", "goodput", "message", "observedGeneration", "phase",
                    "preemptions"}, events=["Preempted"], requeue=40.0),
    "pod vanished while running -> gang restart":
        Case(job(running()), pods=[pod(0)], started=STARTED,
             case="rank failed, gang restart", actions=[DeletePods],
             writes={"attempts", "conditions", "goodput", "message", "observedGeneration", "phase",
                    "restarts"}, events=["GangRestart"], requeue=10.0),
    "restarting, old pods still there -> delete and wait":
        Case(job(restarting()), pods=[pod(0, deleting=True), pod(1, phase="Failed", exit_code=1)],
             started=STARTED, case="restart, waiting for pods to go", actions=[DeletePods],
             writes={"observedGeneration"}),
    "restarting, pods gone, in backoff -> requeue":
        Case(job(restarting(since=NOW - timedelta(seconds=4))), started=STARTED,
             case="restart, backing off", requeue=7.0,
             writes={"observedGeneration"}),  # 10s from a time rounded down
    "restarting, pods gone, backoff over -> attempt 2 without re-creating job objects":
        Case(job(restarting(since=NOW - timedelta(seconds=11))), started=STARTED,
             case="restart", actions=[CreatePods], status={"attempt": 2, "phase": "Pending"},
             writes={"attempt", "attempts", "conditions", "message", "observedGeneration",
                    "phase"}, events=["Restarted"], created=["demo-2-0", "demo-2-1"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    check(CASES[name])


def test_restart_backoff_doubles_and_caps():
    assert [restart_delay(10, 60, n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
    assert restart_delay(0, 60, 3) == 0


def test_failure_message_names_rank_pod_and_trainer_message():
    msg = json.dumps({"status": "failed", "exitCode": 20, "reason": "OutOfMemory",
                      "message": "CUDA out of memory"})
    plan = decide(job(running(restarts=2)), Observed(
        (pod(0), pod(1, phase="Failed", exit_code=20, termination_message=msg)), STARTED), NOW)
    assert plan.status["message"].startswith("restart budget exhausted (2 restart(s)); last "
                                             "failure: rank 1 (pod demo-1-1) failed: OutOfMemory")
    assert "CUDA out of memory" in plan.status["message"]


def test_a_permanent_failure_records_the_node_once():
    failed = pod(1, phase="Failed", exit_code=10, node="node-b")
    plan = decide(job(running_attempt(1)), Observed((pod(0), failed), STARTED), NOW)
    record = plan.status["attempts"][0]
    assert plan.case == "permanent failure" and record["reason"] == "Failed"
    assert record["message"].endswith(" on node node-b")
    assert not plan.status["message"].endswith(" on node node-b")


@pytest.mark.parametrize("pods, reason", [
    ((pod(0, phase="Failed", exit_code=30), pod(1, phase="Failed", exit_code=21)), "Preempted"),
    ((pod(0, phase="Failed", exit_code=10), pod(1)), "Failed"),
    ((pod(0), pod(1, deleting=True, phase="Failed", exit_code=137)), "Failed"),
    ((pod(0),), "Deleted"),
], ids=["preempted", "permanent", "killed", "pod vanished"])
def test_the_record_names_how_the_attempt_ended(pods, reason):
    plan = decide(job(running_attempt(1)), Observed(pods, STARTED), NOW)
    assert plan.status["attempts"][0]["reason"] == reason
