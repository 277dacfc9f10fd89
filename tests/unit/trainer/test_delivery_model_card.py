"""The model card: Hugging Face's format (YAML front matter + markdown), from the output
folder and the job's spec."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from ftjob_trainer.delivery import merge
from ftjob_trainer.delivery.gate import check_gate
from ftjob_trainer.delivery.model_card import (CARD_FILE, render_model_card,
                                               write_model_cards)

METRICS = {
    "epoch": 3.0, "total_flos": 1.3e8, "train_loss": 0.4123456789, "train_runtime": 12.5,
    "train_samples": 384, "eval_accuracy": 0.9312345678901234, "eval_f1": 0.91,
    "eval_loss": 0.2234, "eval_runtime": 0.4, "eval_samples": 96,
    "eval_samples_per_second": 240.0, "eval_steps_per_second": 30.0,
    "test_accuracy": 0.88, "test_loss": 0.3, "test_samples": 50,
}
HUB_DATASET = {"name": "klue", "config": "ynat", "textColumn": "title",
               "evalSplit": "validation", "testSplit": "test", "maxTrainSamples": 10000}
ARGS = {"num_train_epochs": 3, "learning_rate": 5e-5, "eval_strategy": "epoch", "bf16": True,
        "optim": "adamw|torch"}
ATTEMPTS = [{"startedAt": "2026-01-02T03:04:05Z", "resumedFromStep": 0, "worldSize": 16},
            {"startedAt": "2026-01-02T05:00:00Z", "resumedFromStep": 840, "worldSize": 16}]
GOODPUT = {"productiveSeconds": 3000.0, "wallSeconds": 4000.0, "ratio": 0.75,
           "stepsLost": 12, "attemptsFolded": 0}


def card(**overrides):
    facts = dict(base_model="klue/roberta-base", task="sequence-classification",
                 metrics=METRICS, training_arguments=ARGS, dataset=HUB_DATASET,
                 peft={"r": 16, "alpha": 32}, adapter=True, model_name="klue-ynat",
                 global_step=1260, labels=["culture", "economy", "sports"],
                 attempts=ATTEMPTS, goodput=GOODPUT)
    facts.update(overrides)
    return render_model_card(**facts)


def split(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def index_metrics(front: dict) -> dict[str, dict[str, float]]:
    """split -> {metric name: value} of the model-index."""
    [entry] = front["model-index"]
    return {r["dataset"]["split"]: {m["name"]: m["value"] for m in r["metrics"]}
            for r in entry["results"]}


def test_front_matter_is_yaml_with_the_base_model_and_the_metrics_given():
    front, _ = split(card())
    assert front["base_model"] == "klue/roberta-base"
    assert front["library_name"] == "peft" and front["base_model_relation"] == "adapter"
    assert front["pipeline_tag"] == "text-classification"
    assert front["tags"] == ["ftjob", "sequence-classification", "lora"]
    assert front["datasets"] == ["klue"]
    assert front["model-index"][0]["name"] == "klue-ynat"
    # The evaluation's and the test split's metrics, exactly as given; no runtimes or counts.
    assert index_metrics(front) == {
        "validation": {k: METRICS[k] for k in ("eval_accuracy", "eval_f1", "eval_loss")},
        "test": {k: METRICS[k] for k in ("test_accuracy", "test_loss")},
    }
    result = front["model-index"][0]["results"][0]
    assert result["task"] == {"type": "text-classification"}
    assert result["dataset"] == {"name": "klue", "type": "klue", "config": "ynat",
                                 "split": "validation"}
    assert result["metrics"][0] == {"type": "accuracy", "value": METRICS["eval_accuracy"],
                                    "name": "eval_accuracy"}


def test_hugging_face_hub_reads_the_card():
    from huggingface_hub import ModelCard

    parsed = ModelCard(card())
    assert parsed.data.base_model == "klue/roberta-base"
    assert parsed.data.library_name == "peft"
    assert {(r.metric_name, r.metric_value, r.dataset_split) for r in parsed.data.eval_results} \
        == {("eval_accuracy", METRICS["eval_accuracy"], "validation"),
            ("eval_f1", 0.91, "validation"), ("eval_loss", 0.2234, "validation"),
            ("test_accuracy", 0.88, "test"), ("test_loss", 0.3, "test")}


def test_a_full_or_merged_model_is_a_transformers_model():
    front, body = split(card(adapter=False, merged=True))
    assert front["library_name"] == "transformers" and front["base_model_relation"] == "finetune"
    assert "lora" in front["tags"]
    assert "merged into the base weights" in body
    assert "from peft" not in body
    assert 'AutoModelForSequenceClassification.from_pretrained("path/to/this/folder")' in body
    full_front, full_body = split(card(adapter=False, peft=None))
    assert full_front["tags"] == ["ftjob", "sequence-classification"]
    assert "fully fine-tuned model" in full_body and "LoRA" not in full_body


def test_local_files_name_no_dataset_and_metrics_that_are_not_numbers_are_left_out():
    files = {"files": {"train": "/data/train.jsonl", "validation": "/data/val.jsonl"},
             "evalFraction": None, "maxLength": 128}
    front, body = split(card(dataset=files, task="causal-lm", base_model="/models/llama",
                             metrics={"eval_loss": math.nan, "eval_perplexity": 27.9,
                                      "train_loss": 3.3}, labels=None))
    assert "datasets" not in front and front["base_model"] == "/models/llama"
    assert front["pipeline_tag"] == "text-generation"
    assert index_metrics(front) == {"validation": {"eval_perplexity": 27.9}}
    assert front["model-index"][0]["results"][0]["dataset"] == {
        "name": "local files", "type": "local", "split": "validation"}
    assert "- train file: `/data/train.jsonl`" in body and "- maxLength: `128`" in body
    # No evaluation at all: no model-index.
    front, _ = split(card(metrics={"train_loss": 0.5}))
    assert "model-index" not in front


def test_the_body_has_the_sections_a_reader_looks_for():
    gate = check_gate(METRICS, "accuracy", min=0.9)
    _, body = split(card(gate=gate, versions={"transformers": "5.23.0", "peft": "0.21.2"}))
    headings = [line for line in body.splitlines() if line.startswith("#")]
    assert headings == ["# klue-ynat", "## Base model", "## Data", "## Training arguments",
                        "## Final metrics", "## Quality gate", "## Attempts and goodput",
                        "## How to load it", "## Framework versions"]
    assert "Trained for 1260 optimizer steps." in body
    assert "| learning_rate | `5e-05` |" in body and "| bf16 | `true` |" in body
    assert "| optim | `adamw\\|torch` |" in body  # a table cell cannot hold a bare |
    assert "| r | `16` |" in body
    assert "| eval_accuracy | 0.931235 |" in body
    assert "- labels (3): `culture`, `economy`, `sports`" in body
    assert "- dataset: `klue`, config `ynat`" in body
    assert "quality gate passed: eval_accuracy 0.931235 >= 0.9 (the minimum)" in body
    assert "2 attempts (1 restart):" in body
    assert "| 2 | 2026-01-02T05:00:00Z | 840 | 16 |" in body
    assert ("ratio 75.0%, 3000 productive seconds, 4000 wall-clock seconds, 12 steps lost, "
            "0 older attempts folded.") in body
    assert "base = AutoModelForSequenceClassification.from_pretrained('klue/roberta-base', " \
           "num_labels=3)" in body
    assert "- transformers 5.23.0" in body


def test_goodput_unknown_and_no_attempts_are_said_plainly():
    _, body = split(card(goodput=None, attempts=[]))
    assert "No attempts were recorded in the output folder." in body
    assert "Goodput: not known when this card was written" in body


def test_rendering_is_deterministic():
    assert card() == card()


# --------------------------------------------------------------------------- I/O

SPEC = {"task": "sequence-classification", "model": {"name": "klue/roberta-base"},
        "dataset": HUB_DATASET, "trainingArguments": ARGS, "peft": {"r": 16, "alpha": 32}}


def output_folder(root, merged=True):
    out = root / "output"
    (out / "final").mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(
        {"globalStep": 1260, "resumedFromStep": 840, "metrics": METRICS}))
    # A kill mid-append leaves a last line cut short: skipped.
    (out / "attempts.jsonl").write_text(
        "".join(json.dumps(a) + "\n" for a in ATTEMPTS) + '{"startedAt": "2026-')
    (out / "final" / "adapter_config.json").write_text("{}")
    (out / "final" / "labels.json").write_text(json.dumps(["culture", "economy", "sports"]))
    (out / "final" / "README.md").write_text("peft's template\n")
    if merged:
        (out / "merged").mkdir()
        (out / "merged" / merge.MARKER).write_text("{}")
    return out


def test_cards_are_written_into_the_adapter_and_the_merged_folder(tmp_path):
    out = output_folder(tmp_path)
    gate = check_gate(METRICS, "eval_accuracy", min=0.95)
    written = write_model_cards(out, SPEC, job_name="klue-ynat", goodput=GOODPUT, gate=gate)
    assert written == [out / "final" / CARD_FILE, out / "merged" / CARD_FILE]
    adapter_front, adapter_body = split(written[0].read_text())
    merged_front, merged_body = split(written[1].read_text())
    assert adapter_front["library_name"] == "peft"
    assert merged_front["library_name"] == "transformers"
    for front, body in ((adapter_front, adapter_body), (merged_front, merged_body)):
        assert front["base_model"] == "klue/roberta-base"
        assert index_metrics(front)["validation"]["eval_accuracy"] == METRICS["eval_accuracy"]
        assert "2 attempts (1 restart):" in body and "quality gate failed" in body
        assert "- labels (3):" in body and "Trained for 1260 optimizer steps." in body
    # Written whole, through a temporary file that is gone.
    assert sorted(p.name for p in (out / "final").iterdir()) == [
        "README.md", "adapter_config.json", "labels.json"]


def test_without_a_complete_merge_only_the_final_folder_gets_a_card(tmp_path):
    out = output_folder(tmp_path, merged=False)
    (out / "merged").mkdir()  # no marker: not a complete merge
    assert write_model_cards(out, SPEC) == [out / "final" / CARD_FILE]
    assert not (out / "merged" / CARD_FILE).exists()


def test_missing_metrics_still_give_a_card(tmp_path):
    out = output_folder(tmp_path, merged=False)
    (out / "metrics.json").unlink()
    (out / "attempts.jsonl").unlink()
    [path] = write_model_cards(out, {"task": "causal-lm", "model": {"path": "/models/m"},
                                     "dataset": {"files": {"train": "t.jsonl"}}})
    front, body = split(path.read_text())
    assert front["base_model"] == "/models/m" and "model-index" not in front
    assert "The job recorded no metrics." in body
    assert "No attempts were recorded in the output folder." in body


def test_a_failed_write_leaves_the_old_card(tmp_path, monkeypatch):
    import os

    out = output_folder(tmp_path, merged=False)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        write_model_cards(out, SPEC)
    assert (out / "final" / "README.md").read_text() == "peft's template\n"
    assert sorted(p.name for p in (out / "final").iterdir()) == [
        "README.md", "adapter_config.json", "labels.json"]
