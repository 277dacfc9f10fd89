"""The counting behind `ftjob inspect` (pure: arrays and Arrow columns in, numbers out).

Row numbers are those of the split as the trainer sees it: the file's order, unless
`evalFraction` or `maxTrainSamples` shuffled it (their seed is `shuffleSeed`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

IGNORE = -100  # causal_lm_data.IGNORE: the label the loss skips
ROWS_LISTED = 20  # row numbers listed per finding
TRUNCATED_WARN_FRACTION = 0.05
SMALL_EVAL = 10


# --------------------------------------------------------------------------- rows


def row_lengths(dataset: Any, column: str) -> np.ndarray:
    import pyarrow.compute as pc

    if not len(dataset):
        return np.zeros(0, dtype=np.int64)
    return np.asarray(pc.list_value_length(dataset.data.column(column)).to_numpy(),
                      dtype=np.int64)


def _per_row(dataset: Any, column: str, keep: Any) -> np.ndarray:
    """How many values of each row's list `keep` (a function of the flat numpy values)."""
    import pyarrow.compute as pc

    lists = dataset.data.column(column).combine_chunks()
    parents = pc.list_parent_indices(lists).to_numpy()
    values = pc.list_flatten(lists).to_numpy()
    return np.bincount(parents[keep(values)], minlength=len(dataset))


def trained_per_row(dataset: Any, pad_token_id: int | None) -> np.ndarray:
    """Tokens per row whose label is not -100; without a labels column the collator
    copies input_ids into the labels and masks the pad token's id."""
    if not len(dataset):
        return np.zeros(0, dtype=np.int64)
    if "labels" in dataset.column_names:
        return _per_row(dataset, "labels", lambda v: v != IGNORE)
    return _per_row(dataset, "input_ids", lambda v: v != (-1 if pad_token_id is None
                                                           else pad_token_id))


def rows_without(dataset: Any, column: str, special_ids: list[int]) -> dict[str, Any]:
    """Rows with no token besides the tokenizer's special tokens (empty text)."""
    if not len(dataset):
        return listed(np.zeros(0, dtype=bool))
    content = _per_row(dataset, column, lambda v: ~np.isin(v, special_ids))
    return listed(content == 0)


def rows_not_ending_with(dataset: Any, token_id: int | None) -> int:
    import pyarrow.compute as pc

    if token_id is None or not len(dataset):
        return len(dataset)
    lists = dataset.data.column("input_ids").combine_chunks()
    ends = lists.offsets.to_numpy()[1:] - 1
    starts = lists.offsets.to_numpy()[:-1]
    values = pc.list_flatten(lists).to_numpy()
    nonempty = ends >= starts
    return int((~nonempty).sum() + (values[ends[nonempty]] != token_id).sum())


def listed(mask: np.ndarray) -> dict[str, Any]:
    return listed_rows([int(i) for i in np.flatnonzero(mask)])


def listed_rows(rows: list[int]) -> dict[str, Any]:
    """{count, rows}: the first ROWS_LISTED row numbers."""
    return {"count": len(rows), "rows": rows[:ROWS_LISTED]}


# --------------------------------------------------------------------------- lengths


def summary(lengths: np.ndarray) -> dict[str, Any]:
    """p50, p90, p99 (nearest rank: lengths that occur), max and mean."""
    if not len(lengths):
        return {"p50": 0, "p90": 0, "p99": 0, "max": 0, "mean": 0.0}
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99], method="inverted_cdf")
    return {"p50": int(p50), "p90": int(p90), "p99": int(p99), "max": int(lengths.max()),
            "mean": round(float(lengths.mean()), 1)}


def truncation(lengths: np.ndarray, limit: int) -> dict[str, Any]:
    """Examples longer than `limit` and the tokens truncation drops from them."""
    over = lengths > limit
    return {"maxLength": limit, "examples": int(over.sum()),
            "fraction": round(float(over.mean()), 4) if len(lengths) else 0.0,
            "tokens": int((lengths[over] - limit).sum())}


