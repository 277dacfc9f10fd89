"""Pure pieces of the trainer: arguments, DeepSpeed config, paths, labels, job file, reporters."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from ftjob_api import api
from ftjob_trainer import trainer_arguments, data, job, local, modeling
from ftjob_trainer.exits import InvalidData, InvalidModel, InvalidSpec
from ftjob_trainer.progress_reporters import KubernetesReporter
from ftjob_trainer.stopping import PreemptionCallback, StopRequest
from transformers import TrainerControl, TrainerState


def spec(**overrides):
    doc = {"task": "sequence-classification", "model": {"path": "/m"},
           "dataset": {"files": {"train": "t.jsonl", "validation": "v.jsonl"}},
           "trainingArguments": {"learning_rate": 1e-4, "save_total_limit": 2}}
    doc.update(overrides)
    return api.parse_spec(doc)


def test_settings_take_the_users_arguments_and_own_the_rest(tmp_path):
    kwargs, limit = trainer_arguments.settings(spec(), tmp_path, world_size=2, quiet_console=True)
    assert kwargs["learning_rate"] == 1e-4
    assert kwargs["output_dir"] == str(tmp_path)
    assert kwargs["ddp_backend"] == "gloo" and kwargs["use_cpu"] is True
    assert kwargs["disable_tqdm"] is True
    assert "save_total_limit" not in kwargs and limit == 2  # rotation after the marker
    gpu, _ = trainer_arguments.settings(spec(resources={"gpusPerNode": 1}), tmp_path, world_size=2)
    assert gpu["ddp_backend"] == "nccl" and gpu["use_cpu"] is False
    alone, _ = trainer_arguments.settings(spec(), tmp_path, world_size=1)
    assert "ddp_backend" not in alone


def test_generated_deepspeed_config():
    ds = api.DeepSpeedSpec(zero_stage=3)
    config = trainer_arguments.deepspeed_config(ds, on_gpu=False, config_file=None)
    assert config["zero_optimization"]["stage"] == 3
    assert config["optimizer"]["params"]["torch_adam"] is True
    assert config["train_micro_batch_size_per_gpu"] == "auto"
    on_gpu = trainer_arguments.deepspeed_config(api.DeepSpeedSpec(zero_stage=2, offload_optimizer=True),
                                        on_gpu=True, config_file=None)
    assert "torch_adam" not in on_gpu["optimizer"]["params"]
    assert on_gpu["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    with pytest.raises(InvalidSpec, match="spec.deepspeed.configMapRef"):
        trainer_arguments.deepspeed_config(api.DeepSpeedSpec(config_map_ref={"name": "a", "key": "b"}),
                                   on_gpu=False, config_file=None)


def test_pkg_and_relative_model_paths(tmp_path):
    path = modeling.resolve_model_path("pkg://ftjob_trainer/x")
    assert path == Path(modeling.__file__).parent / "x"
    assert modeling.resolve_model_path("models/a", tmp_path) == tmp_path / "models/a"
    with pytest.raises(InvalidModel, match="package 'no_such_pkg' is not installed"):
        modeling.resolve_model_path("pkg://no_such_pkg/model")


def test_local_paths_resolve_against_the_manifest_folder(tmp_path):
    raw = {"model": {"path": "models/m"},
           "dataset": {"files": {"train": "data/t.jsonl", "validation": "/abs/v.jsonl"}}}
    resolved = local.resolve_paths(raw, tmp_path)
    assert resolved["model"]["path"] == str(tmp_path / "models/m")
    assert resolved["dataset"]["files"] == {"train": str(tmp_path / "data/t.jsonl"),
                                            "validation": "/abs/v.jsonl"}
    assert raw["model"]["path"] == "models/m"  # the input is not changed
    pkg = local.resolve_paths({"model": {"path": "pkg://p/model"}}, tmp_path)
    assert pkg["model"]["path"] == "pkg://p/model"


def test_run_local_rejects_an_invalid_manifest_with_field_paths(tmp_path, capsys):
    manifest = tmp_path / "job.yaml"
    manifest.write_text("apiVersion: finetune.dev/v1alpha1\nkind: FineTuneJob\nmetadata: {name: x}\n"
                        "spec: {task: seq2seq, model: {path: /m}, dataset: {files: {train: t.jsonl}}}\n")
    assert local.run_local(str(manifest)) == 2
    assert f"{manifest}: spec.dataset.targetColumn:" in capsys.readouterr().out


@pytest.mark.parametrize("monitoring, want", [
    ({"metricsPort": 9400, "progressIntervalSeconds": 2},
     {"FTJOB_METRICS_PORT": "9400", "FTJOB_PROGRESS_INTERVAL": "2"}),
    ({}, {"FTJOB_METRICS_PORT": None, "FTJOB_PROGRESS_INTERVAL": None}),
])
def test_run_local_passes_spec_monitoring_to_the_trainer(tmp_path, monkeypatch, monitoring, want):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(json.dumps({
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "x"},
        "spec": {"task": "causal-lm", "model": {"path": "/m"},
                 "dataset": {"files": {"train": "t.jsonl"}}, "monitoring": monitoring}}))
    for name in want:
        monkeypatch.delenv(name, raising=False)
    seen = {}

    def run(argv, env):
        seen.update(env)
        return SimpleNamespace(summary={"status": "succeeded", "globalStep": 1}, exit_code=0)

    monkeypatch.setattr(local.launch, "run", run)
    assert local.run_local(str(manifest), output=str(tmp_path / "out")) == 0
    assert {name: seen.get(name) for name in want} == want


def test_describe_names_accuracy_and_the_saved_model():
    text = local.describe({"status": "succeeded", "globalStep": 9, "finalModel": "/o/final",
                           "metrics": {"eval_accuracy": 0.8125}})
    assert "eval_accuracy: 0.8125" in text and "saved model: /o/final" in text
    searched = local.describe({"status": "succeeded", "globalStep": 9, "finalModel": "/o/final",
                               "search": {"trials": "4/4", "bestTrial": 1, "bestValue": 0.68899,
                                          "bestParams": {"learning_rate": 0.0056776,
                                                         "lr_scheduler_type": "cosine"}}})
    assert ("search: 4/4 trials finished; best trial 1 (0.6890) with learning_rate=0.005678, "
            "lr_scheduler_type=cosine; the final model trained with these") in searched
    stopped = local.describe({"status": "failed", "exitCode": 30, "reason": "Preempted",
                              "message": "m", "globalStep": 41})
    assert stopped.startswith("stopped at step 41") and "again to resume" in stopped
    failed = local.describe({"status": "failed", "exitCode": 11, "reason": "InvalidData",
                             "message": "spec.dataset.textColumn: ..."})
    assert failed == "failed: InvalidData (exit 11): spec.dataset.textColumn: ..."


def test_job_context_from_file_and_environment(tmp_path):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"metadata": {"name": "j", "namespace": "ns", "uid": "u"},
                                    "spec": {"task": "causal-lm", "model": {"name": "gpt2"},
                                             "dataset": {"name": "x"}}}))
    ctx = job.load_context({"FTJOB_JOB_FILE": str(job_file), "FTJOB_OUTPUT_DIR": "/out",
                            "FTJOB_REPORTER": "kubernetes", "FTJOB_PROGRESS_INTERVAL": "2.5"})
    assert (ctx.name, ctx.namespace) == ("j", "ns")
    assert ctx.output_dir == Path("/out") and ctx.progress_interval == 2.5
    assert ctx.spec.task == "causal-lm"
    with pytest.raises(InvalidSpec, match="FTJOB_REPORTER='loud'"):
        job.load_context({"FTJOB_JOB_FILE": str(job_file), "FTJOB_REPORTER": "loud"})
    with pytest.raises(InvalidSpec, match="cannot read the job file"):
        job.load_context({"FTJOB_JOB_FILE": str(tmp_path / "absent.json")})


def _splits(train, evaluation=None):
    return data.Splits(train, evaluation, None, {"train": "train.jsonl", "eval": "val.jsonl"})


def test_labels_from_classlabel_strings_and_integers():
    import datasets

    features = datasets.Features({"label": datasets.ClassLabel(names=["neg", "pos"])})
    with_names = datasets.Dataset.from_dict({"label": [0, 1, 1]}, features=features)
    assert data.infer_labels(_splits(with_names), "label").names == ["neg", "pos"]
    strings = datasets.Dataset.from_dict({"label": ["b", "a", "b"]})
    labels = data.infer_labels(_splits(strings), "label")
    assert labels.names == ["a", "b"] and labels.encode == {"a": 0, "b": 1}
    unseen = datasets.Dataset.from_dict({"label": ["c"]})
    with pytest.raises(InvalidData, match="label 'c' does not occur in the train split"):
        data.infer_labels(_splits(strings, unseen), "label")
    with pytest.raises(InvalidData, match="only 1 class"):
        data.infer_labels(_splits(datasets.Dataset.from_dict({"label": [0, 0]})), "label")


def test_eval_carve_out_and_caps_are_seeded(tmp_path):
    rows = tmp_path / "t.jsonl"
    rows.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(100)))
    ds = api.DatasetSource(files={"train": str(rows)}, eval_fraction=0.2, max_train_samples=50,
                           shuffle_seed=3)
    first, second = data.load_splits(ds), data.load_splits(ds)
    assert len(first.eval) == 20 and len(first.train) == 50
    assert first.eval["text"] == second.eval["text"] and first.train["text"] == second.train["text"]
    other = data.load_splits(ds.model_copy(update={"shuffle_seed": 4}))
    assert other.eval["text"] != first.eval["text"]


class FakeCustomObjects:
    def __init__(self, fail=False):
        self.calls = []
        self.fail = fail

    def patch_namespaced_custom_object_status(self, **kwargs):
        if self.fail:
            raise ConnectionError("apiserver down")
        self.calls.append(kwargs)


def test_kubernetes_reporter_merge_patches_only_its_own_status():
    reporter = KubernetesReporter("job-a", "team")
    reporter._api = FakeCustomObjects()
    reporter.report({"globalStep": 3}, {"resumedFromStep": 0})
    call = reporter._api.calls[0]
    assert call["_content_type"] == "application/merge-patch+json"
    assert (call["group"], call["version"], call["plural"]) == ("finetune.dev", "v1alpha1", "finetunejobs")
    assert (call["namespace"], call["name"]) == ("team", "job-a")
    assert call["body"] == {"status": {"progress": {"globalStep": 3},
                                       "checkpoint": {"resumedFromStep": 0}}}


def test_kubernetes_reporter_logs_errors_and_never_raises(caplog):
    reporter = KubernetesReporter("job-a", "team")
    reporter._api = FakeCustomObjects(fail=True)
    reporter.report({"globalStep": 3}, None)
    assert "could not patch team/job-a" in caplog.text


def test_preemption_saves_the_current_step_once_every_rank_agrees(tmp_path):
    request = StopRequest(tmp_path / "stop")
    seen = []

    def agree(local):  # another rank was signalled: the MAX is 1 even when ours is 0
        seen.append(local)
        return len(seen) >= 3

    callback = PreemptionCallback(request, agree_fn=agree)
    state, control = TrainerState(), TrainerControl()
    for step in (1, 2, 3):
        state.global_step = step
        control = callback.on_step_end(SimpleNamespace(), state, control)
    assert seen == [False, False, False]
    assert callback.stopped_at == 3 and control.should_save and control.should_training_stop
    (tmp_path / "stop").touch()
    assert request.requested


@pytest.mark.parametrize(("message", "permanent"), [
    ("--load_best_model_at_end requires the save and eval strategy to match", True),
    ("ProcessGroupNCCL is only supported with GPUs, no GPUs found!", False),
    ("Found no NVIDIA driver on your system", False),
])
def test_trainingarguments_errors_from_the_node_are_not_spec_errors(monkeypatch, tmp_path,
                                                                    message, permanent):
    """TrainingArguments also sets up devices: a broken GPU node must stay retryable."""
    import transformers

    def refuse(**_kwargs):
        raise ValueError(message)

    monkeypatch.setattr(transformers, "TrainingArguments", refuse)
    if permanent:
        with pytest.raises(InvalidSpec, match="spec.trainingArguments: --load_best"):
            trainer_arguments.build(spec(), tmp_path)
    else:
        with pytest.raises(ValueError, match=message[:20]) as caught:
            trainer_arguments.build(spec(), tmp_path)
        assert not isinstance(caught.value, InvalidSpec)
