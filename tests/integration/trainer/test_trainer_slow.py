"""Long CPU runs: LoRA, and DeepSpeed ZeRO-2/3 training and resuming (first use JIT-compiles
a DeepSpeed op for about a minute). Marked slow: `make test` runs them, `make test-fast` not."""

from __future__ import annotations

import json

import pytest
from conftest import classification_spec, run_to_end
from ftjob_trainer import checkpoints

pytestmark = pytest.mark.slow


def test_lora_trains_and_saves_an_adapter(tiny, tmp_path):
    spec = classification_spec(tiny, max_steps=40, save_steps=20)
    spec["peft"] = {"r": 4, "alpha": 8, "targetModules": ["query", "value"]}
    run = run_to_end(tmp_path, spec)
    assert run.proc.returncode == 0, run.log()
    final = run.output_dir / "final"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["query", "value"]
    assert (final / "adapter_model.safetensors").is_file()
    assert not (final / "model.safetensors").exists()  # only the adapter, not the base model
    assert "eval_accuracy" in run.metrics()["metrics"]

    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    labels = json.loads((final / "labels.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(tiny["bert"], num_labels=len(labels))
    model = PeftModel.from_pretrained(base, final)
    assert model.peft_config["default"].r == 4


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_trains_and_resumes(stage, tiny, tmp_path):
    spec = classification_spec(tiny, max_steps=10, save_steps=10, logging_steps=5)
    spec["deepspeed"] = {"zeroStage": stage}
    first = run_to_end(tmp_path, spec)
    assert first.proc.returncode == 0, first.log()
    ckpt = checkpoints.latest_complete(first.output_dir)
    assert ckpt.step == 10
    marker = json.loads((ckpt.path / checkpoints.MARKER).read_text())
    # Both ranks' optimizer shards are part of the verified checkpoint.
    shards = [f for f in marker["files"] if f.startswith("global_step10/") and "optim_states" in f]
    assert len(shards) == 2, sorted(marker["files"])

    spec["trainingArguments"]["max_steps"] = 20
    second = run_to_end(tmp_path, spec)
    assert second.proc.returncode == 0, second.log()
    assert second.summary()["resumedFromStep"] == 10
    assert second.summary()["globalStep"] == 20

    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(second.output_dir / "final")
