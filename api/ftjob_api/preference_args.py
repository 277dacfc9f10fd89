"""Task `preference`: TRL's `DPOConfig` on top of `TrainingArguments`.

The catalogue (`training_args.generate_catalog`) takes DPOConfig's own fields from the
pinned TRL through `dpo_fields` here and marks them `preferenceOnly`; `loss_type` and
`f_divergence_type` get their choices from the names TRL's `DPOTrainer` compares them
with (its source), so a TRL upgrade that adds a loss shows in the catalogue's diff.
The keys ftjob sets itself for this task, and the rules that only a whole spec can
check, live here too; this module imports nothing of ftjob but `problems`.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from .problems import Problem

TASK = "preference"
ROOT = "spec.trainingArguments"

# DPOConfig keys ftjob sets (or refuses) for task preference, each with the reason.
MANAGED_KEYS: dict[str, str] = {
    "max_length": "set spec.dataset.maxLength (prompt and answer together, in tokens)",
    "model_init_kwargs": "ftjob loads the model from spec.model and passes it loaded; the "
    "reference model is built the same way",
    "trust_remote_code": "ftjob loads models without remote code; the reference model must be "
    "loaded as the policy is",
    "padding_free": "TRL 1.16 ignores it (it falls back to padded batches with a warning)",
    "pad_token": "deprecated in TRL; ftjob pads with the tokenizer's pad token (its EOS token "
    "where it has none)",
    "sync_ref_model": "the synced reference model is not in the checkpoints, so a resumed run "
    "would score against another reference than the uninterrupted run",
}

# DPOConfig's own fields whose choices TRL checks only inside DPOTrainer (source patterns).
_CHOICE_PATTERNS = {
    "loss_type": r'loss_type == "(\w+)"',
    "f_divergence_type": r'self\.f_divergence_type == "(\w+)"',
}
DEFAULT_LOSS_TYPES = ["sigmoid"]
# What DPOTrainer logs at an evaluation (eval_ + these), for metric_for_best_model.
EVAL_METRICS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen",
                "rewards/rejected", "logps/chosen", "logps/rejected", "logits/chosen",
                "logits/rejected", "entropy", "mean_token_accuracy", "num_tokens", "aux_loss")


def dpo_fields(base_names: set[str], describe) -> dict[str, dict[str, Any]]:
    """Catalogue entries of DPOConfig's fields that TrainingArguments lacks (build-time:
    imports TRL). `describe(field, hints)` makes an entry the way the base fields get one."""
    import dataclasses
    import inspect
    import typing

    from trl import DPOConfig
    from trl.trainer import dpo_trainer

    source = inspect.getsource(dpo_trainer)
    hints = typing.get_type_hints(DPOConfig)
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(DPOConfig):
        if not f.init or f.name in base_names or f.name.startswith("_"):
            continue
        entry = describe(f, hints)
        if f.name in _CHOICE_PATTERNS:
            entry["choices"] = sorted(set(re.findall(_CHOICE_PATTERNS[f.name], source)))
        entry["preferenceOnly"] = True
        out[f.name] = entry
    return out


def trl_version() -> str:
    import trl

    return trl.__version__


def check_spec(spec: Any) -> list[Problem]:
    """The rules of task preference that need the whole spec (pure)."""
    if spec.task != TASK:
        return []
    args = spec.training_arguments
    problems: list[Problem] = []
    loss_types = args.get("loss_type") if isinstance(args.get("loss_type"), list) else None
    weights = args.get("loss_weights")
    if isinstance(weights, list) and len(weights) != len(loss_types or DEFAULT_LOSS_TYPES):
        problems.append(Problem(f"{ROOT}.loss_weights", f"{len(weights)} weights for "
                                f"{len(loss_types or DEFAULT_LOSS_TYPES)} loss types "
                                f"({', '.join(loss_types or DEFAULT_LOSS_TYPES)}); give one "
                                "weight per loss_type"))
    if "exo_pair" in (loss_types or []) and not args.get("label_smoothing"):
        problems.append(Problem(f"{ROOT}.label_smoothing", "loss_type exo_pair needs "
                                "label_smoothing > 0 (the EXO paper uses 1e-3)"))
    if (args.get("precompute_ref_log_probs") is True and spec.peft is None
            and spec.dataset.resolved_test_split is not None):
        problems.append(Problem(f"{ROOT}.precompute_ref_log_probs", "with a test split and no "
                                "spec.peft: the reference model is not kept, so the test split "
                                "cannot be scored after training"))
    problems.extend(_check_metric(args.get("metric_for_best_model")))
    if spec.hyperparameter_search is not None:
        problems.append(Problem("spec.hyperparameterSearch", "not supported for task "
                                "preference yet (TRL's DPOTrainer takes no model_init, which "
                                "every trial needs to start from the pretrained weights)"))
    return problems


def _check_metric(metric: Any) -> list[Problem]:
    """metric_for_best_model must be one DPOTrainer logs (Trainer adds `eval_` itself);
    otherwise the first evaluation fails with a KeyError, long after the pods started."""
    if not isinstance(metric, str) or metric.removeprefix("eval_") in EVAL_METRICS:
        return []
    known = [f"eval_{m}" for m in EVAL_METRICS]
    close = difflib.get_close_matches(metric, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else f"; one of {', '.join(known[:4])}, ..."
    return [Problem(f"{ROOT}.metric_for_best_model", f"{metric!r} is not a metric DPOTrainer "
                    f"logs{hint}")]
