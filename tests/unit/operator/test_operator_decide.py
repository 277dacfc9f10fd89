"""decide(job, observed, now): one table row per named case of the state machine."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ftjob_operator.observe import Observed, PodView
from ftjob_operator.reconcile import (CreatePods, DeleteJob, DeletePods, EnsureJobObjects,
                                      JobState, decide, restart_delay, rfc3339)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
EARLIER = rfc3339(NOW - timedelta(seconds=100))
SPEC: dict[str, Any] = {
    "task": "sequence-classification",
    "model": {"path": "/m"},
    "dataset": {"files": {"train": "/d/train.jsonl"}},
    "resources": {"nodes": 2},
    "storage": {"accessModes": ["ReadWriteMany"]},
    "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 10},
}


def job(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> JobState:
    body = copy.deepcopy(SPEC)
    body.update(spec)
    return JobState("demo", "ns", "uid-1", generation, body, status or {})


def pod(rank: int, attempt: int = 1, phase: str = "Running", **kw: Any) -> PodView:
    return PodView(name=f"demo-{attempt}-{rank}", job="demo", attempt=attempt, rank=rank,
                   owner_uid="uid-1", phase=phase, created_at=NOW - timedelta(seconds=5), **kw)


def running(attempt: int = 1, **extra: Any) -> dict[str, Any]:
    return {"phase": "Running", "attempt": attempt, "startTime": EARLIER, **extra}


def restarting(attempt: int = 1, since: datetime = NOW, **extra: Any) -> dict[str, Any]:
    return {"phase": "Restarting", "attempt": attempt, "startTime": EARLIER, "restarts": 1,
            "conditions": [{"type": "Restarting", "status": "True", "reason": "Error",
                            "message": "", "lastTransitionTime": rfc3339(since)}], **extra}


STARTED = copy.deepcopy(SPEC)


@dataclass
class Case:
    job: JobState
    pods: list[PodView] = field(default_factory=list)
    started: dict[str, Any] | None = None
    case: str = ""
    actions: list[type] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # expected subset of the patch
    requeue: float | None = None


OK = json.dumps({"status": "succeeded", "globalStep": 50,
                 "metrics": {"eval_accuracy": 0.9, "note": "x"}, "finalModel": "/output/final"})

CASES: dict[str, Case] = {
    "no children yet -> start attempt 1":
        Case(job(), case="start", actions=[EnsureJobObjects, CreatePods],
             status={"phase": "Pending", "attempt": 1, "startTime": rfc3339(NOW)}),
    "status written but pods missing (crash mid-create) -> create missing, ensure objects":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER}), pods=[pod(0, phase="Pending")],
             case="create missing pods", actions=[EnsureJobObjects, CreatePods]),
    "pods created before the status (crash) -> adopt that attempt":
        Case(job({"phase": "Restarting", "attempt": 1, "restarts": 1}),
             pods=[pod(0, 2, "Pending"), pod(1, 2, "Pending")], started=STARTED,
             case="pending", status={"attempt": 2, "phase": "Pending"}),
    "some pods pending -> Pending":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER}),
             pods=[pod(0), pod(1, phase="Pending")], started=STARTED, case="pending"),
    "all pods running -> Running":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER}),
             pods=[pod(0), pod(1)], started=STARTED, case="running",
             status={"phase": "Running"}),
    "running and nothing changed -> no write":
        Case(job(running()), pods=[pod(0), pod(1)], started=STARTED, case="running"),
    "rank 0 succeeded, rank 1 still running -> wait":
        Case(job(running()), pods=[pod(0, phase="Succeeded", exit_code=0), pod(1)],
             started=STARTED, case="rank 0 succeeded, waiting for the other ranks"),
    "all ranks exited 0 -> Succeeded with numeric metrics":
        Case(job(running()), pods=[pod(0, phase="Succeeded", exit_code=0, termination_message=OK),
                                   pod(1, phase="Succeeded", exit_code=0)],
             started=STARTED, case="succeeded",
             status={"phase": "Succeeded", "metrics": {"eval_accuracy": 0.9},
                     "completionTime": rfc3339(NOW)}),
    "succeeded with cleanPodPolicy All -> every pod deleted":
        Case(job(running(), cleanPodPolicy="All"),
             pods=[pod(0, phase="Succeeded", exit_code=0, termination_message=OK),
                   pod(1, phase="Succeeded", exit_code=0)],
             started=STARTED, case="succeeded", actions=[DeletePods],
             status={"phase": "Succeeded"}),
    "permanent failure with cleanPodPolicy None -> the running rank is kept":
        Case(job(running(), cleanPodPolicy="None"),
             pods=[pod(0, phase="Failed", exit_code=11), pod(1)],
             started=STARTED, case="permanent failure", status={"phase": "Failed"}),
    "rank failed retryable -> gang restart, restarts+1":
        Case(job(running()), pods=[pod(0), pod(1, phase="Failed", exit_code=1)],
             started=STARTED, case="rank failed, gang restart", actions=[DeletePods],
             status={"phase": "Restarting", "restarts": 1}, requeue=10.0),
    "OOMKilled -> gang restart":
        Case(job(running()), pods=[pod(0), pod(1, phase="Failed", exit_code=137,
                                                container_reason="OOMKilled")],
             started=STARTED, case="rank failed, gang restart", actions=[DeletePods]),
    "rank failed permanent -> Failed, stop the other rank":
        Case(job(running()), pods=[pod(0, phase="Failed", exit_code=11), pod(1)],
             started=STARTED, case="permanent failure", actions=[DeletePods],
             status={"phase": "Failed"}),
    "preempted (DisruptionTarget) -> restart without budget":
        Case(job(running(restarts=2)), pods=[pod(0, phase="Failed", exit_code=21),
                                             pod(1, phase="Running", disruption="PreemptionByScheduler")],
             started=STARTED, case="preempted, gang restart", actions=[DeletePods],
             status={"phase": "Restarting", "preemptions": 1}),
    "SIGTERM exit code 30 -> preempted":
        Case(job(running()), pods=[pod(0, phase="Failed", exit_code=30), pod(1)],
             started=STARTED, case="preempted, gang restart", actions=[DeletePods]),
    "budget exhausted -> Failed":
        Case(job(running(restarts=2)), pods=[pod(0), pod(1, phase="Failed", exit_code=21)],
             started=STARTED, case="restart budget exhausted", actions=[DeletePods],
             status={"phase": "Failed"}),
    "rank deleted by someone else, still stopping -> wait for its exit code":
        Case(job(running()), pods=[pod(0), pod(1, deleting=True)], started=STARTED,
             case="rank deleted, waiting for it to stop", requeue=5.0,
             status={"message": "pod(s) demo-1-1 deleted; waiting for them to checkpoint and "
                                "stop"}),
    "deleted rank checkpointed and exited 30, peer gone -> preempted, budget untouched":
        Case(job(running(restarts=2)), pods=[pod(0, phase="Failed", exit_code=30, deleting=True)],
             started=STARTED, case="preempted, gang restart",
             status={"phase": "Restarting", "preemptions": 1}),
    "pod vanished while running -> gang restart":
        Case(job(running()), pods=[pod(0)], started=STARTED,
             case="rank failed, gang restart", actions=[DeletePods]),
    "restarting, old pods still there -> delete and wait":
        Case(job(restarting()), pods=[pod(0, deleting=True), pod(1, phase="Failed", exit_code=1)],
             started=STARTED, case="restart, waiting for pods to go", actions=[DeletePods]),
    "restarting, pods gone, in backoff -> requeue":
        Case(job(restarting(since=NOW - timedelta(seconds=4))), started=STARTED,
             case="restart, backing off", requeue=7.0),  # 10s from a time rounded down
    "restarting, pods gone, backoff over -> attempt 2 without re-creating job objects":
        Case(job(restarting(since=NOW - timedelta(seconds=11))), started=STARTED,
             case="restart", actions=[CreatePods], status={"attempt": 2, "phase": "Pending"}),
    "suspend -> delete pods, Suspended":
        Case(job(running(), suspend=True), pods=[pod(0), pod(1)], started=STARTED,
             case="suspend", actions=[DeletePods], status={"phase": "Suspended"}),
    "suspended, resumed, pods gone -> new attempt, not counted":
        Case(job({"phase": "Suspended", "attempt": 1, "startTime": EARLIER}), started=STARTED,
             case="resume", actions=[CreatePods], status={"attempt": 2, "phase": "Pending"}),
    "created suspended -> no pods":
        Case(job(suspend=True), case="suspend", status={"phase": "Suspended"}),
    "invalid spec -> Failed InvalidSpec, nothing created":
        Case(job(task="seq2seq"), case="invalid spec", status={"phase": "Failed"}),
    "past activeDeadlineSeconds -> Failed":
        Case(job(running(), activeDeadlineSeconds=50), pods=[pod(0), pod(1)], started=STARTED,
             case="deadline exceeded", actions=[DeletePods], status={"phase": "Failed"}),
    "before activeDeadlineSeconds -> requeue at the deadline":
        Case(job(running(), activeDeadlineSeconds=160), pods=[pod(0), pod(1)], started=STARTED,
             case="running", requeue=61.0),  # whole-second startTime: one second of slack
    "stuck pending past the limit -> Failed":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             pods=[pod(0), PodView("demo-1-1", "demo", 1, 1, "uid-1", "Pending",
                                   NOW - timedelta(seconds=31))],
             started=STARTED, case="pending timeout", actions=[DeletePods],
             status={"phase": "Failed"}),
    "finished -> nothing; TTL later":
        Case(job({"phase": "Succeeded", "completionTime": rfc3339(NOW - timedelta(seconds=5))},
                 ttlSecondsAfterFinished=10), started=STARTED, case="finished", requeue=5.0),
    "finished, TTL over -> delete the job":
        Case(job({"phase": "Failed", "completionTime": rfc3339(NOW - timedelta(seconds=11))},
                 ttlSecondsAfterFinished=10), case="finished, ttl expired", actions=[DeleteJob]),
    "finished with a rank still running -> stop it":
        Case(job({"phase": "Failed", "completionTime": EARLIER}), pods=[pod(1)],
             case="finished", actions=[DeletePods]),
    "pods of another job with the same name (old uid) are ignored":
        Case(job(), pods=[PodView("demo-1-0", "demo", 1, 0, "other-uid", "Running")],
             case="start", actions=[EnsureJobObjects, CreatePods]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    c = CASES[name]
    plan = decide(c.job, Observed(pods=tuple(c.pods), started_spec=c.started), NOW)
    assert plan.case == c.case
    assert [type(a) for a in plan.actions] == c.actions
    for key, value in c.status.items():
        assert plan.status.get(key) == value, (key, plan.status)
    if c.requeue is not None:
        assert plan.requeue_after == pytest.approx(c.requeue)


def test_running_job_with_no_change_writes_nothing():
    plan = decide(job(running(observedGeneration=1, conditions=[])), Observed(
        pods=(pod(0), pod(1)), started_spec=STARTED), NOW)
    # Only the Running condition appears once; a second decision on the result is a no-op.
    settled = job({**running(observedGeneration=1), **plan.status})
    again = decide(settled, Observed(pods=(pod(0), pod(1)), started_spec=STARTED), NOW)
    assert again.status == {} and again.actions == [] and again.events == []


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


def test_spec_edit_is_ignored_and_reported():
    current = job(running(), generation=2, trainingArguments={"max_steps": 9}, suspend=False)
    plan = decide(current, Observed((pod(0), pod(1)), STARTED), NOW)
    cond = next(c for c in plan.status["conditions"] if c["type"] == "SpecChangeIgnored")
    assert cond["status"] == "True" and "trainingArguments" in cond["message"]
    assert [e.reason for e in plan.events] == ["SpecChangeIgnored"]
    assert plan.actions == []  # still the started spec: nothing restarts


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
