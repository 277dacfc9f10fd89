"""The counting behind `ftjob inspect` (ftjob_trainer.figures) on data the tests write out
by hand, and its step count against the sharding Accelerate does under torchrun."""

from __future__ import annotations

import numpy as np
import pytest

from ftjob_trainer import figures

datasets = pytest.importorskip("datasets")


def table(**columns):
    return datasets.Dataset.from_dict(columns)


def test_lengths_summary_uses_lengths_that_occur():
    lengths = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 100])
    assert figures.summary(lengths) == {"p50": 5, "p90": 9, "p99": 100, "max": 100,
                                        "mean": 14.5}
    assert figures.summary(np.zeros(0, dtype=np.int64))["max"] == 0


def test_truncation_counts_examples_and_the_tokens_cut():
    cut = figures.truncation(np.array([10, 20, 30, 40]), 25)
    assert cut == {"maxLength": 25, "examples": 2, "fraction": 0.5, "tokens": 5 + 15}


def test_padding_pads_each_batch_to_its_longest_row():
    # batches [2, 4] and [6, 8]: slots 4 + 4 + 8 + 8 = 24, real 20
    assert figures.padding(np.array([2, 4, 6, 8]), 2, shuffle_seed=None) == round(1 - 20 / 24, 4)
    # a last batch of one row pads nothing
    assert figures.padding(np.array([2, 4, 6]), 2, shuffle_seed=None) == round(1 - 12 / 14, 4)
    assert figures.padding(np.array([5, 5, 5]), 8, shuffle_seed=3) == 0.0


def test_packed_rows_keep_the_remainder_in_a_last_shorter_row():
    assert figures.packed_lengths(10, 4).tolist() == [4, 4, 2]
    assert figures.packed_lengths(8, 4).tolist() == [4, 4]


def test_trained_tokens_are_labels_other_than_minus_100():
    ds = table(input_ids=[[1, 2, 3], [4, 5], [6]], labels=[[-100, 2, 3], [-100, -100], [6]])
    assert figures.trained_per_row(ds, pad_token_id=0).tolist() == [2, 0, 1]
    assert figures.listed(figures.trained_per_row(ds, 0) == 0) == {"count": 1, "rows": [1]}


def test_without_labels_every_token_but_the_pad_id_is_trained():
    # format text, unpacked: the collator copies input_ids and masks the pad token's id
    ds = table(input_ids=[[7, 8, 0], [0]])
    assert figures.trained_per_row(ds, pad_token_id=0).tolist() == [2, 0]


def test_empty_rows_hold_only_special_tokens():
    ds = table(input_ids=[[101, 102], [101, 7, 102], [101, 102]])
    assert figures.rows_without(ds, "input_ids", [101, 102]) == {"count": 2, "rows": [0, 2]}


def test_rows_not_ending_with_eos():
    ds = table(input_ids=[[1, 2, 9], [3], [], [9]])
    assert figures.rows_not_ending_with(ds, 9) == 2


def test_listed_rows_are_capped():
    listing = figures.listed_rows(list(range(50)))
    assert listing["count"] == 50 and len(listing["rows"]) == figures.ROWS_LISTED


def test_label_counts_and_imbalance():
    ds = table(labels=[0, 0, 0, 1, 2, 2])
    counts = figures.label_counts(ds, ["a", "b", "c", "d"])
    assert counts == {"counts": {"a": 3, "b": 1, "c": 2, "d": 0}, "imbalance": 3.0,
                      "missing": ["d"]}


def test_words_within_ignores_how_whitespace_was_decoded():
    assert figures.words_within("goal  match\nteam", "x goal match team y")
    assert not figures.words_within("goal team", "goal match team")
    assert figures.words_within("   ", "")


