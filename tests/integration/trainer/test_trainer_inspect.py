"""`ftjob inspect` against the trainer itself: its figures equal what the trainer's `prepare`
step feeds Trainer (counted here row by row, lengths before truncation tokenized here by
hand), its step count equals the optimizer steps a real 2-process run takes, and the
problems it reports fail `--strict`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import tinymodels as tm
from tests.integration.trainer.helpers import run_to_end
from ftjob_api import api
from ftjob_trainer import entrypoint, inspection
from ftjob_trainer.job import JobContext

IGNORE = -100
# A chat template that renders no assistant text at all: every label is -100.
SILENT_ASSISTANT = ("{% for m in messages %}{% if m['role'] == 'user' %}[CLS] "
                    "{{ m['content'] }} {% else %}[SEP] {% endif %}{% endfor %}"
                    "{% if add_generation_prompt %}[SEP] {% endif %}")


@pytest.fixture(scope="module")
def data(tiny, tmp_path_factory):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("inspect")
    silent = tm.build_gpt2(root / "gpt2-silent")
    tokenizer = AutoTokenizer.from_pretrained(silent)
    tokenizer.chat_template = SILENT_ASSISTANT
    tokenizer.save_pretrained(silent)
    return {
        **tiny,
        "gpt2_chat": tm.build_gpt2_chat(root / "gpt2-chat"),
        "gpt2_silent": silent,
        # five prompts longer than maxLength 8: nothing of their completion is left
        "pc": tm.write_jsonl(root / "pc.jsonl", tm.prompt_completion_rows(145, 21) + [
            {"prompt": " ".join(["market"] * 12), "completion": "bank"}] * 5),
        "chat": tm.write_jsonl(root / "chat.jsonl", tm.chat_rows(150, 22)),
        # two pairs with equal answers: a warning, not the trainer's refusal
        "pairs": tm.write_jsonl(root / "pairs.jsonl", tm.preference_rows(98, 23) + [
            {"prompt": "market bank price", "chosen": " bank", "rejected": " bank"}] * 2),
    }


def spec_for(data, case: str) -> dict:
    model, files, dataset = {
        "prompt-completion": ("gpt2_chat", "pc", {"format": "prompt-completion",
                                                  "maxLength": 8}),
        "conversational-packed": ("gpt2_chat", "chat", {"format": "conversational",
                                                        "maxLength": 32, "packing": True}),
        "text": ("gpt2", "lm_train", {"format": "text", "maxLength": 10}),
        "classification": ("bert", "cls_train", {"maxLength": 8}),
        "seq2seq": ("t5", "s2s_train", {"maxLength": 8, "maxTargetLength": 6}),
    }[case]
    task = {"classification": "sequence-classification", "seq2seq": "seq2seq"}.get(
        case, "causal-lm")
    if case == "seq2seq":
        dataset.update(textColumn="source", targetColumn="target")
    return {"task": task, "model": {"path": str(data[model])},
            "dataset": {"files": {"train": str(data[files])}, **dataset},
            "trainingArguments": {"per_device_train_batch_size": 4}}


def trainer_fed(spec: dict, output: Path):
    """The train split exactly as the trainer's prepare step hands it to Trainer."""
    ctx = JobContext(name="t", namespace=None, spec=api.parse_spec(spec), output_dir=output)
    prepared = entrypoint.prepare(ctx)
    return prepared.splits.train, prepared.tokenizer


def lengths_by_hand(case: str, rows: list[dict], tokenizer) -> list[int] | None:
    """Each example's token count before truncation, tokenized here, not by ftjob."""
    if case == "prompt-completion":
        return [len(tokenizer(r["prompt"])["input_ids"])
                + len(tokenizer(r["completion"], add_special_tokens=False)["input_ids"]) + 1
                for r in rows]
    column = {"text": "text", "classification": "text", "seq2seq": "source"}.get(case)
    return [len(tokenizer(r[column])["input_ids"]) for r in rows] if column else None


@pytest.mark.parametrize("case", ["prompt-completion", "conversational-packed", "text",
                                  "classification", "seq2seq"])
def test_figures_equal_what_the_trainer_feeds(data, case, tmp_path):
    spec = spec_for(data, case)
    report = inspection.report(inspection.prepare(api.parse_spec(spec)))
    figures = report["splits"]["train"]
    fed, tokenizer = trainer_fed(spec, tmp_path / "out")

    ids = fed["input_ids"]
    assert figures["rows"] == len(ids)
    assert figures["tokens"] == sum(map(len, ids))
    if case != "classification":
        labels = (fed["labels"] if "labels" in fed.column_names
                  else [[i if i != tokenizer.pad_token_id else IGNORE for i in row]
                        for row in ids])
        trained = [sum(1 for label in row if label != IGNORE) for row in labels]
        assert figures["trainableTokens"] == sum(trained)
        if not spec["dataset"].get("packing"):
            assert figures["untrainedRows"]["count"] == trained.count(0)
    rows = [json.loads(line) for line in Path(spec["dataset"]["files"]["train"]).open()]
    assert figures["examples"] == len(rows)
    by_hand = lengths_by_hand(case, rows, tokenizer)
    if by_hand is not None:
        limit = spec["dataset"]["maxLength"]
        assert figures["lengths"]["max"] == max(by_hand)
        assert figures["truncation"]["examples"] == sum(1 for n in by_hand if n > limit)
        assert figures["truncation"]["tokens"] == sum(n - limit for n in by_hand if n > limit)
        assert [len(row) for row in ids] == [min(n, limit) for n in by_hand]
    if case == "prompt-completion":
        assert figures["truncation"]["examples"] > 0, "the case must exercise truncation"
        assert figures["untrainedRows"] == {"count": 5, "rows": [145, 146, 147, 148, 149]}


