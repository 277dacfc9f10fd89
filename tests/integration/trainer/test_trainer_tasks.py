"""Each task trains under torchrun (2 processes, gloo), evaluates and saves a usable model."""

from __future__ import annotations

import json

from tests.integration.trainer.helpers import classification_spec, run_to_end
from ftjob_api.contract import ExitCode


def test_classification_trains_evaluates_and_saves(baseline, tiny):
    assert baseline.proc.returncode == 0, baseline.log()
    summary = baseline.summary()
    assert summary["status"] == "succeeded"
    assert summary["globalStep"] == 160
    assert summary["resumedFromStep"] == 0
    metrics = baseline.metrics()["metrics"]
    # Three balanced topics: chance is 1/3; the topic words make it learnable.
    assert metrics["eval_accuracy"] > 0.6, metrics
    assert summary["metrics"]["eval_accuracy"] == metrics["eval_accuracy"]
    assert 0 <= metrics["eval_f1"] <= 1

    final = baseline.output_dir / "final"
    assert summary["finalModel"] == str(final)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(final)
    AutoTokenizer.from_pretrained(final)
    assert model.config.num_labels == 3
    assert json.loads((final / "labels.json").read_text()) == ["economy", "science", "sports"]
    assert model.config.id2label[2] == "sports"


def test_causal_lm_trains_evaluates_and_saves(tiny, tmp_path):
    spec = {
        "task": "causal-lm",
        "model": {"path": str(tiny["gpt2"])},
        "dataset": {"files": {"train": str(tiny["lm_train"]), "validation": str(tiny["lm_val"])},
                    "maxLength": 32},
        "trainingArguments": {"max_steps": 30, "per_device_train_batch_size": 8,
                              "learning_rate": 3e-3, "logging_steps": 5, "save_steps": 15},
    }
    run = run_to_end(tmp_path, spec)
    assert run.proc.returncode == 0, run.log()
    metrics = run.metrics()["metrics"]
    assert metrics["eval_perplexity"] > 1
    # Training lowered the loss on held-out text below the untrained model's ln(vocab).
    import math

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run.output_dir / "final")
    assert metrics["eval_loss"] < math.log(model.config.vocab_size)


def test_seq2seq_trains_evaluates_predicts_and_saves(tiny, tmp_path):
    spec = {
        "task": "seq2seq",
        "model": {"path": str(tiny["t5"])},
        "dataset": {"files": {"train": str(tiny["s2s_train"]), "validation": str(tiny["s2s_val"]),
                              "test": str(tiny["s2s_val"])},
                    "textColumn": "source", "targetColumn": "target", "maxLength": 32},
        "trainingArguments": {"max_steps": 30, "per_device_train_batch_size": 8,
                              "learning_rate": 3e-3, "logging_steps": 5, "save_steps": 15,
                              "predict_with_generate": True, "generation_max_length": 8},
    }
    run = run_to_end(tmp_path, spec)
    assert run.proc.returncode == 0, run.log()
    metrics = run.metrics()["metrics"]
    assert "eval_loss" in metrics and "test_loss" in metrics
    test_results = json.loads((run.output_dir / "test_results.json").read_text())
    assert test_results["test_samples"] == 64 and test_results["test_loss"] == metrics["test_loss"]
    from transformers import AutoModelForSeq2SeqLM

    AutoModelForSeq2SeqLM.from_pretrained(run.output_dir / "final")


def test_missing_column_fails_permanently_through_the_launcher(tiny, tmp_path):
    spec = classification_spec(tiny)
    spec["dataset"]["textColumn"] = "headline"
    run = run_to_end(tmp_path, spec)
    assert run.proc.returncode == ExitCode.INVALID_DATA, run.log()
    summary = run.summary()
    assert summary["status"] == "failed"
    assert summary["reason"] == "InvalidData"
    assert "spec.dataset.textColumn" in summary["message"]
    assert "'headline'" in summary["message"] and str(tiny["cls_train"]) in summary["message"]
