"""Task preference in the trainer: the data checks, the renaming for TRL, DPOConfig's
defaults ftjob keeps, over-long prompts, and the report's reward curves."""

from __future__ import annotations

import pytest

from ftjob_api import api
from ftjob_trainer import data, preference, report, trainer_arguments
from ftjob_trainer.exits import InvalidData, InvalidSpec

TURNS = [{"role": "user", "content": "hi"}]


def spec(training=None, gpus=0, **dataset) -> api.FineTuneJobSpec:
    return api.parse_spec({"task": "preference", "model": {"path": "/m"},
                           "dataset": {"files": {"train": "/t.jsonl"}, **dataset},
                           "trainingArguments": training or {},
                           "resources": {"gpusPerNode": gpus}})


def splits(rows, **more):
    import datasets

    return data.Splits(datasets.Dataset.from_list(rows), None, None,
                       {"train": "t.jsonl", **more})


class Tokenizer:
    name_or_path = "/models/plain"
    chat_template = None


def test_columns_are_renamed_to_trls_and_others_dropped():
    ds = spec(promptColumn="q", chosenColumn="good", rejectedColumn="bad").dataset
    rows = [{"q": "a b", "good": "c", "bad": "d", "images": "x"}]
    out = preference.for_trl(splits(rows), ds, Tokenizer(), "/m")
    assert out.train.column_names == ["prompt", "chosen", "rejected"]
    assert out.train[0] == {"prompt": "a b", "chosen": "c", "rejected": "d"}


def test_missing_column_names_field_split_and_columns():
    s = spec()
    with pytest.raises(InvalidData, match=r"spec.dataset.chosenColumn: column 'chosen' not "
                       r"found in the train split \(t.jsonl\); columns: prompt, good, rejected"):
        data.check_columns(splits([{"prompt": "a", "good": "b", "rejected": "c"}]),
                           data.required_columns(s), check_values=False)


def test_a_causal_lm_prompt_column_is_still_checked_for_text():
    sft = api.parse_spec({"task": "causal-lm", "model": {"path": "/m"}, "dataset": {
        "files": {"train": "/t.jsonl"}, "format": "prompt-completion"}})
    with pytest.raises(InvalidData, match="spec.dataset.promptColumn: column 'prompt' of the "
                       "train split .* not text"):
        data.check_columns(splits([{"prompt": TURNS, "completion": "b"}]),
                           data.required_columns(sft))


def test_chosen_equal_to_rejected_everywhere_is_refused_somewhere_warned(caplog):
    ds = spec().dataset
    same = [{"prompt": "p", "chosen": "x", "rejected": "x"}] * 3
    with pytest.raises(InvalidData, match="equal in every one of the 3 rows of the train"):
        preference.for_trl(splits(same), ds, Tokenizer(), "/m")
    some = same + [{"prompt": "p", "chosen": "x", "rejected": "y"}]
    preference.for_trl(splits(some), ds, Tokenizer(), "/m")
    assert "chosen equals rejected in 3 of 4 rows of the train split (t.jsonl) (rows 0, 1, 2)" \
        in caplog.text


def test_mixed_text_and_turns_and_other_types_are_refused():
    ds = spec().dataset
    with pytest.raises(InvalidData, match="mixes text and turns"):
        preference.for_trl(splits([{"prompt": TURNS, "chosen": "a", "rejected": "b"}]), ds,
                           Tokenizer(), "/m")
    with pytest.raises(InvalidData, match="spec.dataset.chosenColumn: column 'chosen' of the "
                       "train split .* holds int64"):
        preference.for_trl(splits([{"prompt": "p", "chosen": 1, "rejected": "b"}]), ds,
                           Tokenizer(), "/m")
    with pytest.raises(InvalidData, match="has no value in row 1"):
        preference.for_trl(splits([{"prompt": "p", "chosen": "a", "rejected": "b"},
                                   {"prompt": None, "chosen": "a", "rejected": "b"}]), ds,
                           Tokenizer(), "/m")