def test_step_count_equals_the_optimizer_steps_of_a_two_process_run(data, tmp_path):
    """379 rows, 5 per device, 2 processes, 4 accumulated, 1.5 epochs: 38 batches per
    process, 10 steps per epoch (the last window has 2 batches), 15 in total."""
    spec = spec_for(data, "classification")
    spec["dataset"]["maxTrainSamples"] = 379
    spec["resources"] = {"nodes": 1, "procsPerNode": 2}
    spec["trainingArguments"] = {"per_device_train_batch_size": 5,
                                 "gradient_accumulation_steps": 4, "num_train_epochs": 1.5,
                                 "save_strategy": "no", "eval_strategy": "no", "seed": 3}
    steps = inspection.report(inspection.prepare(api.parse_spec(spec)))["steps"]
    assert (steps["perEpoch"], steps["total"]) == (10, 15)

    run = run_to_end(tmp_path, spec, nproc=2)
    assert run.proc.returncode == 0, run.log()
    state = json.loads((run.output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == steps["total"]

    rate = inspection.trainer_steps_per_second(run.output_dir)
    timed = inspection.report(inspection.prepare(api.parse_spec(spec)), rate, "run")
    assert timed["cost"]["seconds"] == pytest.approx(15 / rate, abs=0.05)  # rounded to 0.1 s
    assert timed["cost"]["gpuHours"] == 0


def inspect_cli(manifest: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "ftjob_cli", "inspect", str(manifest), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def write_manifest(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump({"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
                                    "metadata": {"name": "inspected"}, "spec": spec}))
    return path


def test_a_template_that_masks_every_token_fails_strict(data, tmp_path):
    spec = spec_for(data, "conversational-packed")
    spec["model"]["path"] = str(data["gpt2_silent"])
    spec["dataset"]["packing"] = False
    spec["dataset"]["evalFraction"] = 0.04  # 6 of 150 conversations: a small eval split
    manifest = write_manifest(tmp_path / "job.yaml", spec)

    plain = inspect_cli(manifest)
    assert plain.returncode == 0, plain.stderr
    strict = inspect_cli(manifest, "--strict", "--json", "--show", "2")
    assert strict.returncode == 4, strict.stderr
    report = json.loads(strict.stdout)  # nothing but the JSON on stdout
    codes = {(w["code"], w["split"]) for w in report["warnings"]}
    assert {("nothing-trained", "train"), ("template-outside-mask", "train"),
            ("small-eval", "eval")} <= codes
    train = report["splits"]["train"]
    assert train["trainableTokens"] == 0 and train["untrainedRows"]["count"] == 144
    assert train["templateOutsideMask"]["rows"]["count"] == train["templateOutsideMask"]["checked"]
    assert report["steps"]["total"] > 0 and len(report["examples"]) == 2
    assert not any(s["trained"] for e in report["examples"] for s in e["segments"])
    for key in ("examples", "emptyRows", "lengths", "truncation", "rows", "tokens",
                "padding", "whatIf", "batchSize"):
        assert key in train, key


def test_bad_data_is_named_not_traced(data, tmp_path):
    spec = spec_for(data, "prompt-completion")
    spec["dataset"]["promptColumn"] = "question"
    result = inspect_cli(write_manifest(tmp_path / "job.yaml", spec))
    assert result.returncode == 1
    assert "spec.dataset.promptColumn: column 'question' not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_preference_figures_equal_what_dpo_trainer_feeds(data, tmp_path):
    """Task preference: TRL's DPOTrainer tokenizes the pairs when it is built; its collator
    cuts prompt + chosen and prompt + rejected to maxLength and trains the answers' tokens."""
    limit = 10  # prompts are 5-8 tokens: some pairs lose answer tokens, no prompt fills it
    spec = {"task": "preference", "model": {"path": str(data["gpt2_chat"])},
            "dataset": {"files": {"train": str(data["pairs"])}, "maxLength": limit},
            "trainingArguments": {"per_device_train_batch_size": 4, "max_steps": 3}}
    report = inspection.report(inspection.prepare(api.parse_spec(spec)))
    figures = report["splits"]["train"]

    ctx = JobContext(name="t", namespace=None, spec=api.parse_spec(spec),
                     output_dir=tmp_path / "out")
    prepared = entrypoint.prepare(ctx)
    trainer = entrypoint._trainer_factory(ctx, prepared, [])(
        entrypoint._trainer_class("preference"), prepared.targs)
    fed = trainer.train_dataset
    pairs = list(zip(fed["prompt_ids"], fed["chosen_ids"], fed["rejected_ids"]))
    assert figures["rows"] == figures["examples"] == len(pairs) == 100
    whole = [(len(p) + len(c), len(p) + len(r)) for p, c, r in pairs]
    assert figures["tokens"] == sum(min(n, limit) for pair in whole for n in pair)
    assert figures["trainableTokens"] == sum(
        min(len(c), max(0, limit - len(p))) + min(len(r), max(0, limit - len(p)))
        for p, c, r in pairs)
    assert figures["truncation"]["examples"] == sum(1 for a, b in whole if max(a, b) > limit) > 0
    assert figures["lengths"]["max"] == max(max(pair) for pair in whole)
    assert figures["identicalPairs"] == {"count": 2, "rows": [98, 99]}
    assert "identical-pairs" in {w["code"] for w in report["warnings"]}
    assert report["steps"]["total"] == 3 and report["steps"]["perEpoch"] == 25
