"""Evaluation metrics computed locally (numpy + scikit-learn): `evaluate.load` would download."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


POSITIVE_LABEL = 1


def f1_average(num_labels: int) -> str:
    """How `eval_f1` averages (pure): the positive class's F1 for two labels, as GLUE (MRPC,
    QQP) and the Hugging Face course report it; the unweighted mean over classes otherwise."""
    return "binary" if num_labels == 2 else "macro"


def classification_metrics(num_labels: int) -> Callable[[Any], dict[str, float]]:
    """compute_metrics for Trainer: accuracy and F1 (see f1_average); with two labels the
    positive class is label id 1 (with string labels, the second in sorted order)."""
    average = f1_average(num_labels)
    # Macro F1 over the classes that occur in the labels or predictions (scikit-learn's and
    # `evaluate`'s default), as the Hugging Face examples compute it.
    options: dict[str, Any] = {"pos_label": POSITIVE_LABEL} if average == "binary" else {}

    def compute(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        predictions = np.asarray(logits).argmax(axis=-1)
        labels = np.asarray(labels)
        return {
            "accuracy": float(accuracy_score(labels, predictions)),
            "f1": float(f1_score(labels, predictions, average=average, zero_division=0, **options)),
        }

    return compute


def with_perplexity(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Causal LM: perplexity = exp(loss), capped so JSON stays finite."""
    loss = metrics.get(f"{prefix}_loss")
    if isinstance(loss, (int, float)):
        metrics[f"{prefix}_perplexity"] = math.exp(min(float(loss), 50.0))
    return metrics
