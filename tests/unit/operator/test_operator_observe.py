"""observe.py: pods as the API shows them -> PodView -> failure class."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ftjob_api import contract, naming
from ftjob_operator.observe import (classify_pod_failure, parse_termination, pod_view,
                                    started_spec_from_config_map, success_summary)


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
    assert started_spec_from_config_map(cm, "u1") == {"task": "x"}
    assert started_spec_from_config_map(cm, "u2") is None
    assert started_spec_from_config_map({"data": {"job.json": "{"}}) is None
