"""Evaluation metrics computed locally (numpy + scikit-learn): `evaluate.load` would download."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(eval_pred: Any) -> dict[str, float]:
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    predictions = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(labels)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def with_perplexity(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Causal LM: perplexity = exp(loss), capped so JSON stays finite."""
    loss = metrics.get(f"{prefix}_loss")
    if isinstance(loss, (int, float)):
        metrics[f"{prefix}_perplexity"] = math.exp(min(float(loss), 50.0))
    return metrics
