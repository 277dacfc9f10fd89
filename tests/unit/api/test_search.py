"""spec.hyperparameterSearch: the space is checked like trainingArguments, with field paths."""

from __future__ import annotations

import pytest

from ftjob_api import api
from ftjob_api.validation import validate_spec


def spec(search, training=None, **extra):
    body = {"task": "sequence-classification", "model": {"path": "/models/m"},
            "dataset": {"files": {"train": "/d/train.jsonl", "validation": "/d/val.jsonl"}},
            "trainingArguments": training if training is not None else {"max_steps": 20},
            "hyperparameterSearch": search, **extra}
    return body


LR = {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}
SEARCH = {"trials": 4, "space": {"learning_rate": LR,
                                 "per_device_train_batch_size": {"type": "categorical",
                                                                 "choices": [8, 16]},
                                 "warmup_steps": {"type": "int", "low": 0, "high": 10,
                                                  "step": 5}}}


def problems(body):
    return {p.path: p.message for p in validate_spec(body)}


def test_a_complete_search_is_valid_and_has_defaults():
    assert problems(spec(SEARCH)) == {}
    parsed = api.parse_spec(spec(SEARCH)).hyperparameter_search
    assert (parsed.metric, parsed.direction, parsed.sampler, parsed.pruner) == (
        "eval_loss", "minimize", "tpe", "none")
    assert parsed.space["warmup_steps"].grid() == [0, 5, 10]
    assert parsed.space["learning_rate"].grid() is None


@pytest.mark.parametrize("search, path, words", [
    ({"trials": 0, "space": {"learning_rate": LR}}, "spec.hyperparameterSearch.trials",
     "greater than or equal to 1"),
    ({"trials": 2, "space": {}}, "spec.hyperparameterSearch.space", "at least 1"),
    ({"trials": 2, "direction": "up", "space": {"learning_rate": LR}},
     "spec.hyperparameterSearch.direction", "minimize"),
    ({"trials": 2, "metric": "accuracy", "space": {"learning_rate": LR}},
     "spec.hyperparameterSearch.metric", "eval_"),
    ({"trials": 2, "sampler": "bayes", "space": {"learning_rate": LR}},
     "spec.hyperparameterSearch.sampler", "tpe"),
    ({"trials": 2, "pruner": "hyperband", "space": {"learning_rate": LR}},
     "spec.hyperparameterSearch.pruner", "median"),
    ({"trials": 2, "seed": -1, "space": {"learning_rate": LR}},
     "spec.hyperparameterSearch.seed", "greater than or equal to 0"),
    ({"trials": 2, "space": {"learning_rate": {"type": "float", "low": 1e-3}}},
     "spec.hyperparameterSearch.space.learning_rate", "needs `low` and `high`"),
    ({"trials": 2, "space": {"learning_rate": {"type": "float", "low": 1, "high": 0.1}}},
     "spec.hyperparameterSearch.space.learning_rate", "greater than `high`"),
    ({"trials": 2, "space": {"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}},
     "spec.hyperparameterSearch.space.learning_rate", "`log` needs `low` > 0"),
    ({"trials": 2, "space": {"learning_rate": {**LR, "step": 0.1}}},
     "spec.hyperparameterSearch.space.learning_rate", "either `log` or `step`"),
    ({"trials": 2, "space": {"seed": {"type": "int", "low": 0.5, "high": 3}}},
     "spec.hyperparameterSearch.space.seed", "whole number"),
    ({"trials": 2, "space": {"seed": {"type": "categorical"}}},
     "spec.hyperparameterSearch.space.seed", "needs `choices`"),
    ({"trials": 2, "space": {"seed": {"type": "categorical", "choices": [1], "low": 0}}},
     "spec.hyperparameterSearch.space.seed", "not to a categorical"),
    ({"trials": 2, "space": {"seed": {"type": "int", "low": 0, "high": 2, "choices": [1]}}},
     "spec.hyperparameterSearch.space.seed", "only to type categorical"),
    ({"trials": 2, "space": {"seed": {"type": "categorical", "choices": [[1]]}}},
     "spec.hyperparameterSearch.space.seed", "numbers, strings or booleans"),
    ({"trials": 2, "space": {"seed": {"type": "bool", "choices": [1]}}},
     "spec.hyperparameterSearch.space.seed.type", "float"),
    ({"trials": 2, "space": {"learning_rate": {**LR, "lowest": 1}}},
     "spec.hyperparameterSearch.space.learning_rate.lowest", "unknown field"),
    ({"trials": 2, "sampler": "grid", "space": {"learning_rate": LR}},
     "spec.hyperparameterSearch", "give learning_rate a `step`"),
    ({"trials": 3, "sampler": "grid",
      "space": {"seed": {"type": "categorical", "choices": [1, 2]}}},
     "spec.hyperparameterSearch", "2 combinations, fewer than trials (3)"),
])
def test_field_problems_name_the_field(search, path, words):
    found = problems(spec(search))
    assert path in found, found
    assert words in found[path], found[path]


@pytest.mark.parametrize("space, path, words", [
    ({"lerning_rate": LR}, "spec.hyperparameterSearch.space.lerning_rate",
     "did you mean learning_rate?"),
    ({"warmup_ratio": LR}, "spec.hyperparameterSearch.space.warmup_ratio", "removed in transformers 5"),
    ({"output_dir": {"type": "categorical", "choices": ["/a"]}},
     "spec.hyperparameterSearch.space.output_dir", "managed by ftjob"),
    ({"seed": LR}, "spec.hyperparameterSearch.space.seed.type", "seed takes integer, not a drawn float"),
    ({"lr_scheduler_type": {"type": "int", "low": 0, "high": 2}},
     "spec.hyperparameterSearch.space.lr_scheduler_type.type", "takes string"),
    ({"lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosin"]}},
     "spec.hyperparameterSearch.space.lr_scheduler_type.choices[1]", "did you mean cosine?"),
    ({"per_device_train_batch_size": {"type": "categorical", "choices": ["8"]}},
     "spec.hyperparameterSearch.space.per_device_train_batch_size.choices[0]",
     "remove the quotes"),
    ({"per_device_train_batch_size": {"type": "int", "low": 0, "high": 8}},
     "spec.hyperparameterSearch.space.per_device_train_batch_size.low", "at least 1"),
    ({"predict_with_generate": {"type": "categorical", "choices": [True, False]}},
     "spec.hyperparameterSearch.space.predict_with_generate", "only to task seq2seq"),
])
def test_space_keys_are_checked_against_training_arguments(space, path, words):
    found = problems(spec({"trials": 2, "space": space}))
    assert path in found, found
    assert words in found[path], found[path]


