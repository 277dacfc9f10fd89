"""observe.py: pods as the API shows them -> PodView -> failure class."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ftjob_api import contract, naming
from ftjob_operator.observe import (PodView, Refusal, Refusals, classify_pod_failure, observe,
                                    parse_termination, pod_view, started_spec_view,
                                    started_view,
                                    success_summary)
from ftjob_operator.plan import JobRef


def pod_body(phase: str = "Running", exit_code: int | None = None, reason: str | None = None,
             message: str | None = None, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "demo-2-1", "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": naming.pod_labels("demo", 2, 1),
                     "ownerReferences": [{"uid": "u1", "controller": True}]},
        "status": {"phase": phase, **status},
    }
    if exit_code is not None:
        term = {"exitCode": exit_code, "reason": reason or "Error"}
        if message is not None:
            term["message"] = message
        body["status"]["containerStatuses"] = [{"name": "trainer", "state": {"terminated": term}}]
    return body


def test_pod_view_reads_labels_owner_and_termination():
    view = pod_view(pod_body("Failed", 137, "OOMKilled", "boom"))
    assert (view.job, view.attempt, view.rank, view.owner_uid) == ("demo", 2, 1, "u1")
    assert (view.exit_code, view.container_reason, view.termination_message) == (137, "OOMKilled",
                                                                                 "boom")


def test_pod_without_ftjob_labels_is_ignored():
    body = pod_body()
    body["metadata"]["labels"] = {"app": "other"}
    assert pod_view(body) is None


FAILED = json.dumps({"status": "failed", "exitCode": 11, "reason": "InvalidData",
                     "message": "column 'label' missing"})

OWNED = json.dumps({"status": "failed", "exitCode": 13, "reason": "OutputOwnedByOtherJob",
                    "message": "/output holds the output of another job (demo, uid u0)"})

CLASSES = {
    "running": (pod_body(), None),
    "succeeded": (pod_body("Succeeded", 0), None),
    "invalid data (permanent)": (pod_body("Failed", 11, message=FAILED),
                                 ("permanent", "InvalidData")),
    "invalid spec without message": (pod_body("Failed", 10), ("permanent", "InvalidSpec")),
    "preempted exit code": (pod_body("Failed", contract.ExitCode.PREEMPTED),
                            ("preempted", "Preempted")),
    "disruption condition wins over exit code": (
        pod_body("Failed", 1, conditions=[{"type": "DisruptionTarget", "status": "True",
                                           "reason": "EvictionByEvictionAPI"}]),
        ("preempted", "EvictionByEvictionAPI")),
    "disruption while still running": (
        pod_body("Running", conditions=[{"type": "DisruptionTarget", "status": "True",
                                         "reason": "PreemptionByScheduler"}]),
        ("preempted", "PreemptionByScheduler")),
    "oom killed": (pod_body("Failed", 137, "OOMKilled"), ("retryable", "OOMKilled")),
    "evicted by kubelet": (pod_body("Failed", **{"message": None}) | {"status": {
        "phase": "Failed", "reason": "Evicted", "message": "low on memory"}},
        ("retryable", "Evicted")),
    "node lost (Unknown)": (pod_body("Unknown"), ("retryable", "NodeLost")),
    "nccl timeout": (pod_body("Failed", contract.ExitCode.DISTRIBUTED_TIMEOUT),
                     ("retryable", "DistributedTimeout")),
    "killed by signal": (pod_body("Failed", 139), ("retryable", "Signal11")),
    "garbage termination message": (pod_body("Failed", 1, message="Traceback ...\nnot json"),
                                    ("retryable", "Error")),
    "output folder of another job (permanent)": (
        pod_body("Failed", contract.ExitCode.OUTPUT_OWNED_BY_OTHER_JOB, message=OWNED),
        ("permanent", "OutputOwnedByOtherJob")),
    "output folder of another job, no message": (
        pod_body("Failed", contract.ExitCode.OUTPUT_OWNED_BY_OTHER_JOB),
        ("permanent", "OutputOwnedByOtherJob")),
    "another job's job file (retryable)": (
        pod_body("Failed", contract.ExitCode.JOB_FILE_REPLACED),
        ("retryable", "JobFileReplaced")),
}


@pytest.mark.parametrize("name", list(CLASSES))
def test_classify_pod_failure(name):
    body, expected = CLASSES[name]
    failure = classify_pod_failure(pod_view(body))
    assert (None if failure is None else (failure.kind, failure.reason)) == expected


def test_permanent_failure_carries_trainer_message():
    failure = classify_pod_failure(pod_view(pod_body("Failed", 11, message=FAILED)))
    assert failure.describe() == ("rank 1 (pod demo-2-1) failed: InvalidData, exit code 11: "
                                  "column 'label' missing")


@pytest.mark.parametrize("raw,expected", [
    (None, None), ("", None), ("not json", None), ("[1, 2]", None),
    ('{"status": "succeeded"}', {"status": "succeeded"}),
    ('log line\n{"status": "failed"}', {"status": "failed"}),
])
def test_parse_termination_is_robust(raw, expected):
    assert parse_termination(raw) == expected


def test_success_summary_keeps_numeric_metrics_only():
    msg = json.dumps({"status": "succeeded", "globalStep": 7, "finalModel": "/output/final",
                      "metrics": {"eval_loss": 0.5, "epoch": 2, "flag": True, "name": "x"}})
    view = pod_view(pod_body("Succeeded", 0, message=msg))
    assert success_summary(view) == {"metrics": {"eval_loss": 0.5, "epoch": 2.0},
                                     "globalStep": 7, "finalModel": "/output/final"}


def test_started_spec_checks_the_job_uid():
    cm = {"data": {"job.json": json.dumps({"metadata": {"uid": "u1"}, "spec": {"task": "x"}})}}
    assert started_spec_view(cm).spec("u1") == {"task": "x"}
    assert started_spec_view(cm).spec("u2") is None
    assert started_spec_view({"data": {"job.json": "{"}}).spec() is None
    # Of a job name's views (a job deleted and made again), the one of this job's uid.
    other = {"data": {"job.json": json.dumps({"metadata": {"uid": "u2"}, "spec": {}})}}
    views = [started_spec_view(cm), started_spec_view(other)]
    assert started_view(views, "u1") is views[0] and started_view(views, "u3") is None


def test_the_index_keeps_a_started_spec_view_with_its_digest():
    document = {"metadata": {"uid": "u1", "name": "demo"}, "spec": {"task": "x", "suspend": True}}
    cm = {"metadata": {"name": "demo-job", "managedFields": [{"manager": "m"}] * 20},
          "data": {"job.json": json.dumps(document)}}
    view = started_spec_view(cm)
    assert view.data == cm["data"] and view.uid == "u1"
    assert view.digest == contract.job_digest(document)
    # Each reader gets its own copy: a decision changing it changes nobody else's.
    first = view.document("u1")
    first["spec"]["task"] = "changed"
    assert view.document("u1") == document and view.document() == document
    assert view.document("u2") is None
    assert view.spec("u1") == document["spec"]
    for unreadable in ({"data": {"job.json": "{"}}, {"data": {"job.json": "[1]"}},
                       {"data": ["x"]}, {}):
        assert started_spec_view(unreadable).digest is None
        assert started_spec_view(unreadable).document() is None


def test_refusals_keep_the_first_time_and_the_latest_message():
    first = datetime(2026, 1, 1, tzinfo=timezone.utc)
    refusals = Refusals()
    assert refusals.current is None
    assert refusals.refused("quota", first) == Refusal(first, "quota")
    assert refusals.refused("RuntimeClass", first + timedelta(seconds=9)) == Refusal(
        first, "RuntimeClass")
    assert refusals.conflicted("ServiceAccount", first) == Refusal(first, "ServiceAccount")
    assert refusals.conflicted("Pod", first + timedelta(seconds=5)) == Refusal(first, "Pod")
    refusals.cleared()
    assert refusals.current is None and refusals.conflict is None
    later = first + timedelta(seconds=60)
    assert refusals.refused("quota", later).since == later  # a new allowance


def test_observe_reads_the_indexes_and_the_refusal():
    job = JobRef("demo", "ns", "u1")
    key = ("ns", "demo")
    mine = PodView(name="demo-1-0", job="demo", attempt=1, rank=0)
    other = PodView(name="demo-1-0", job="demo", attempt=1, rank=0, owner_uid="x")
    stale = {"data": {"job.json": json.dumps({"metadata": {"uid": "u0"}, "spec": {"a": 1}})}}
    current = {"data": {"job.json": json.dumps({"metadata": {"uid": "u1"}, "spec": {"a": 2}})}}
    refusals = Refusals()
    since = datetime(2026, 1, 1, tzinfo=timezone.utc)
    refusals.refused("quota", since)
    seen = observe(job, {key: [mine], ("ns", "other"): [other]},
                   {key: [started_spec_view(current), started_spec_view(stale)]}, refusals)
    assert seen.pods == (mine,)
    assert seen.started_spec == {"a": 2}  # the ConfigMap of this job's uid
    assert seen.started_document == {"metadata": {"uid": "u1"}, "spec": {"a": 2}}
    assert seen.refusal == Refusal(since, "quota")
    assert observe(job, {}, {}).refusal is None
    assert seen.started_digest == contract.job_digest({"metadata": {"uid": "u1"}, "spec": {"a": 2}})
    assert observe(job, {}, {key: [started_spec_view(stale)]}).started_spec is None
