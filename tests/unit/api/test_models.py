"""Behaviour of the API models beyond field-level validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ftjob_api import api
from ftjob_api.manifests import load_text


def spec(**overrides):
    body = {"task": "causal-lm", "model": {"path": "/models/m"},
            "dataset": {"files": {"train": "/d/train.jsonl"}}}
    body.update(overrides)
    return api.parse_spec(body)


def test_defaults_are_what_users_expect():
    s = spec()
    assert s.resources.nodes == 1 and s.resources.gpus_per_node == 0
    assert s.restart_policy.max_restarts == 3
    assert s.storage.reclaim_policy == "Retain"
    assert s.suspend is False
    assert s.dataset.shuffle_seed == 42


def test_camel_case_aliases_round_trip():
    s = spec(restartPolicy={"maxRestarts": 5, "backoffSeconds": 1})
    dumped = s.model_dump(by_alias=True, exclude_none=True)
    assert dumped["restartPolicy"]["maxRestarts"] == 5
    assert api.parse_spec(dumped) == s


def test_processes_per_node():
    assert spec().resources.processes_per_node == 1
    assert spec(resources={"gpusPerNode": 8}).resources.processes_per_node == 8
    assert spec(resources={"procsPerNode": 2}).resources.world_size == 2
    assert spec(resources={"nodes": 2, "gpusPerNode": 4}).resources.world_size == 8


def test_access_modes_follow_the_node_count():
    assert spec().storage.effective_access_modes(1) == ["ReadWriteOnce"]
    assert spec().storage.effective_access_modes(3) == ["ReadWriteMany"]
    s = spec(storage={"accessModes": ["ReadWriteOncePod"]})
    assert s.storage.effective_access_modes(1) == ["ReadWriteOncePod"]


def test_eval_and_test_splits_resolve():
    s = spec(dataset={"files": {"train": "/t.csv", "validation": "/v.csv", "test": "/x.csv"}})
    assert s.dataset.has_eval_data
    assert s.dataset.resolved_eval_split == "validation"
    assert s.dataset.resolved_test_split == "test"
    s = spec(dataset={"name": "klue", "config": "ynat", "evalFraction": 0.1})
    assert s.dataset.has_eval_data and s.dataset.resolved_eval_split is None
    assert not spec().dataset.has_eval_data


def test_status_parses_what_the_operator_and_trainer_write():
    status = api.FineTuneJobStatus.model_validate({
        "phase": "Running", "restarts": 1, "attempt": 2,
        "conditions": [{"type": "Running", "status": "True", "reason": "AllPodsRunning",
                        "observedGeneration": 1}],
        "progress": {"globalStep": 40, "maxSteps": 100, "percent": 40.0, "loss": 0.71,
                     "evalMetrics": {"eval_accuracy": 0.9}},
        "checkpoint": {"latest": {"step": 40, "path": "/output/checkpoint-40"},
                       "resumedFromStep": 20},
    })
    assert status.phase == "Running"
    assert status.checkpoint.latest.step == 40
    with pytest.raises(ValidationError):
        api.FineTuneJobStatus.model_validate({"phase": "Exploded"})


def test_yaml_reads_exponent_floats_like_kubectl():
    (doc,) = load_text("spec:\n  lr: 5e-5\n  quoted: '5e-5'\n  n: 10\n", "x.yaml")
    assert doc.body["spec"] == {"lr": 5e-5, "quoted": "5e-5", "n": 10}
