"""decide(job, observed, now): one table row per named case of the state machine."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ftjob_operator.observe import Observed, PodView, Refusal
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
POLICY = {"maxRestarts": 2, "backoffSeconds": 10, "stallTimeoutSeconds": 60,
          "startupTimeoutSeconds": 300, "evaluationTimeoutSeconds": 600}
RUNNING_SINCE = NOW - timedelta(seconds=100)


def running_attempt(attempt: int = 1, progress: dict[str, Any] | None = None,
                    **extra: Any) -> dict[str, Any]:
    """A settled Running status of `attempt` (what the operator wrote), with `progress`."""
    status = {**running(attempt), "observedGeneration": 1,
              "message": f"attempt {attempt}: 2 pod(s) running",
              "conditions": [{"type": "Running", "status": "True", "reason": "AllPodsRunning",
                              "message": f"attempt {attempt}: 2 pod(s) running",
                              "lastTransitionTime": rfc3339(RUNNING_SINCE),
                              "observedGeneration": 1}],
              "attempts": [{"attempt": a, "startTime": EARLIER} for a in range(1, attempt + 1)]}
    if progress is not None:
        status["progress"] = progress
    status.update(extra)
    return status




@dataclass
class Case:
    job: JobState
    pods: list[PodView] = field(default_factory=list)
    started: dict[str, Any] | None = None
    case: str = ""
    actions: list[type] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # expected values in the patch
    writes: set[str] = field(default_factory=set)  # exactly the status keys it patches
    events: list[str] = field(default_factory=list)  # exactly these event reasons
    requeue: float | None = None  # exactly (None: no timer)
    refusal: Refusal | None = None  # the API server refuses to create the pods


REFUSED = ('create Pod ns/demo-1-0: HTTP 403 Forbidden: pods "demo-1-0" is forbidden: '
           'pod rejected: RuntimeClass "gvisr" not found')
OK = json.dumps({"status": "succeeded", "globalStep": 50,
                 "metrics": {"eval_accuracy": 0.9, "note": "x"}, "finalModel": "/output/final"})

CASES: dict[str, Case] = {
    "no children yet -> start attempt 1":
        Case(job(), case="start", actions=[EnsureJobObjects, CreatePods],
             status={"phase": "Pending", "attempt": 1, "startTime": rfc3339(NOW)},
             writes={"attempt", "attempts", "conditions", "message", "observedGeneration", "phase",
                    "startTime"}, events=["Started"]),
    "status written but pods missing (crash mid-create) -> create missing, ensure objects":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER}), pods=[pod(0, phase="Pending")],
             case="create missing pods", actions=[EnsureJobObjects, CreatePods],
             writes={"attempts", "conditions", "message", "observedGeneration"}, requeue=1795.0),
    "pods created before the status (crash) -> adopt that attempt":
        Case(job({"phase": "Restarting", "attempt": 1, "restarts": 1}),
             pods=[pod(0, 2, "Pending"), pod(1, 2, "Pending")], started=STARTED,
             case="pending", status={"attempt": 2, "phase": "Pending"},
             writes={"attempt", "attempts", "conditions", "message", "observedGeneration", "phase",
                    "startTime"}, requeue=1795.0),
    "some pods pending -> Pending":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER}),
             pods=[pod(0), pod(1, phase="Pending")], started=STARTED, case="pending",
             writes={"attempts", "conditions", "message", "observedGeneration"}, requeue=1795.0),
    "all pods running -> Running":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER}),
             pods=[pod(0), pod(1)], started=STARTED, case="running",
             status={"phase": "Running"},
             writes={"attempts", "conditions", "message", "observedGeneration", "phase"},
                 events=["Running"]),
    "running and nothing changed -> no write":
        Case(job(running_attempt()), pods=[pod(0), pod(1)], started=STARTED, case="running",
             requeue=3501.0),
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
                    "phase"}, events=["Restarted"]),
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
                 "phase"}, events=["Resumed"]),
    "created suspended -> no pods":
        Case(job(suspend=True), case="suspend", status={"phase": "Suspended"},
             writes={"conditions", "message", "observedGeneration", "phase"},
                 events=["Suspended"]),
    "invalid spec -> Failed InvalidSpec, nothing created":
        Case(job(task="seq2seq"), case="invalid spec", status={"phase": "Failed"},
             writes={"completionTime", "conditions", "message", "observedGeneration", "phase"},
                 events=["InvalidSpec"]),
    "past activeDeadlineSeconds -> Failed":
        Case(job(running(), activeDeadlineSeconds=50), pods=[pod(0), pod(1)], started=STARTED,
             case="deadline exceeded", actions=[DeletePods], status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["DeadlineExceeded"]),
    "before activeDeadlineSeconds -> requeue at the deadline":
        Case(job(running(), activeDeadlineSeconds=160), pods=[pod(0), pod(1)], started=STARTED,
             case="running", requeue=61.0,  # whole-second startTime: one second of slack
             writes={"attempts", "conditions", "message", "observedGeneration"}),
    "stuck pending past the limit -> Failed":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             pods=[pod(0), PodView("demo-1-1", "demo", 1, 1, "uid-1", "Pending",
                                   NOW - timedelta(seconds=31))],
             started=STARTED, case="pending timeout", actions=[DeletePods],
             status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["PendingTimeout"]),
    "pod creation refused within pendingTimeoutSeconds -> Pending, saying why":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             started=STARTED, refusal=Refusal(NOW - timedelta(seconds=10), REFUSED),
             case="create missing pods", actions=[CreatePods],
             writes={"attempts", "conditions", "message", "observedGeneration"},
             requeue=20.0),  # wakes when the refusals' allowance ends
    "pod creation refused past pendingTimeoutSeconds -> Failed":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             started=STARTED, refusal=Refusal(NOW - timedelta(seconds=30), REFUSED),
             case="pod creation rejected", status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["PodCreationRejected"]),
    "refused pod of rank 1 past the limit -> Failed, rank 0 deleted":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             pods=[pod(0, phase="Pending")], started=STARTED,
             refusal=Refusal(NOW - timedelta(seconds=31), REFUSED),
             case="pod creation rejected", actions=[DeletePods], status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["PodCreationRejected"]),
    "a stale refusal once every pod exists -> ignored":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             pods=[pod(0, phase="Pending"), pod(1, phase="Pending")], started=STARTED,
             refusal=Refusal(NOW - timedelta(seconds=31), REFUSED), case="pending",
             writes={"attempts", "conditions", "message", "observedGeneration"}, requeue=25.0),
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
    "pods of another job with the same name (old uid) are ignored":
        Case(job(), pods=[PodView("demo-1-0", "demo", 1, 0, "other-uid", "Running")],
             case="start", actions=[EnsureJobObjects, CreatePods],
             writes={"attempt", "attempts", "conditions", "message", "observedGeneration", "phase",
                 "startTime"}, events=["Started"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    c = CASES[name]
    plan = decide(c.job, Observed(pods=tuple(c.pods), started_spec=c.started,
                                  refusal=c.refusal), NOW)
    assert plan.case == c.case
    assert [type(a) for a in plan.actions] == c.actions
    for key, value in c.status.items():
        assert plan.status.get(key) == value, (key, plan.status)
    assert set(plan.status) == c.writes, plan.status
    assert [e.reason for e in plan.events] == c.events
    assert plan.requeue_after == (pytest.approx(c.requeue) if c.requeue is not None else None)


def test_refused_pod_creation_is_in_the_status_until_it_goes_through():
    pending = job({"phase": "Pending", "attempt": 1, "startTime": EARLIER, "conditions": []},
                  restartPolicy={"pendingTimeoutSeconds": 30})
    since = NOW - timedelta(seconds=10)
    plan = decide(pending, Observed((), STARTED, Refusal(since, REFUSED)), NOW)
    text = ("attempt 1: the API server has refused to create the pods since "
            f"{rfc3339(since)} (the job fails after pendingTimeoutSeconds, 30s): {REFUSED}")
    assert plan.status["message"] == text
    refused = next(c for c in plan.status["conditions"] if c["type"] == "PodCreationRejected")
    assert (refused["status"], refused["reason"], refused["message"]) == ("True", "ApiRejected",
                                                                         text)
    # The same refusal again: nothing new to write, the creates are retried.
    settled = job({**pending.status, **plan.status}, restartPolicy={"pendingTimeoutSeconds": 30})
    again = decide(settled, Observed((), STARTED, Refusal(since, REFUSED)),
                   NOW + timedelta(seconds=5))
    assert again.status == {} and [type(a) for a in again.actions] == [CreatePods]
    # The cause went away (the RuntimeClass was created): the pods exist, the job waits as usual.
    created = decide(settled, Observed((pod(0, phase="Pending"), pod(1, phase="Pending")),
                                       STARTED), NOW + timedelta(seconds=5))
    assert created.case == "pending" and created.status["message"] == \
        "attempt 1: waiting for 2 pod(s) to run"
    cleared = next(c for c in created.status["conditions"] if c["type"] == "PodCreationRejected")
    assert (cleared["status"], cleared["reason"]) == ("False", "PodsCreated")
    # Failed at the end of the allowance, naming the refusal.
    failed = decide(settled, Observed((), STARTED, Refusal(since, REFUSED)),
                    since + timedelta(seconds=30))
    assert failed.status["phase"] == "Failed"
    cond = next(c for c in failed.status["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "PodCreationRejected"
    assert cond["message"] == ("the API server refused to create the pods for longer than "
                               f"pendingTimeoutSeconds (30s): {REFUSED}")


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


# --------------------------------------------------------------------------- stall detection

def stepped(step: int, seconds_ago: float, attempt: int = 1, activity: str = "training"
            ) -> dict[str, Any]:
    return {"globalStep": step, "attempt": attempt, "activity": activity,
            "lastStepTime": rfc3339(NOW - timedelta(seconds=seconds_ago)),
            "updatedAt": rfc3339(NOW)}


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


def test_a_permanent_failure_records_the_node_once():
    failed = pod(1, phase="Failed", exit_code=10, node="node-b")
    plan = decide(job(running_attempt(1)), Observed((pod(0), failed), STARTED), NOW)
    record = plan.status["attempts"][0]
    assert plan.case == "permanent failure" and record["reason"] == "Failed"
    assert record["message"].endswith(" on node node-b")
    assert not plan.status["message"].endswith(" on node node-b")


def test_stall_is_judged_only_while_every_pod_runs():
    status = running_attempt(1, stepped(7, 600))
    plan = decide(job(status, restartPolicy=POLICY),
                  Observed((pod(0), pod(1, phase="Succeeded", exit_code=0)), STARTED), NOW)
    assert plan.case == "running" and plan.actions == []


# --------------------------------------------------------------------------- attempt history


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


@pytest.mark.parametrize("pods, reason", [
    ((pod(0, phase="Failed", exit_code=30), pod(1, phase="Failed", exit_code=21)), "Preempted"),
    ((pod(0, phase="Failed", exit_code=10), pod(1)), "Failed"),
    ((pod(0), pod(1, deleting=True, phase="Failed", exit_code=137)), "Failed"),
    ((pod(0),), "Deleted"),
], ids=["preempted", "permanent", "killed", "pod vanished"])
def test_the_record_names_how_the_attempt_ended(pods, reason):
    plan = decide(job(running_attempt(1)), Observed(pods, STARTED), NOW)
    assert plan.status["attempts"][0]["reason"] == reason


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


# --------------------------------------------------------------------------- suspend


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
