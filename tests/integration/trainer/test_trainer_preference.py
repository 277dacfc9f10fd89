"""Task preference (DPO with TRL) through the launcher and torchrun on a tiny chat GPT-2:
the first loss is ln 2 (policy = reference) at 1 and 2 processes, the reward accuracy on
held-out pairs rises above 0.9, kill -9 + resume ends where the uninterrupted run ends,
early stopping on a DPO metric, and the data refusals."""

from __future__ import annotations

import json
import math
import os
import re
import signal

import pytest

from tests import tinymodels as tm
from tests.integration.trainer.helpers import logged_losses, poll, run_to_end, start
from ftjob_api.contract import ExitCode
from ftjob_trainer import checkpoints

MAX_STEPS = 60
EVERY = 20
LN2 = math.log(2)
LOSS_TOLERANCE = 1e-6  # resumed runs agree to the last bit on CPU (test_trainer_resume)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    return {
        "gpt2": tm.build_gpt2_chat(root / "gpt2-chat"),
        "gpt2_no_template": tm.build_gpt2(root / "gpt2"),
        "train": tm.write_jsonl(root / "train.jsonl", tm.preference_rows(256, 21)),
        "val": tm.write_jsonl(root / "val.jsonl", tm.preference_rows(64, 22)),
        "chat_train": tm.write_jsonl(root / "chat-train.jsonl",
                                     tm.preference_rows(256, 21, conversational=True)),
        "chat_val": tm.write_jsonl(root / "chat-val.jsonl",
                                   tm.preference_rows(64, 22, conversational=True)),
    }


def dpo_spec(pairs, chat: bool = False, **training):
    prefix = "chat_" if chat else ""
    args = {"max_steps": MAX_STEPS, "per_device_train_batch_size": 8, "learning_rate": 3e-3,
            "logging_steps": 1, "eval_strategy": "steps", "eval_steps": EVERY,
            "save_steps": EVERY, "warmup_steps": 10, "seed": 7}
    args.update(training)
    return {
        "task": "preference",
        "model": {"path": str(pairs["gpt2"])},
        "dataset": {"files": {"train": str(pairs[f"{prefix}train"]),
                              "validation": str(pairs[f"{prefix}val"])}, "maxLength": 48},
        "trainingArguments": args,
    }


@pytest.fixture(scope="module")
def baseline(pairs, tmp_path_factory):
    run = run_to_end(tmp_path_factory.mktemp("dpo"), dpo_spec(pairs), nproc=1)
    assert run.proc.returncode == 0, run.log()
    return run


def test_first_loss_is_ln2_and_the_reward_accuracy_rises(baseline):
    losses = logged_losses(baseline.output_dir / f"checkpoint-{MAX_STEPS}")
    assert math.isclose(losses[1], LN2, abs_tol=1e-3), losses[1]
    metrics = baseline.metrics()["metrics"]
    # Held-out pairs: the chosen answer (on the prompt's topic) scores above the rejected.
    assert metrics["eval_rewards/accuracies"] > 0.9, metrics
    assert metrics["eval_rewards/margins"] > 0 and metrics["eval_loss"] < LN2
    log = baseline.log(tail=None)
    assert "ftjob default bf16=False" in log and "ftjob default activation_checkpointing=False" in log


def test_first_loss_is_ln2_at_two_processes(pairs, tmp_path):
    spec = dpo_spec(pairs, max_steps=1, per_device_train_batch_size=4, save_strategy="no",
                    eval_strategy="no")
    run = run_to_end(tmp_path, spec, nproc=2)
    assert run.proc.returncode == 0, run.log()
    state = json.loads((run.output_dir / "trainer_state.json").read_text())
    first = next(e["loss"] for e in state["log_history"] if "loss" in e)
    assert math.isclose(first, LN2, abs_tol=1e-3), first