def truncated(lengths: np.ndarray, limit: int) -> np.ndarray:
    return np.minimum(lengths, limit)


def packed_lengths(total: int, max_length: int) -> np.ndarray:
    """Rows of a packed stream (causal_lm_data.pack): full rows, the last keeps the rest."""
    full, rest = divmod(total, max_length)
    return np.array([max_length] * full + ([rest] if rest else []), dtype=np.int64)


def padding(lengths: np.ndarray, batch_size: int, shuffle_seed: int | None) -> float:
    """Share of the token slots that are padding when each batch of `batch_size` rows is
    padded to its longest row (the collators' dynamic padding). Training batches are drawn
    in a random order (one seeded shuffle stands for Trainer's sampler); evaluation in order."""
    if not len(lengths):
        return 0.0
    if shuffle_seed is not None:
        lengths = lengths[np.random.default_rng(shuffle_seed).permutation(len(lengths))]
    rows = math.ceil(len(lengths) / batch_size) * batch_size
    grid = np.full(rows, -1, dtype=np.int64)
    grid[:len(lengths)] = lengths
    grid = grid.reshape(-1, batch_size)
    longest = grid.max(axis=1, keepdims=True)
    slots = int((longest * (grid >= 0)).sum())
    return round(1 - float(lengths.sum()) / slots, 4) if slots else 0.0


def label_counts(dataset: Any, names: list[str]) -> dict[str, Any]:
    counts = np.bincount(np.asarray(dataset["labels"], dtype=np.int64), minlength=len(names))
    present = counts[counts > 0]
    return {"counts": {name: int(n) for name, n in zip(names, counts)},
            "imbalance": round(float(present.max() / present.min()), 2) if len(present) else None,
            "missing": [name for name, n in zip(names, counts) if n == 0]}


def words_within(text: str, trained: str) -> bool:
    """The words of `text`, in order and adjacent, are among the trained text's."""
    words = " ".join(text.split())
    return not words or words in " ".join(trained.split())


# --------------------------------------------------------------------------- steps and cost


