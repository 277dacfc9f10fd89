"""The quality gate: final metrics against one inclusive bound (pure)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from ftjob_trainer.delivery.gate import GateResult, check_gate, metric_key, resolve_metric

FINAL = {  # metrics.json's "metrics" of a classification job with a test split
    "epoch": 3.0, "train_loss": 0.41, "train_runtime": 12.5, "train_samples": 384,
    "eval_accuracy": 0.93, "eval_f1": 0.91, "eval_loss": 0.22, "eval_runtime": 0.4,
    "eval_samples": 96, "test_accuracy": 0.88, "test_loss": 0.3,
}


@pytest.mark.parametrize("metric, bounds, passed, message", [
    ("eval_accuracy", {"min": 0.9}, True,
     "quality gate passed: eval_accuracy 0.93 >= 0.9 (the minimum)"),
    ("eval_accuracy", {"min": 0.95}, False,
     "quality gate failed: eval_accuracy 0.93 < 0.95 (the minimum)"),
    ("eval_accuracy", {"min": 0.93}, True,  # inclusive
     "quality gate passed: eval_accuracy 0.93 >= 0.93 (the minimum)"),
    ("eval_loss", {"max": 0.25}, True, "quality gate passed: eval_loss 0.22 <= 0.25 (the maximum)"),
    ("eval_loss", {"max": 0.2}, False, "quality gate failed: eval_loss 0.22 > 0.2 (the maximum)"),
    ("eval_loss", {"max": 0.22}, True, "quality gate passed: eval_loss 0.22 <= 0.22 (the maximum)"),
    ("test_accuracy", {"min": 0.9}, False,
     "quality gate failed: test_accuracy 0.88 < 0.9 (the minimum)"),
])
def test_a_bound_is_inclusive_and_says_what_it_compared(metric, bounds, passed, message):
    result = check_gate(FINAL, metric, **bounds)
    bound = bounds.get("min", bounds.get("max"))
    assert result == GateResult(metric, FINAL[metric], bound, passed, message)


def test_a_name_without_a_split_prefix_reads_the_evaluation():
    assert check_gate(FINAL, "accuracy", min=0.9).metric == "eval_accuracy"
    assert check_gate(FINAL, "loss", max=0.25).value == 0.22
    assert resolve_metric(FINAL, "f1") == "eval_f1"
    # As Trainer reads metric_for_best_model: never the unprefixed key itself.
    assert resolve_metric({"accuracy": 0.5, "eval_accuracy": 0.9}, "accuracy") == "eval_accuracy"
    assert resolve_metric({"accuracy": 0.5}, "accuracy") is None
    assert resolve_metric(FINAL, "test_f1") is None
    assert metric_key("test_f1") == "test_f1" and metric_key("epoch") == "eval_epoch"
    # Names with a slash (DPO's) are taken as they are.
    assert check_gate({"eval_rewards/accuracies": 0.75}, "rewards/accuracies",
                      min=0.7).passed


def test_a_training_figure_is_not_a_gate():
    result = check_gate(FINAL, "train_loss", max=1.0)
    assert result == GateResult("eval_train_loss", None, 1.0, False, result.message)
    assert result.message == (
        "quality gate failed: eval_train_loss (train_loss of the evaluation) is not in the "
        "final evaluation's metrics (eval_accuracy, eval_f1, eval_loss, eval_runtime, "
        "eval_samples, test_accuracy, test_loss); a gate reads the evaluation's (eval_) or the "
        "test split's (test_) metrics; did you mean eval_loss?")


def test_an_absent_metric_fails_naming_the_metrics_there_are():
    result = check_gate(FINAL, "eval_acuracy", min=0.9)
    assert result == GateResult("eval_acuracy", None, 0.9, False, result.message)
    assert result.message == (
        "quality gate failed: eval_acuracy is not in the final evaluation's metrics "
        "(eval_accuracy, eval_f1, eval_loss, eval_runtime, eval_samples, test_accuracy, "
        "test_loss); did you mean eval_accuracy?")
    unprefixed = check_gate(FINAL, "precision", min=0.9)
    assert unprefixed.metric == "eval_precision"
    assert unprefixed.message.startswith(
        "quality gate failed: eval_precision (precision of the evaluation) is not in the final "
        "evaluation's metrics (eval_accuracy,")


def test_a_job_that_evaluated_nothing_says_so():
    trained_only = {"epoch": 1.0, "train_loss": 0.5, "train_runtime": 3.0}
    result = check_gate(trained_only, "eval_accuracy", min=0.9)
    assert not result.passed and result.value is None
    assert result.message == (
        "quality gate failed: eval_accuracy is not in the final evaluation's metrics "
        "(epoch, train_loss, train_runtime); the job evaluated nothing (no evaluation or test "
        "split)")
    assert check_gate({}, "accuracy", min=0.5).message == (
        "quality gate failed: eval_accuracy (accuracy of the evaluation) is not in the final "
        "metrics: the job recorded none")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "0.95", None, True])
def test_a_value_that_is_not_a_finite_number_fails(value):
    result = check_gate({"eval_accuracy": value}, "eval_accuracy", min=0.0)
    assert not result.passed and result.value is None and result.metric == "eval_accuracy"
    assert result.message == (f"quality gate failed: eval_accuracy is {value!r} in the final "
                              "evaluation, not a finite number to compare with the minimum 0")


def test_values_that_look_equal_at_six_digits_are_shown_in_full():
    result = check_gate({"eval_accuracy": 0.8999999}, "eval_accuracy", min=0.9)
    assert not result.passed
    assert result.message == "quality gate failed: eval_accuracy 0.8999999 < 0.9 (the minimum)"
    assert check_gate({"eval_loss": 3}, "eval_loss", max=3).message == (
        "quality gate passed: eval_loss 3 <= 3 (the maximum)")


@pytest.mark.parametrize("bounds, error", [
    ({}, "quality gate on eval_accuracy: give exactly one of min and max (neither given)"),
    ({"min": 0.9, "max": 0.99},
     "quality gate on eval_accuracy: give exactly one of min and max (both given)"),
    ({"min": math.nan}, "quality gate on eval_accuracy: the minimum nan is not a finite number"),
    ({"max": "0.5"}, "quality gate on eval_accuracy: the maximum '0.5' is not a finite number"),
])
def test_a_gate_without_exactly_one_finite_bound_is_refused(bounds, error):
    with pytest.raises(ValueError) as caught:
        check_gate(FINAL, "eval_accuracy", **bounds)
    assert str(caught.value) == error
    with pytest.raises(ValueError, match="no metric named"):
        check_gate(FINAL, "", min=0.5)


def test_the_result_is_frozen():
    result = check_gate(FINAL, "eval_accuracy", min=0.9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.passed = False  # type: ignore[misc]
