"""Objects from the cluster the operator did not write (or another client changed): the pure
readers never raise, so the job loop logs and keeps going instead of failing at each wake-up.

Before: a termination message of 4 kB of "[" raised RecursionError in parse_termination, a
metric of 400 digits raised OverflowError in success_summary, a pod whose labels or owner
references were not mappings raised AttributeError in pod_view, and status.attempt "abc" (or
conditions [1]) raised in decide at every wake-up of the job loop.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftjob_api import naming
from ftjob_operator.observe import (Observed, PodView, classify_pod_failure, parse_termination,
                                    pod_view, sane_status, started_spec_view,
                                    success_summary)
from ftjob_operator.plan import JobState
from ftjob_operator.reconcile import decide

FUZZ = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
SPEC = {"task": "sequence-classification", "model": {"path": "/m"},
        "dataset": {"files": {"train": "/d/train.jsonl"}},
        "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 10}}

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=3),
    max_leaves=15)


def test_termination_messages_that_are_not_the_trainers_json():
    assert parse_termination("[" * 4000) is None
    assert parse_termination("Error: CUDA failed\n{not json") is None
    assert parse_termination("\n\n") is None
    assert parse_termination('{"status": "failed"}') == {"status": "failed"}


def test_success_summary_keeps_only_what_the_status_can_hold():
    message = json.dumps({"metrics": {"a": 10**400, "b": 1e999, "c": 0.5, "d": True, "e": "x"},
                          "globalStep": "12", "finalModel": ["/out"]})
    view = PodView("demo-0-0", "demo", 0, 0, phase="Succeeded", termination_message=message)
    assert success_summary(view) == {"metrics": {"c": 0.5}, "globalStep": None,
                                     "finalModel": None}


@pytest.mark.parametrize("labels", [
    {naming.LABEL_JOB: "demo", naming.LABEL_ATTEMPT: "²", naming.LABEL_RANK: "0"},
    {naming.LABEL_JOB: "demo", naming.LABEL_ATTEMPT: "-1", naming.LABEL_RANK: "0"},
    {naming.LABEL_JOB: "demo", naming.LABEL_ATTEMPT: "1", naming.LABEL_RANK: "9" * 40},
    {naming.LABEL_JOB: ["demo"], naming.LABEL_ATTEMPT: "1", naming.LABEL_RANK: "0"},
    "app=other",
], ids=["superscript", "negative", "huge", "job not a string", "labels not a mapping"])
def test_pods_the_operator_did_not_create_are_ignored(labels):
    assert pod_view({"metadata": {"name": "x", "labels": labels}}) is None


def test_a_pod_with_odd_fields_is_read_as_far_as_it_goes():
    labels = naming.pod_labels("demo", 2, 1)
    view = pod_view({"metadata": {"name": "demo-2-1", "labels": labels, "ownerReferences": ["x"],
                                  "creationTimestamp": 5},
                     "status": {"phase": "Failed", "conditions": "bad",
                                "containerStatuses": [None, {"name": "trainer", "state": {
                                    "terminated": {"exitCode": "11", "message": {"a": 1}}}}]}})
    assert (view.attempt, view.rank, view.owner_uid, view.created_at) == (2, 1, None, None)
    assert (view.exit_code, view.termination_message) == (None, None)
    assert classify_pod_failure(view).kind == "retryable"


def test_config_map_with_garbage_is_not_a_started_spec():
    assert started_spec_view({"data": ["x"]}).spec() is None
    assert started_spec_view({"data": {"job.json": "[" * 5000}}).spec() is None
    assert started_spec_view(
        {"data": {"job.json": json.dumps({"metadata": "x", "spec": {}})}}).spec("uid") is None


def test_sane_status_drops_only_fields_of_the_wrong_shape():
    status = {"phase": "Running", "attempt": "abc", "restarts": 1, "conditions": [1, 2],
              "startTime": "2026-01-01T00:00:00Z", "otherTool": {"x": 1}}
    clean, dropped = sane_status(status)
    assert clean == {"phase": "Running", "restarts": 1, "startTime": "2026-01-01T00:00:00Z",
                     "otherTool": {"x": 1}}
    assert dropped == ["attempt", "conditions"]
    assert sane_status(None) == ({}, []) and sane_status("x") == ({}, ["status"])


def job_with(status: dict[str, Any]) -> JobState:
    return JobState("demo", "ns", "uid-1", 1, copy.deepcopy(SPEC), status)


def test_decide_reads_status_through_the_api_model_so_garbage_is_left_out():
    garbage = {"phase": "Running", "attempt": "abc", "startTime": "2026-01-01T00:00:00Z"}
    clean, dropped = sane_status(garbage)
    assert dropped == ["attempt"]
    raw = decide(job_with(garbage), Observed(), NOW)
    assert raw.case == decide(job_with(clean), Observed(), NOW).case == "start"


STATUS_KEYS = st.sampled_from(["phase", "message", "conditions", "restarts", "preemptions",
                               "attempt", "startTime", "completionTime", "observedGeneration",
                               "progress", "checkpoint", "metrics", "x"])
PHASES = st.sampled_from(["Pending", "Running", "Restarting", "Suspended", "Succeeded",
                          "Failed", "Nonsense"])


@settings(max_examples=300, **FUZZ)
@given(st.dictionaries(STATUS_KEYS, JSON | PHASES | st.integers(0, 5), max_size=6),
       st.lists(st.sampled_from(["Running", "Failed", "Succeeded", "Pending", "Unknown"]),
                max_size=3),
       st.one_of(st.none(), st.text(max_size=30), JSON.map(json.dumps)))
def test_decide_never_raises_on_a_sane_view_of_any_status(status, phases, message):
    clean, dropped = sane_status(status)
    assert set(clean) | set(dropped) == set(status)
    pods = tuple(PodView(f"demo-1-{r}", "demo", 1, r, owner_uid="uid-1", phase=p,
                         exit_code=1 if p == "Failed" else None, termination_message=message)
                 for r, p in enumerate(phases))
    plan = decide(job_with(clean), Observed(pods=pods, started_spec=copy.deepcopy(SPEC)), NOW)
    json.dumps(plan.status, allow_nan=False, default=str)


@settings(max_examples=300, **FUZZ)
@given(JSON)
def test_readers_never_raise_on_any_object(value):
    view = pod_view(value if isinstance(value, dict) else {"metadata": value, "status": value})
    if view is not None:
        classify_pod_failure(view)
        success_summary(view)
    started_spec_view(value if isinstance(value, dict) else {"data": value}).spec()
    parse_termination(json.dumps(value))
    sane_status(value)


RESULT_KEYS = st.sampled_from(["phase", "reference", "digest", "size", "gate", "pushedAt",
                               "message", "attempts", "x"])
OUTPUT_PHASES = st.sampled_from(["Pushed", "Ready", "Withheld", "Failed", "Pushing", "Nope"])


@settings(max_examples=200, **FUZZ)
@given(st.dictionaries(RESULT_KEYS, JSON | OUTPUT_PHASES, max_size=5),
       st.sampled_from(["Succeeded", "Failed", "Running", "Pending", "Unknown"]),
       st.one_of(st.none(), st.integers(-1, 300)),
       st.dictionaries(RESULT_KEYS, JSON | OUTPUT_PHASES, max_size=4))
def test_the_export_decision_never_raises_on_any_termination_message(message, phase, code,
                                                                      output):
    """spec.output's export pod says anything in its termination message, and status.output
    holds anything: the decision reads what it can, and its status patch is JSON."""
    clean, _ = sane_status({"phase": "Succeeded", "completionTime": "2026-01-01T11:00:00Z",
                            "output": output})
    spec = {**SPEC, "output": {"oci": {"repository": "registry.example.com/a/b"}}}
    view = PodView(naming.export_pod("demo", 1), "demo", 1, 0, owner_uid="uid-1", phase=phase,
                   exit_code=code, termination_message=json.dumps(message), role="export")
    plan = decide(JobState("demo", "ns", "uid-1", 1, spec, clean),
                  Observed(exports=(view,), started_spec=copy.deepcopy(spec)), NOW)
    json.dumps(plan.status, allow_nan=False, default=str)
