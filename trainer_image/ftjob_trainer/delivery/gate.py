"""The quality gate: a finished job's final metrics against one bound (pure).

`{metric: eval_accuracy, min: 0.9}` passes when the final evaluation's `eval_accuracy` is at
least 0.9; `{metric: eval_loss, max: 0.5}` when `eval_loss` is at most 0.5. Bounds are
inclusive. The metrics are those the trainer writes to `metrics.json` (`"metrics"`):
Trainer's names, `train_*`, `eval_*` and `test_*` (the test split's).

Metric names, as Trainer reads `metric_for_best_model`: an `eval_` or `test_` name is read
as it is (`eval_accuracy`, `test_f1`, `eval_rewards/accuracies`); any other name is the
evaluation's, with `eval_` in front (`accuracy` reads `eval_accuracy`, `loss` reads
`eval_loss`). So a gate reads only what the model scored on held-out data, never a
`train_*` figure. The same rule as `ftjob_api.api.output.gate_metric_key`, which the API
validates the gate with; GateResult names the key that was read.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

EVAL_PREFIX = "eval_"
GATE_PREFIXES = ("eval_", "test_")  # the final evaluation's splits: evaluation, test
_LISTED = 20  # metric names listed when the gate's is not among them


@dataclass(frozen=True)
class GateResult:
    metric: str  # the key read (an eval_ or test_ name; metric_key), also when absent
    value: float | None  # its final value; None when absent or not a number
    bound: float  # the bound it was checked against
    passed: bool
    message: str  # one line, for the job's condition and events


def check_gate(metrics: dict[str, Any], metric: str, min: float | None = None,
               max: float | None = None) -> GateResult:
    """Check `metrics` (metrics.json's "metrics") against `min` or `max` (exactly one).

    Raises ValueError for a gate without exactly one finite bound or without a metric name
    (spec validation refuses those before a job starts). A metric that is absent, not a
    number or not finite fails the gate, saying which metrics there are."""
    bound, kind = _bound(metric, min, max)
    name = metric_key(metric)
    if name not in metrics:
        return GateResult(name, None, bound, False, _absent_message(metrics, metric, name))
    raw = metrics[name]
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return GateResult(name, None, bound, False,
                          f"quality gate failed: {name} is {raw!r} in the final evaluation, "
                          f"not a finite number to compare with the {kind} {_num(bound)}")
    value = float(raw)
    passed = value >= bound if kind == "minimum" else value <= bound
    relation = (">=" if passed else "<") if kind == "minimum" else ("<=" if passed else ">")
    verdict = "passed" if passed else "failed"
    shown_value, shown_bound = _nums(value, bound)
    return GateResult(name, value, bound, passed,
                      f"quality gate {verdict}: {name} {shown_value} {relation} {shown_bound} "
                      f"(the {kind})")


def resolve_metric(metrics: dict[str, Any], metric: str) -> str | None:
    """The key of `metrics` the gate reads (`metric_key`), or None when it is not there."""
    key = metric_key(metric)
    return key if key in metrics else None


def metric_key(metric: str) -> str:
    """`eval_`/`test_` names as they are, any other name with `eval_` in front."""
    return metric if metric.startswith(GATE_PREFIXES) else EVAL_PREFIX + metric


def _bound(metric: str, minimum: float | None, maximum: float | None) -> tuple[float, str]:
    if not isinstance(metric, str) or not metric:
        raise ValueError("quality gate: no metric named")
    if (minimum is None) == (maximum is None):
        which = "both" if minimum is not None else "neither"
        raise ValueError(f"quality gate on {metric}: give exactly one of min and max "
                         f"({which} given)")
    kind, bound = ("minimum", minimum) if minimum is not None else ("maximum", maximum)
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
        raise ValueError(f"quality gate on {metric}: the {kind} {bound!r} is not a finite number")
    return float(bound), kind


def _absent_message(metrics: dict[str, Any], metric: str, key: str) -> str:
    names = sorted(k for k in metrics if isinstance(k, str))
    asked = key if key == metric else f"{key} ({metric} of the evaluation)"
    if not names:
        return f"quality gate failed: {asked} is not in the final metrics: the job recorded none"
    evaluated = [n for n in names if n.startswith(GATE_PREFIXES)]
    hint = ""
    if not evaluated:
        hint = "; the job evaluated nothing (no evaluation or test split)"
    if metric.startswith("train_"):
        hint += "; a gate reads the evaluation's (eval_) or the test split's (test_) metrics"
    close = difflib.get_close_matches(key, evaluated, n=1)
    if close:
        hint += f"; did you mean {close[0]}?"
    listed = evaluated or names
    shown = ", ".join(listed[:_LISTED]) + (f" and {len(listed) - _LISTED} more"
                                           if len(listed) > _LISTED else "")
    return (f"quality gate failed: {asked} is not in the final evaluation's metrics "
            f"({shown}){hint}")


def _num(value: float) -> str:
    return f"{value:.6g}"


def _nums(value: float, bound: float) -> tuple[str, str]:
    """Value and bound for a message: six digits, or all of them where six look equal."""
    if value != bound and _num(value) == _num(bound):
        return repr(value), repr(bound)
    return _num(value), _num(bound)
