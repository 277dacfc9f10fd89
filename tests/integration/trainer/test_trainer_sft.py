"""causal-lm on chat-shaped data under 2 processes: prompt-completion, conversational with
packing, and kill -9 + resume with packing ending where the uninterrupted run ends."""

from __future__ import annotations

import math
import os
import signal

import pytest

from tests import tinymodels as tm
from tests.integration.trainer.helpers import logged_losses, poll, run_to_end, start
from ftjob_api.contract import ExitCode
from ftjob_trainer import checkpoints

MAX_STEPS = 60
LOSS_TOLERANCE = 1e-6  # as in test_trainer_resume: resumed runs agree to the last bit on CPU


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    return {
        "gpt2": tm.build_gpt2_chat(root / "gpt2-chat"),
        "gpt2_no_template": tm.build_gpt2(root / "gpt2"),
        "pc_train": tm.write_jsonl(root / "pc-train.jsonl", tm.prompt_completion_rows(192, 11)),
        "pc_val": tm.write_jsonl(root / "pc-val.jsonl", tm.prompt_completion_rows(48, 12)),
        "chat_train": tm.write_jsonl(root / "chat-train.jsonl", tm.chat_rows(192, 13)),
        "chat_val": tm.write_jsonl(root / "chat-val.jsonl", tm.chat_rows(48, 14)),
    }


def sft_spec(chat, fmt: str, **dataset):
    prefix = "pc" if fmt == "prompt-completion" else "chat"
    return {
        "task": "causal-lm",
        "model": {"path": str(chat["gpt2"])},
        "dataset": {"files": {"train": str(chat[f"{prefix}_train"]),
                              "validation": str(chat[f"{prefix}_val"])},
                    "format": fmt, "maxLength": 48, **dataset},
        "trainingArguments": {"max_steps": MAX_STEPS, "per_device_train_batch_size": 4,
                              "learning_rate": 3e-3, "logging_steps": 1, "save_steps": 10,
                              "seed": 7, "eval_strategy": "no"},
    }


def untrained_loss_bound(run) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run.output_dir / "final")
    return math.log(model.config.vocab_size)


def test_prompt_completion_trains_on_the_completions(chat, tmp_path):
    spec = sft_spec(chat, "prompt-completion")
    spec["trainingArguments"]["max_steps"] = 20
    run = run_to_end(tmp_path, spec)
    assert run.proc.returncode == 0, run.log()
    metrics = run.metrics()["metrics"]
    # The completion words are drawn from the prompt's topic: learnable, below ln(vocab).
    assert metrics["eval_loss"] < untrained_loss_bound(run)
    log = run.log(tail=None)
    assert "ftjob default ddp_find_unused_parameters=False" in log


def test_conversational_without_a_chat_template_fails_permanently(chat, tmp_path):
    spec = sft_spec(chat, "conversational")
    spec["model"]["path"] = str(chat["gpt2_no_template"])
    run = run_to_end(tmp_path, spec)
    assert run.proc.returncode == ExitCode.INVALID_SPEC, run.log()
    summary = run.summary()
    assert summary["reason"] == "InvalidSpec"
    assert summary["message"].startswith("spec.dataset.format: conversational")
    assert str(chat["gpt2_no_template"]) in summary["message"]


@pytest.fixture(scope="module")
def packed_baseline(chat, tmp_path_factory):
    run = run_to_end(tmp_path_factory.mktemp("packed"), sft_spec(chat, "conversational",
                                                                  packing=True))
    assert run.proc.returncode == 0, run.log()
    return run


def test_conversational_packed_trains(packed_baseline):
    metrics = packed_baseline.metrics()["metrics"]
    assert metrics["eval_loss"] < untrained_loss_bound(packed_baseline)


def test_kill9_and_resume_with_packing_ends_with_the_uninterrupted_loss(packed_baseline, chat,
                                                                        tmp_path):
    spec = sft_spec(chat, "conversational", packing=True)
    killed = start(tmp_path, spec, isolate=True)
    poll(lambda: (lambda c: c if c is not None and c.step >= 10 else None)(
        checkpoints.latest_complete(killed.output_dir)), 240, "a complete checkpoint-10")
    os.kill(killed.proc.pid, signal.SIGKILL)
    killed.wait(30)
    assert not (killed.output_dir / "final").exists(), "the run ended before it was killed"
    last = checkpoints.latest_complete(killed.output_dir)

    resumed = start(tmp_path, spec)
    assert resumed.wait() == 0, resumed.log()
    assert resumed.summary()["resumedFromStep"] == last.step < MAX_STEPS
    ours = logged_losses(resumed.output_dir / f"checkpoint-{MAX_STEPS}")
    theirs = logged_losses(packed_baseline.output_dir / f"checkpoint-{MAX_STEPS}")
    assert math.isclose(ours[MAX_STEPS], theirs[MAX_STEPS], rel_tol=0, abs_tol=LOSS_TOLERANCE)
    # Every step after the resume saw the same batch as the uninterrupted run.
    for step in range(last.step + 1, MAX_STEPS + 1):
        assert math.isclose(ours[step], theirs[step], rel_tol=0, abs_tol=LOSS_TOLERANCE), step
    assert math.isclose(resumed.metrics()["metrics"]["eval_loss"],
                        packed_baseline.metrics()["metrics"]["eval_loss"], rel_tol=0,
                        abs_tol=LOSS_TOLERANCE)


@pytest.mark.slow
def test_packed_completion_only_loss_does_not_scale_with_world_size(chat, tmp_path):
    from tests.integration.trainer.test_trainer_world_size import (REL_TOLERANCE,
                                                                    first_loss_and_eval)

    spec = sft_spec(chat, "prompt-completion", packing=True)
    spec["trainingArguments"].update(max_steps=2, save_strategy="no",
                                     per_device_eval_batch_size=8)
    one = first_loss_and_eval(tmp_path, spec, 1)
    two = first_loss_and_eval(tmp_path, spec, 2)
    assert math.isclose(one[0], two[0], rel_tol=REL_TOLERANCE), (one, two)
    assert math.isclose(one[1], two[1], rel_tol=REL_TOLERANCE), (one, two)
    # Untrained: near-uniform predictions over the vocabulary, cross-entropy ln(vocab).
    assert math.isclose(two[0], math.log(len(tm.SPECIALS) + len(tm.VOCAB_WORDS)),
                        abs_tol=0.15), two
