"""`ftjob inspect`: what the trainer will feed the model, and how many optimizer steps that
takes, before any GPU is held.

The figures are the trainer's by construction: the splits come from `data.load_checked`
(evalFraction carving, maxTrainSamples, the column and label checks), the tokenizer from
`modeling.tokenizer_for` (with the chat template its format needs), and the tokenization
from `data.map_splits` (format, completion-only mask), each the function the trainer's
`prepare` calls. Tokenized without a limit, the examples give the lengths before
`maxLength`; the trainer's `causal_lm_data.fit` then cuts or packs them into what the model
is fed. Where the tokenizer itself truncates (classification, seq2seq, causal-lm text
unpacked), the split is tokenized a second time with the limit, as the trainer does. The
model's weights are never loaded.

Counting is pure (`figures.py`); this module loads, tokenizes and gathers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftjob_api import api

from . import causal_lm_data, data, figures, modeling, preference
from .exits import InvalidData, InvalidSpec

TEMPLATE_ROWS_CHECKED = 200  # conversations checked for assistant text outside the mask


@dataclass(frozen=True)
class Tokenized:
    """One split three ways: as read, tokenized without a limit (one row per example) and
    as the trainer feeds it (truncated, or packed)."""

    name: str
    origin: str
    raw: Any
    full: Any
    fed: Any


@dataclass(frozen=True)
class Inspection:
    spec: api.FineTuneJobSpec
    tokenizer: Any
    labels: Any  # data.Labels for classification, else None
    max_length: int
    max_target_length: int
    splits: list[Tokenized]
    notes: list[str]  # what the trainer would log (a maxLength clamped to the model's)


def prepare(spec: api.FineTuneJobSpec, only: str | None = None) -> Inspection:
    """Load, check and tokenize as the trainer does; `only` keeps one split (train, eval
    or test)."""
    splits, labels = data.load_checked(spec)
    if only is not None:
        splits = data.Splits(*(d if n == only else None for n, d in
                               (("train", splits.train), ("eval", splits.eval),
                                ("test", splits.test))), splits.origin)
        if not data.named_splits(splits):  # an eval or test split the job does not have
            raise InvalidSpec(f"--split {only}: the job has no {only} split")
    tokenizer = modeling.tokenizer_for(spec)
    if spec.task == api.Task.PREFERENCE.value:
        return _prepare_pairs(spec, splits, tokenizer)
    max_length, max_target_length, notes = data.token_limits(spec, tokenizer)
    full = data.map_splits(splits, spec, tokenizer, labels, None, None)
    if spec.task == api.Task.CAUSAL_LM.value and causal_lm_data.uses_own_collator(spec.dataset):
        # The whole examples are the trainer's too: it only cuts or packs them (`fit`).
        fed = data.Splits(*(None if d is None else causal_lm_data.fit(d, spec.dataset, max_length)
                            for d in (full.train, full.eval, full.test)), full.origin)
    else:  # the tokenizer truncates: tokenized again with the limit, as the trainer does
        fed = data.map_splits(splits, spec, tokenizer, labels, max_length, max_target_length)
    fed_by_name = dict(data.named_splits(fed))
    full_by_name = dict(data.named_splits(full))
    tokenized = [Tokenized(name, splits.origin.get(name, name), raw, full_by_name[name],
                           fed_by_name[name]) for name, raw in data.named_splits(splits)]
    return Inspection(spec, tokenizer, labels, max_length, max_target_length, tokenized, notes)


def _prepare_pairs(spec: api.FineTuneJobSpec, splits: Any, tokenizer: Any) -> Inspection:
    """Task preference: the trainer's checks and renaming (`data.map_splits`, which hands
    TRL the raw pairs), then TRL's own tokenization; a prompt that fills maxLength stops
    inspect as it stops the trainer."""
    renamed = data.map_splits(splits, spec, tokenizer, None, None, None)
    limit = spec.dataset.max_length  # DPOConfig.max_length, as the trainer sets it
    tokenized = []
    for name, raw in data.named_splits(renamed):
        pairs = preference.tokenize_like_trl(raw, tokenizer, name)
        problem = preference.prompt_length_problem(
            figures.row_lengths(pairs, "prompt_ids").tolist(), limit, name)
        if problem:
            raise InvalidData(problem)
        tokenized.append(Tokenized(name, splits.origin.get(name, name), raw, pairs, pairs))
    return Inspection(spec, tokenizer, None, limit, limit, tokenized, [])


# --------------------------------------------------------------------------- gathering


def training_arguments(spec: api.FineTuneJobSpec) -> dict[str, Any]:
    """The TrainingArguments values the figures use: the spec's, else Trainer's defaults."""
    from transformers import TrainingArguments

    defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    keys = ("per_device_train_batch_size", "per_device_eval_batch_size",
            "gradient_accumulation_steps", "num_train_epochs", "max_steps",
            "dataloader_drop_last", "seed")
    return {k: spec.training_arguments.get(k, defaults[k]) for k in keys}


def report(ins: Inspection, steps_per_second: float | None = None,
           rate_source: str | None = None) -> dict[str, Any]:
    """Every figure of `ftjob inspect --json`, and the findings (warnings)."""
    spec = ins.spec
    args = training_arguments(spec)
    out_splits = {}
    for split in ins.splits:
        batch = args["per_device_train_batch_size" if split.name == "train"
                     else "per_device_eval_batch_size"]
        out_splits[split.name] = _split_figures(ins, split, batch, args["seed"])
    train = out_splits.get("train")
    steps = (figures.optimizer_steps(
        rows=train["rows"], per_device=args["per_device_train_batch_size"],
        world_size=spec.resources.world_size, accumulation=args["gradient_accumulation_steps"],
        epochs=args["num_train_epochs"], max_steps=args["max_steps"],
        drop_last=args["dataloader_drop_last"]) if train else None)
    cost = (figures.cost(steps["total"], steps_per_second, spec.resources)
            if steps and steps_per_second else None)
    if cost is not None:
        cost["rateFrom"] = rate_source
    result = {
        "task": spec.task,
        "format": spec.dataset.format if spec.task == api.Task.CAUSAL_LM.value else None,
        "maxLength": ins.max_length,
        "packing": spec.dataset.packing,
        "worldSize": spec.resources.world_size,
        "splits": out_splits,
        "steps": steps,
        "cost": cost,
        "notes": ins.notes,
    }
    result["warnings"] = [w._asdict() for w in figures.findings(result)]
    return result


def _split_figures(ins: Inspection, split: Tokenized, batch_size: int, seed: int) -> dict:
    spec, task = ins.spec, ins.spec.task
    if task == api.Task.PREFERENCE.value:
        return _pair_figures(ins, split, batch_size, seed)
    full_lengths = figures.row_lengths(split.full, "input_ids")
    fed_lengths = figures.row_lengths(split.fed, "input_ids")
    special = list(ins.tokenizer.all_special_ids)
    out: dict[str, Any] = {
        "origin": split.origin,
        "examples": len(split.full),
        "emptyRows": figures.rows_without(split.full, "input_ids", special),
        "lengths": figures.summary(full_lengths),
        "truncation": (None if spec.dataset.packing
                       else figures.truncation(full_lengths, ins.max_length)),
        "rows": len(split.fed),
        "tokens": int(fed_lengths.sum()),
        "batchSize": batch_size,
        "padding": figures.padding(fed_lengths, batch_size, shuffle_seed=(
            seed if split.name == "train" else None)),
    }
    if task == api.Task.SEQUENCE_CLASSIFICATION.value:
        out["labels"] = figures.label_counts(split.fed, ins.labels.names)
        return out
    if task == api.Task.SEQ2SEQ.value:
        target_lengths = figures.row_lengths(split.full, "labels")
        out["targets"] = {"lengths": figures.summary(target_lengths),
                          "truncation": figures.truncation(target_lengths,
                                                           ins.max_target_length)}
    per_example = split.full if spec.dataset.packing else split.fed
    trained = figures.trained_per_row(per_example, ins.tokenizer.pad_token_id)
    out["trainableTokens"] = int(trained.sum())
    out["trainableFraction"] = (round(out["trainableTokens"] / out["tokens"], 4)
                                if out["tokens"] else 0.0)
    out["untrainedRows"] = figures.listed(trained == 0)
    if task == api.Task.CAUSAL_LM.value:
        out["whatIf"] = _packing_what_if(ins, split, full_lengths, batch_size, seed)
        out["templateOutsideMask"] = _template_outside_mask(ins, split)
    return out


def _pair_figures(ins: Inspection, split: Tokenized, batch_size: int, seed: int) -> dict:
    lengths = {c: figures.row_lengths(split.full, f"{c}_ids")
               for c in ("prompt", "chosen", "rejected")}
    special = list(ins.tokenizer.all_special_ids)
    return {
        "origin": split.origin,
        "examples": len(split.full),
        "emptyRows": figures.rows_without(split.full, "chosen_ids", special),
        **figures.pair_figures(lengths["prompt"], lengths["chosen"], lengths["rejected"],
                               ins.max_length, batch_size,
                               seed if split.name == "train" else None),
        "identicalPairs": figures.listed_rows(preference.identical_rows(split.raw)),
    }


def _packing_what_if(ins: Inspection, split: Tokenized, full_lengths: Any, batch_size: int,
                     seed: int) -> dict[str, Any]:
    """The padding with packing switched the other way."""
    shuffle = seed if split.name == "train" else None
    if ins.spec.dataset.packing:
        lengths = figures.truncated(full_lengths, ins.max_length)
        return {"packing": False, "rows": len(lengths),
                "padding": figures.padding(lengths, batch_size, shuffle)}
    total = int(full_lengths.sum())
    if ins.spec.dataset.format == "text":  # packing ends every example with EOS
        total += figures.rows_not_ending_with(split.full, ins.tokenizer.eos_token_id)
    lengths = figures.packed_lengths(total, ins.max_length)
    return {"packing": True, "rows": len(lengths),
            "padding": figures.padding(lengths, batch_size, shuffle)}


def _template_outside_mask(ins: Inspection, split: Tokenized) -> dict[str, Any] | None:
    """Conversations (of the first TEMPLATE_ROWS_CHECKED) with an assistant turn whose
    text is not among the trained tokens; None where the check does not apply."""
    ds = ins.spec.dataset
    if ds.format != "conversational" or not ds.resolved_completion_only_loss:
        return None
    column = ds.resolved_messages_column
    rows = min(len(split.raw), TEMPLATE_ROWS_CHECKED)
    outside = []
    for row, messages in enumerate(split.raw.select(range(rows))[column]):
        turns = [{"role": t["role"], "content": t["content"]} for t in messages]
        ids, labels = causal_lm_data.conversational_example(
            ins.tokenizer, turns, True, f"row {row} of the {split.name} split")
        trained = ins.tokenizer.decode([i for i, lab in zip(ids, labels)
                                        if lab != causal_lm_data.IGNORE])
        if not all(figures.words_within(t["content"], trained) for t in turns
                   if t["role"] == "assistant"):
            outside.append(row)
    return {"checked": rows, "rows": figures.listed_rows(outside)}


def trainer_steps_per_second(run_dir: Path) -> float:
    """The rate a finished run measured: `train_steps_per_second` in its
    trainer_state.json (Trainer's own speed metric for the whole run)."""
    state = run_dir / "trainer_state.json"
    if not state.is_file():
        raise FileNotFoundError(f"--from-run {run_dir}: no trainer_state.json (point it at a "
                                f"finished run's output folder)")
    history = json.loads(state.read_text()).get("log_history") or []
    rates = [entry["train_steps_per_second"] for entry in history
             if isinstance(entry, dict) and "train_steps_per_second" in entry]
    if not rates:
        raise FileNotFoundError(f"--from-run {state}: no train_steps_per_second (the run "
                                f"did not finish)")
    return float(rates[-1])
