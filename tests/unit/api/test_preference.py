"""Task preference (DPO): DPOConfig's keys in the catalogue, their checks, the columns."""

from __future__ import annotations

import copy

import pytest

from ftjob_api import preference_args, training_args
from ftjob_api.validation import validate_document

BASE = {
    "apiVersion": "finetune.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "align"},
    "spec": {"task": "preference", "model": {"path": "/models/chat"},
             "dataset": {"files": {"train": "/d/pairs.jsonl", "test": "/d/test.jsonl"}}},
}


def problems(args=None, dataset=None, **spec) -> dict[str, str]:
    doc = copy.deepcopy(BASE)
    doc["spec"]["trainingArguments"] = args or {}
    doc["spec"]["dataset"].update(dataset or {})
    doc["spec"].update(spec)
    return {p.path: p.message for p in validate_document(doc)}


def test_a_plain_preference_job_and_dpo_keys_pass():
    assert problems() == {}
    assert problems({"beta": 0.3, "loss_type": ["sigmoid", "sft"], "loss_weights": [1, 0.5],
                     "f_divergence_type": "js_divergence", "truncation_mode": "keep_start",
                     "learning_rate": 5e-7, "precompute_ref_log_probs": False}) == {}


def test_dpo_only_fields_are_marked_and_refused_for_other_tasks():
    fields = training_args.fields()
    assert fields["beta"]["preferenceOnly"] and not fields["learning_rate"]["preferenceOnly"]
    assert training_args.catalog()["trl"]
    found = problems({"beta": 0.1}, task="causal-lm")
    assert found["spec.trainingArguments.beta"] == ("applies only to task preference (this "
                                                    "job is causal-lm)")


def test_loss_type_items_and_enums_are_checked_with_suggestions():
    found = problems({"loss_type": ["sigmod"], "f_divergence_type": "fwd_kl",
                      "truncation_mode": "keep_begin"})
    assert "'sigmod' is not one of: " in found["spec.trainingArguments.loss_type"]
    assert found["spec.trainingArguments.loss_type"].endswith("did you mean sigmoid?")
    assert found["spec.trainingArguments.f_divergence_type"].endswith("did you mean forward_kl?")
    assert "keep_start" in found["spec.trainingArguments.truncation_mode"]
    as_text = problems({"loss_type": "ipo"})
    assert as_text["spec.trainingArguments.loss_type"].endswith("(write a list: [ipo])")


def test_loss_types_come_from_trl():
    choices = training_args.fields()["loss_type"]["choices"]
    assert {"sigmoid", "ipo", "hinge", "robust", "apo_zero"} <= set(choices)
    assert training_args.fields()["loss_weights"]["items"] == "number"


@pytest.mark.parametrize("beta", [0, -0.1])
def test_beta_must_be_positive(beta):
    found = problems({"beta": beta})
    assert found["spec.trainingArguments.beta"] == f"must be greater than 0, got {beta!r}"


@pytest.mark.parametrize("key", sorted(preference_args.MANAGED_KEYS))
def test_keys_ftjob_manages_are_refused_with_the_reason(key):
    value = {"max_length": 64, "model_init_kwargs": {}, "pad_token": "x"}.get(key, True)
    found = problems({key: value})
    assert found[f"spec.trainingArguments.{key}"] == (
        f"managed by ftjob: {preference_args.MANAGED_KEYS[key]}")
    assert key in training_args.fields(), key


def test_cross_field_rules():
    found = problems({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]})
    assert found["spec.trainingArguments.loss_weights"].startswith("1 weights for 2 loss types")
    found = problems({"loss_type": ["exo_pair"]})
    assert "label_smoothing > 0" in found["spec.trainingArguments.label_smoothing"]
    found = problems({"precompute_ref_log_probs": True})
    assert "test split" in found["spec.trainingArguments.precompute_ref_log_probs"]
    assert problems({"precompute_ref_log_probs": True}, peft={"r": 8}) == {}


def test_the_metric_watched_must_be_one_dpo_logs():
    assert problems({"metric_for_best_model": "eval_rewards/accuracies"}) == {}
    assert problems({"metric_for_best_model": "rewards/margins"}) == {}
    assert problems({"metric_for_best_model": "eval_loss"}) == {}
    found = problems({"metric_for_best_model": "eval_reward/accuracy"})
    assert found["spec.trainingArguments.metric_for_best_model"] == (
        "'eval_reward/accuracy' is not a metric DPOTrainer logs; did you mean "
        "eval_rewards/accuracies?")
    assert "eval_accuracy" in problems({"metric_for_best_model": "eval_accuracy"})[
        "spec.trainingArguments.metric_for_best_model"]


def test_columns_belong_to_the_task():
    found = problems(dataset={"chosenColumn": "good", "rejectedColumn": "good",
                              "format": "conversational", "packing": True})
    assert found["spec.dataset.rejectedColumn"].startswith("column 'good' is used for more")
    assert found["spec.dataset.format"].startswith("does not apply to task preference")
    assert found["spec.dataset.packing"].startswith("does not apply to task preference")
    assert problems(dataset={"promptColumn": "question", "chosenColumn": "good",
                             "rejectedColumn": "bad"}) == {}
    doc = problems(dataset={"chosenColumn": "good"}, task="causal-lm")
    assert doc["spec.dataset.chosenColumn"] == "applies only to task preference, not causal-lm"


def test_search_is_refused_for_now():
    found = problems(hyperparameterSearch={"trials": 2, "metric": "eval_loss", "space": {
        "learning_rate": {"type": "float", "low": 1e-7, "high": 1e-5}}},
        dataset={"evalFraction": 0.1, "files": {"train": "/d/pairs.jsonl"}})
    assert "not supported for task preference" in found["spec.hyperparameterSearch"]


def test_crd_schema_carries_the_dpo_keys():
    schema = training_args.json_schema()["properties"]
    assert schema["beta"]["exclusiveMinimum"] is True and schema["beta"]["minimum"] == 0
    assert "sigmoid" in schema["loss_type"]["items"]["enum"]
    assert schema["loss_weights"]["items"] == {"type": "number"}
    assert schema["beta"]["description"].endswith("(preference only)")
