"""The export step's pure parts: what is pushed, `--push` as spec.output.oci, the local
run's credentials; and `ftjob-export`'s exit code and termination message for a job whose
output has no trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ftjob_api import api, contract
from ftjob_trainer import local
from ftjob_trainer.delivery import export


def test_the_merged_model_is_pushed_when_a_merge_was_asked_for(tmp_path):
    assert export.pushed_folder(tmp_path, api.OutputSpec(merge_adapter=True)) == (
        tmp_path / contract.MERGED_DIR_NAME)
    assert export.pushed_folder(tmp_path, api.OutputSpec()) == tmp_path / "final"


@pytest.mark.parametrize("reference, target", [
    ("localhost:5000/demo/headlines:v1",
     {"repository": "localhost:5000/demo/headlines", "tag": "v1", "plainHTTP": False}),
    ("localhost:5000/demo/headlines",
     {"repository": "localhost:5000/demo/headlines", "plainHTTP": False}),
    ("oci://registry.example.com/team/m:2",
     {"repository": "registry.example.com/team/m", "tag": "2", "plainHTTP": False}),
])
def test_push_targets(reference, target):
    assert local.push_target(reference) == (target, "")


@pytest.mark.parametrize("reference, says", [
    ("team/model:v1", "'team' is not a registry host"),
    ("Registry.example.com/Team/M", "must be lowercase"),
    ("http://localhost:5000/x", "drop the scheme http://"),
    ("localhost:5000", "needs a repository path"),
])
def test_push_targets_refused_say_why(reference, says):
    target, why = local.push_target(reference)
    assert target is None and why.startswith(f"--push {reference}: ") and says in why, why


def test_local_credentials_come_from_the_env_or_docker_login(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert local.local_push_config({}) is None
    (tmp_path / ".docker").mkdir()
    (tmp_path / ".docker" / "config.json").write_text("{}")
    assert local.local_push_config({}) == str(tmp_path / ".docker" / "config.json")
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "config.json").write_text("{}")
    assert local.local_push_config({"DOCKER_CONFIG": str(other)}) == str(other / "config.json")
    assert local.local_push_config({contract.ENV_PUSH_CONFIG: "/run/push.json"}) == (
        "/run/push.json")


def test_ftjob_export_without_a_trained_model_is_refused_with_a_message(tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"metadata": {"name": "j"}, "spec": {
        "task": "sequence-classification", "model": {"name": "bert-base-uncased"},
        "dataset": {"name": "glue"}, "output": {"gate": {"metric": "accuracy", "min": 0.5}}}}))
    log = tmp_path / "termination-log"
    code = export.main({contract.ENV_JOB_FILE: str(job), contract.ENV_OUTPUT_DIR: str(tmp_path),
                        contract.ENV_TERMINATION_LOG: str(log)})
    assert code == contract.ExitCode.EXPORT_REFUSED
    message = json.loads(log.read_text())
    assert message["message"].startswith(f"no trained model in {tmp_path / 'final'}")
    assert not (tmp_path / contract.OUTPUT_RESULT_FILE_NAME).exists()


def test_ftjob_export_with_an_unreadable_job_file_exits_with_a_message(tmp_path):
    log = tmp_path / "termination-log"
    code = export.main({contract.ENV_JOB_FILE: str(tmp_path / "absent.json"),
                        contract.ENV_OUTPUT_DIR: str(tmp_path),
                        contract.ENV_TERMINATION_LOG: str(log)})
    assert code == contract.ExitCode.UNKNOWN
    assert "absent.json" in json.loads(log.read_text())["message"]


def test_the_gate_result_as_status(tmp_path):
    from ftjob_trainer.delivery import gate

    spec_gate = api.QualityGate(metric="loss", max=0.5)
    checked = gate.check_gate({"eval_loss": 0.7}, "loss", max=0.5)
    assert api.to_patch(export.gate_status(spec_gate, checked)) == {
        "metric": "eval_loss", "value": 0.7, "bound": 0.5, "comparison": "max", "passed": False}


def test_the_goodput_the_operator_passes_reaches_the_card_or_is_left_out():
    goodput = {"productiveSeconds": 90.0, "wallSeconds": 120.0, "ratio": 0.75}
    assert export.goodput_from({contract.ENV_GOODPUT: json.dumps(goodput)}) == goodput
    assert export.goodput_from({contract.ENV_GOODPUT: ""}) is None
    assert export.goodput_from({}) is None
    assert export.goodput_from({contract.ENV_GOODPUT: "{not json"}) is None
    assert export.goodput_from({contract.ENV_GOODPUT: "[1, 2]"}) is None