def test_conversational_pairs_need_a_chat_template():
    ds = spec().dataset
    rows = [{"prompt": TURNS, "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}]}]
    with pytest.raises(InvalidSpec, match="the tokenizer of /m has none"):
        preference.for_trl(splits(rows), ds, Tokenizer(), "/m")

    class Chat(Tokenizer):
        chat_template = "{{ messages }}"

    assert preference.for_trl(splits(rows), ds, Chat(), "/m").train.num_rows == 1


def test_prompts_that_fill_max_length_are_counted_and_named():
    assert preference.prompt_length_problem([3, 4, 5], 8, "train") is None
    lengths = [3, 8, 9, 2, 12, 30, 40, 50, 60]
    message = preference.prompt_length_problem(lengths, 8, "eval")
    assert message == ("spec.dataset.maxLength: 7 of 9 prompts of the eval split are 8 tokens "
                       "or longer, leaving no room for the answers (rows 1, 2, 4, 5, 6, ... "
                       "(7 in all); longest 60 tokens); raise maxLength or shorten them")


def test_dpo_defaults_ftjob_keeps_and_the_users_value_winning(tmp_path):
    cpu = trainer_arguments.defaults(spec())
    assert cpu["activation_checkpointing"][0] is False and cpu["bf16"][0] is False
    gpu = trainer_arguments.defaults(spec(gpus=1), bf16_supported=True)
    assert gpu["bf16"][0] is True
    mine = trainer_arguments.defaults(spec({"bf16": True, "gradient_checkpointing": True}))
    assert "bf16" not in mine and "activation_checkpointing" not in mine
    kwargs, _ = trainer_arguments.settings(spec(maxLength=96), tmp_path)
    assert kwargs["max_length"] == 96 and kwargs["bf16"] is False
    assert trainer_arguments.average_tokens_across_devices(spec(), True) is False


def test_dpo_config_is_built_for_the_task(tmp_path):
    from trl import DPOConfig

    args, _ = trainer_arguments.build(spec({"beta": 0.3}, maxLength=64), tmp_path)
    assert isinstance(args, DPOConfig)
    assert (args.beta, args.max_length, args.bf16, args.activation_checkpointing,
            args.gradient_checkpointing) == (0.3, 64, False, False, False)
    assert args.learning_rate == 1e-6 and args.logging_steps == 10  # TRL's, kept


def test_evaluation_metrics_keep_the_prefix_evaluate_gave():
    assert preference._metric_prefix({"test_loss": 0.6, "test_runtime": 1.0}) == "test"
    assert preference._metric_prefix({"eval_loss": 0.6, "eval_runtime": 1.0}) == "eval"
    assert preference._metric_prefix({"loss": 0.6}) == "eval"


DPO_HISTORY = [
    {"step": 1, "loss": 0.6931, "rewards/margins": 0.0, "rewards/accuracies": 0.0,
     "rewards/chosen": 0.0, "logps/chosen": -20.0, "entropy": 3.8, "num_tokens": 164.0},
    {"step": 2, "loss": 0.69, "rewards/margins": 0.01, "rewards/accuracies": 0.6},
    {"step": 2, "eval_loss": 0.68, "eval_rewards/margins": 0.02, "eval_rewards/accuracies": 0.7,
     "eval_logps/chosen": -19.0, "eval_entropy": 3.7, "eval_num_tokens": 900.0,
     "eval_mean_token_accuracy": 0.1, "eval_runtime": 1.0},
]


def test_report_draws_the_dpo_reward_curves(tmp_path):
    series = report.series(DPO_HISTORY)
    assert series.rewards == {"eval_rewards/accuracies": [(2, 0.7)],
                              "eval_rewards/margins": [(2, 0.02)],
                              "rewards/accuracies": [(1, 0.0), (2, 0.6)],
                              "rewards/margins": [(1, 0.0), (2, 0.01)]}
    assert series.eval_metrics == {}  # DPO's diagnostics stay out of the plots
    assert series.eval_loss == [(2, 0.68)]
    png = report.write_png(series, tmp_path / "r.png", "dpo")
    assert png.stat().st_size > 1000