@pytest.mark.parametrize("rows,per_device,world,drop_last", [
    (379, 5, 2, False), (384, 8, 2, False), (7, 4, 3, False), (1000, 7, 4, True),
    (1000, 7, 4, False), (16, 16, 1, True), (15, 16, 2, False),
])
def test_batches_per_process_match_accelerate_sharding(rows, per_device, world, drop_last):
    """Under torchrun Trainer's dataloader is sharded by Accelerate's BatchSamplerShard
    (even_batches): every process gets as many batches as rank 0."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    sampler = BatchSampler(SequentialSampler(range(rows)), per_device, drop_last)
    shard = BatchSamplerShard(sampler, num_processes=world, process_index=0,
                              even_batches=True)
    steps = figures.optimizer_steps(rows=rows, per_device=per_device, world_size=world,
                                    accumulation=1, epochs=1, max_steps=-1,
                                    drop_last=drop_last)
    assert steps["batchesPerProcess"] == len(shard)


@pytest.mark.parametrize("batches,accumulation,epochs,max_steps,per_epoch,total", [
    (38, 4, 1.5, -1, 10, 15),  # a partial accumulation window still steps
    (38, 1, 3, -1, 38, 114),
    (2, 8, 1, -1, 1, 1),  # at least one step per epoch
    (38, 4, 3, 7, 10, 7),  # max_steps wins
])
def test_optimizer_steps_per_epoch_and_in_total(batches, accumulation, epochs, max_steps,
                                                per_epoch, total):
    steps = figures.optimizer_steps(rows=batches, per_device=1, world_size=1,
                                    accumulation=accumulation, epochs=epochs,
                                    max_steps=max_steps, drop_last=False)
    assert (steps["perEpoch"], steps["total"]) == (per_epoch, total)


def test_findings_name_what_is_wrong_and_where():
    split = {"examples": 100, "truncation": {"maxLength": 8, "examples": 6, "fraction": 0.06,
                                             "tokens": 12},
             "emptyRows": {"count": 1, "rows": [4]}, "trainableTokens": 0,
             "untrainedRows": {"count": 100, "rows": [0]},
             "templateOutsideMask": {"checked": 100, "rows": {"count": 3, "rows": [1, 2, 3]}}}
    small_eval = {**split, "examples": 9, "truncation": None, "emptyRows": {"count": 0},
                  "trainableTokens": 5, "untrainedRows": {"count": 0},
                  "templateOutsideMask": None}
    codes = [(f.code, f.split) for f in figures.findings(
        {"splits": {"train": split, "eval": small_eval}})]
    assert codes == [("truncated", "train"), ("empty", "train"), ("nothing-trained", "train"),
                     ("template-outside-mask", "train"), ("small-eval", "eval")]


def test_no_findings_for_clean_data():
    split = {"examples": 100, "truncation": {"maxLength": 8, "examples": 5, "fraction": 0.05,
                                             "tokens": 9},
             "emptyRows": {"count": 0}, "trainableTokens": 50, "untrainedRows": {"count": 0}}
    assert figures.findings({"splits": {"train": split, "eval": {**split}}}) == []


def test_pairs_are_two_sequences_cut_to_max_length():
    # prompt 4 + chosen 3 = 7 and prompt 4 + rejected 8 = 12 at a limit of 10: the
    # rejected sequence loses 2 tokens, its answer keeps 6; a prompt of 10 trains nothing
    pairs = figures.pair_figures(np.array([4, 10]), np.array([3, 1]), np.array([8, 2]),
                                 limit=10, batch_size=1, shuffle_seed=None)
    assert pairs["tokens"] == 7 + 10 + 10 + 10
    assert pairs["trainableTokens"] == 3 + 6
    assert pairs["truncation"] == {"maxLength": 10, "examples": 2, "fraction": 1.0,
                                   "tokens": 2 + 1 + 2}
    assert pairs["untrainedRows"] == {"count": 1, "rows": [1]}
    # a batch of one pair is its two sequences padded to the longer: 7 padded to 10
    assert pairs["padding"] == round(1 - 37 / 40, 4)
