"""spec.earlyStopping -> Hugging Face's EarlyStoppingCallback, with its patience counter
carried over a resume.

Trainer stores the callback's counter in each checkpoint's trainer_state.json
(`stateful_callbacks`) but restores it only with `restore_callback_states_from_checkpoint`,
which also restores TrainerControl (a preemption's `should_training_stop` among it). ftjob
restores just the counter, so a run killed between two evaluations stops where an
uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftjob_api import api

CALLBACK_NAME = "EarlyStoppingCallback"
COUNTER = "early_stopping_patience_counter"


def saved_counter(trainer_state: dict[str, Any]) -> int:
    """The patience counter recorded in a checkpoint's trainer_state.json (pure); 0 if none."""
    saved = (trainer_state.get("stateful_callbacks") or {}).get(CALLBACK_NAME)
    if isinstance(saved, list):
        saved = saved[0] if saved else None
    if not isinstance(saved, dict):
        return 0
    value = (saved.get("attributes") or {}).get(COUNTER, 0)
    return value if isinstance(value, int) and value >= 0 else 0


def build(spec: api.EarlyStopping, checkpoint: Path | None):
    from transformers import EarlyStoppingCallback

    callback = EarlyStoppingCallback(early_stopping_patience=spec.patience,
                                     early_stopping_threshold=spec.threshold)
    if checkpoint is not None:
        try:
            state = json.loads((checkpoint / "trainer_state.json").read_text())
        except (OSError, ValueError):
            state = {}
        setattr(callback, COUNTER, saved_counter(state))
    return callback


def stop_message(*, counter: int, patience: int, threshold: float, global_step: int,
                 max_steps: int, metric: str | None, best_metric: float | None,
                 best_checkpoint: str | None) -> str | None:
    """Why training ended before max_steps, or None if it did not stop early (pure). The
    best checkpoint is Trainer's: the best value of the metric, threshold or not."""
    if counter < patience or global_step >= max_steps:
        return None
    by = f" by more than {threshold:g}" if threshold > 0 else ""
    text = (f"stopped early at step {global_step} of {max_steps}: {metric} did not improve{by} "
            f"for {patience} evaluation{'s' if patience != 1 else ''}")
    if best_metric is not None:
        text += f"; best {metric} {best_metric:.4g}"
        if best_checkpoint:
            text += f" at {Path(best_checkpoint).name}"
    return text