def test_kill9_and_resume_ends_with_the_uninterrupted_loss(baseline, pairs, tmp_path):
    spec = dpo_spec(pairs)
    killed = start(tmp_path, spec, nproc=1, isolate=True)
    poll(lambda: (lambda c: c if c is not None and c.step >= EVERY else None)(
        checkpoints.latest_complete(killed.output_dir)), 240, f"a complete checkpoint-{EVERY}")
    os.kill(killed.proc.pid, signal.SIGKILL)  # the whole PID namespace, like a pod kill
    killed.wait(30)
    assert not (killed.output_dir / "final").exists(), "the run ended before it was killed"
    last = checkpoints.latest_complete(killed.output_dir)

    resumed = start(tmp_path, spec, nproc=1)
    assert resumed.wait() == 0, resumed.log()
    assert resumed.summary()["resumedFromStep"] == last.step < MAX_STEPS
    ours = logged_losses(resumed.output_dir / f"checkpoint-{MAX_STEPS}")
    theirs = logged_losses(baseline.output_dir / f"checkpoint-{MAX_STEPS}")
    for step in range(last.step + 1, MAX_STEPS + 1):  # every batch after the resume
        assert math.isclose(ours[step], theirs[step], rel_tol=0, abs_tol=LOSS_TOLERANCE), step
    for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"):
        assert math.isclose(resumed.metrics()["metrics"][key], baseline.metrics()["metrics"][key],
                            rel_tol=0, abs_tol=LOSS_TOLERANCE), key


def test_conversational_pairs_stop_early_on_the_reward_accuracy(pairs, tmp_path):
    patience = 2
    spec = dpo_spec(pairs, chat=True, max_steps=200, eval_steps=10, save_steps=10,
                    load_best_model_at_end=True,
                    metric_for_best_model="eval_rewards/accuracies")
    # No accuracy change can exceed the threshold: the stop step is known in advance.
    spec["earlyStopping"] = {"patience": patience, "threshold": 10.0}
    spec["dataset"]["files"]["test"] = str(pairs["chat_val"])
    run = run_to_end(tmp_path, spec, nproc=2)
    assert run.proc.returncode == 0, run.log()
    assert 0 <= run.metrics()["metrics"]["test_rewards/accuracies"] <= 1  # scored after training
    summary = run.summary()
    assert summary["globalStep"] == 10 * (patience + 1), summary
    assert re.fullmatch(
        r"stopped early at step 30 of 200: eval_rewards/accuracies did not improve by more "
        r"than 10 for 2 evaluations; best eval_rewards/accuracies [0-9.]+ at checkpoint-[123]0",
        summary["stoppedEarly"]), summary


def test_lora_scores_the_reference_with_the_adapter_disabled(pairs, tmp_path):
    spec = dpo_spec(pairs, max_steps=4, eval_strategy="no", save_steps=2)
    spec["peft"] = {"r": 4, "alpha": 8, "targetModules": ["c_attn"]}
    run = run_to_end(tmp_path, spec, nproc=1)
    assert run.proc.returncode == 0, run.log()
    losses = logged_losses(run.output_dir / "checkpoint-4")
    # LoRA's B starts at zero: policy = base = the reference (no second model is loaded).
    assert math.isclose(losses[1], LN2, abs_tol=1e-3), losses
    assert (run.output_dir / "final" / "adapter_config.json").is_file()
    assert not (run.output_dir / "final" / "model.safetensors").exists()


def test_conversational_pairs_without_a_chat_template_fail_permanently(pairs, tmp_path):
    spec = dpo_spec(pairs, chat=True)
    spec["model"]["path"] = str(pairs["gpt2_no_template"])
    run = run_to_end(tmp_path, spec, nproc=1)
    assert run.proc.returncode == ExitCode.INVALID_SPEC, run.log()
    assert run.summary()["message"].startswith("spec.model: the preference data holds a list "
                                               "of {role, content} turns")


def test_prompts_longer_than_max_length_fail_naming_the_rows(pairs, tmp_path):
    rows = tm.preference_rows(64, 23)
    for row in (3, 17, 40):  # [CLS] + 3 x 5 words: 16 tokens, filling maxLength 16
        rows[row]["prompt"] = " ".join([rows[row]["prompt"]] * 3)
    spec = dpo_spec(pairs)
    spec["dataset"]["files"]["train"] = str(tm.write_jsonl(tmp_path / "long.jsonl", rows))
    spec["dataset"]["maxLength"] = 16
    run = run_to_end(tmp_path, spec, nproc=1)
    assert run.proc.returncode == ExitCode.INVALID_DATA, run.log()
    assert run.summary()["message"] == (
        "spec.dataset.maxLength: 3 of 64 prompts of the train split are 16 tokens or longer, "
        "leaving no room for the answers (rows 3, 17, 40; longest 16 tokens); raise maxLength "
        "or shorten them")
