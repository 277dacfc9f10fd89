"""The TrainingArguments catalogue matches the installed transformers; rules behave."""

from __future__ import annotations

import json

from ftjob_api import training_args
from ftjob_api.training_args import check_cross_fields, check_keys_and_types


def test_catalog_matches_installed_transformers():
    committed = json.loads(training_args.CATALOG_PATH.read_text())
    assert committed == json.loads(json.dumps(training_args.generate_catalog())), (
        "api/ftjob_api/data/training_arguments.json is stale: run `make catalog`"
    )


def test_every_managed_and_renamed_key_is_explained():
    known = training_args.fields()
    for key in training_args.MANAGED_KEYS:
        assert key in known, f"{key} is managed but not a TrainingArguments field"
    for key in training_args.RENAMED_KEYS:
        assert key not in known, f"{key} is listed as renamed but still exists"


def test_valid_arguments_pass():
    args = {"learning_rate": 2e-5, "num_train_epochs": 3, "per_device_train_batch_size": 16,
            "lr_scheduler_type": "cosine", "report_to": ["tensorboard"], "warmup_steps": 0.1,
            "gradient_checkpointing": True, "save_total_limit": 2, "eval_steps": 50}
    assert check_keys_and_types(args, "sequence-classification") == []
    assert check_cross_fields(args, has_eval_data=True, gpus_per_node=1) == []


def test_integer_accepted_for_number_fields():
    assert check_keys_and_types({"learning_rate": 1, "num_train_epochs": 2}, None) == []


def test_bf16_is_allowed_on_cpu_but_fp16_is_not():
    assert check_cross_fields({"bf16": True}, has_eval_data=False, gpus_per_node=0) == []
    problems = check_cross_fields({"fp16": True}, has_eval_data=False, gpus_per_node=0)
    assert [p.path for p in problems] == ["spec.trainingArguments.fp16"]


def test_load_best_with_matching_steps_passes():
    args = {"load_best_model_at_end": True, "eval_strategy": "steps", "save_strategy": "steps",
            "eval_steps": 50, "save_steps": 100}
    assert check_cross_fields(args, has_eval_data=True, gpus_per_node=1) == []


def test_load_best_uses_logging_steps_when_eval_steps_unset():
    args = {"load_best_model_at_end": True, "eval_strategy": "steps", "save_steps": 100,
            "logging_steps": 30}
    problems = check_cross_fields(args, has_eval_data=True, gpus_per_node=1)
    assert [p.path for p in problems] == ["spec.trainingArguments.save_steps"]


def test_save_strategy_no_is_a_warning_not_an_error():
    problems = check_cross_fields({"save_strategy": "no"}, has_eval_data=False, gpus_per_node=0)
    assert [(p.path, p.severity) for p in problems] == [
        ("spec.trainingArguments.save_strategy", "warning")]
    assert "step 0" in problems[0].message


def test_quoted_number_gets_a_hint():
    (problem,) = check_keys_and_types({"learning_rate": "5e-5"}, None)
    assert "remove the quotes" in problem.message