def test_a_key_is_fixed_or_searched_not_both():
    found = problems(spec({"trials": 2, "space": {"learning_rate": LR}},
                          {"learning_rate": 1e-4}))
    assert "also fixed in trainingArguments.learning_rate" in found[
        "spec.hyperparameterSearch.space.learning_rate"]


def test_search_needs_eval_data_and_refuses_early_stopping_and_deepspeed():
    body = spec(SEARCH)
    body["dataset"]["files"].pop("validation")
    assert "evaluation data" in problems(body)["spec.hyperparameterSearch"]
    found = problems(spec(SEARCH, earlyStopping={"patience": 1}, deepspeed={"zeroStage": 2}))
    assert "pruner: median" in found["spec.earlyStopping"]
    assert "not supported" in found["spec.deepspeed"]


def test_median_pruning_needs_evaluations_during_training():
    search = {**SEARCH, "pruner": "median"}
    assert "eval_strategy" in problems(spec(search))["spec.hyperparameterSearch.pruner"]
    assert problems(spec(search, {"max_steps": 20, "eval_strategy": "steps",
                                  "eval_steps": 5})) == {}


def test_grid_counts_combinations():
    grid = {"trials": 6, "sampler": "grid", "space": {
        "per_device_train_batch_size": {"type": "categorical", "choices": [8, 16]},
        "warmup_steps": {"type": "int", "low": 0, "high": 10, "step": 5}}}
    assert problems(spec(grid)) == {}
    assert api.parse_spec(spec(grid)).hyperparameter_search.grid_size() == 6