def optimizer_steps(*, rows: int, per_device: int, world_size: int, accumulation: int,
                    epochs: float, max_steps: int, drop_last: bool) -> dict[str, Any]:
    """Optimizer steps as Trainer counts them (`set_initial_training_values`): each
    process's dataloader holds ceil(rows / (per_device x world size)) batches (Accelerate
    shards evenly), an epoch is ceil(batches / accumulation) steps, at least 1;
    `max_steps` > 0 wins over `num_train_epochs`."""
    if drop_last:
        batches = (rows // per_device) // world_size
    else:
        batches = math.ceil(rows / (per_device * world_size))
    per_epoch = max(math.ceil(batches / accumulation), 1)
    total = max_steps if max_steps > 0 else math.ceil(epochs * per_epoch)
    return {"perEpoch": per_epoch, "total": total, "epochs": round(total / per_epoch, 2),
            "perDevice": per_device, "accumulation": accumulation,
            "globalBatch": per_device * world_size * accumulation,
            "batchesPerProcess": batches}


def cost(total_steps: int, steps_per_second: float, resources: Any) -> dict[str, Any]:
    """Wall time at a step rate, and GPU-hours over every node's GPUs."""
    seconds = total_steps / steps_per_second
    gpus = resources.nodes * resources.gpus_per_node
    return {"stepsPerSecond": steps_per_second, "seconds": round(seconds, 1),
            "hours": round(seconds / 3600, 2), "gpus": gpus,
            "gpuHours": round(seconds / 3600 * gpus, 2)}


# --------------------------------------------------------------------------- findings


class Finding(NamedTuple):
    code: str
    split: str | None
    message: str


def findings(report: dict[str, Any]) -> list[Finding]:
    """What is a problem, not a fact: `--strict` exits non-zero on any."""
    found: list[Finding] = []
    for name, split in report["splits"].items():
        found += _split_findings(name, split)
    evaluation = report["splits"].get("eval")
    if evaluation is not None and evaluation["examples"] < SMALL_EVAL:
        found.append(Finding("small-eval", "eval", f"the eval split has {evaluation['examples']} "
                             f"examples (under {SMALL_EVAL}): its metrics are noise"))
    return found


def _split_findings(name: str, split: dict[str, Any]) -> list[Finding]:
    found = []
    cut = split.get("truncation")
    if cut and cut["fraction"] > TRUNCATED_WARN_FRACTION:
        found.append(Finding("truncated", name, (
            f"{cut['examples']} of {split['examples']} examples ({cut['fraction']:.1%}) are "
            f"longer than maxLength {cut['maxLength']} and lose {cut['tokens']} tokens")))
    if split["emptyRows"]["count"]:
        found.append(Finding("empty", name, f"{split['emptyRows']['count']} examples are empty "
                             f"(rows {_rows(split['emptyRows'])})"))
    if split.get("trainableTokens") == 0:
        found.append(Finding("nothing-trained", name, "no token is trained on: the labels mask "
                             "every token (completion-only loss with no completion or "
                             "assistant text?)"))
    elif split.get("untrainedRows", {}).get("count"):
        found.append(Finding("untrained-examples", name, (
            f"{split['untrainedRows']['count']} examples have no token to train on "
            f"(rows {_rows(split['untrainedRows'])}): a prompt of maxLength tokens or "
            f"more, or no completion")))
    outside = split.get("templateOutsideMask")
    if outside and outside["rows"]["count"]:
        found.append(Finding("template-outside-mask", name, (
            f"in {outside['rows']['count']} of the first {outside['checked']} conversations "
            f"the chat template renders assistant text outside the trained tokens (rows "
            f"{_rows(outside['rows'])})")))
    same = split.get("identicalPairs")
    if same and same["count"]:
        found.append(Finding("identical-pairs", name, (
            f"chosen equals rejected in {same['count']} pairs (rows {_rows(same)}): they add "
            f"nothing to the loss's gradient")))
    missing = (split.get("labels") or {}).get("missing")
    if missing and name == "train":
        found.append(Finding("missing-class", name, f"classes with no training example: "
                             f"{', '.join(missing)}"))
    return found


def _rows(listing: dict[str, Any]) -> str:
    shown = ", ".join(map(str, listing["rows"]))
    return shown + (", ..." if listing["count"] > len(listing["rows"]) else "")


# --------------------------------------------------------------------------- preference pairs


def pair_figures(prompt: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, limit: int,
                 batch_size: int, shuffle_seed: int | None) -> dict[str, Any]:
    """Task preference, as DPOTrainer's collator builds its batches: prompt + chosen and
    prompt + rejected are two sequences, each cut to its first `limit` tokens (keep_start);
    the answers' tokens that survive are the trained ones; a batch of `batch_size` pairs is
    2 x `batch_size` sequences padded to the longest."""
    whole = np.stack([prompt + chosen, prompt + rejected], axis=1)  # (pairs, 2)
    fed = np.minimum(whole, limit)
    room = np.maximum(limit - prompt, 0)
    trained = np.minimum(chosen, room) + np.minimum(rejected, room)
    over = (whole > limit).any(axis=1)
    order = (np.random.default_rng(shuffle_seed).permutation(len(fed))
             if shuffle_seed is not None else np.arange(len(fed)))
    return {
        "lengths": summary(whole.max(axis=1)),
        "promptLengths": summary(prompt),
        "truncation": {"maxLength": limit, "examples": int(over.sum()),
                       "fraction": round(float(over.mean()), 4) if len(over) else 0.0,
                       "tokens": int((whole - fed).sum())},
        "rows": len(fed),
        "tokens": int(fed.sum()),
        "trainableTokens": int(trained.sum()),
        "trainableFraction": round(float(trained.sum() / fed.sum()), 4) if fed.sum() else 0.0,
        "untrainedRows": listed(trained == 0),
        "batchSize": batch_size,
        "padding": padding(fed[order].reshape(-1), 2 * batch_size, shuffle_seed=None),
    }
