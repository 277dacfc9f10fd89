"""Training progress from world rank 0, throttled, through a small reporter interface.

The callback turns Trainer's state into the camelCase `status.progress` and
`status.checkpoint` shapes of the API (api.Progress, api.CheckpointStatus) and hands them to
a Reporter. It writes at most every `interval` seconds, and always on save, evaluation and
the end of training. A reporter that fails is logged and ignored: progress is a view on
training, never a reason to stop it.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from transformers import TrainerCallback

from . import checkpoints
from .exits import numeric_metrics

log = logging.getLogger(__name__)


class Reporter(Protocol):
    def report(self, progress: dict[str, Any], checkpoint: dict[str, Any] | None,
               final: bool = False) -> None: ...

    def close(self) -> None: ...


def due(now: float, last: float | None, interval: float, force: bool) -> bool:
    """Whether a report should be written now (pure)."""
    return force or last is None or now - last >= interval


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_progress(
    *,
    global_step: int,
    max_steps: int,
    epoch: float | None,
    loss: float | None,
    learning_rate: float | None,
    start_step: int,
    elapsed: float,
    samples_per_step: int,
    eval_metrics: dict[str, float] | None,
    now: float,
) -> dict[str, Any]:
    """The status.progress mapping (pure). Throughput counts only this attempt's steps."""
    done = global_step - start_step
    steps_per_second = done / elapsed if elapsed > 0 and done > 0 else None
    progress: dict[str, Any] = {
        "globalStep": global_step,
        "maxSteps": max_steps,
        "percent": round(100.0 * global_step / max_steps, 2) if max_steps else None,
        "epoch": round(epoch, 4) if epoch is not None else None,
        "loss": loss,
        "learningRate": learning_rate,
        "samplesPerSecond": round(steps_per_second * samples_per_step, 3) if steps_per_second else None,
        "etaSeconds": round(max(0, max_steps - global_step) / steps_per_second, 1)
        if steps_per_second else None,
        "evalMetrics": eval_metrics or None,
        "updatedAt": rfc3339(now),
    }
    return {k: v for k, v in progress.items() if v is not None}


def build_checkpoint(latest: checkpoints.Checkpoint | None, resumed_from_step: int) -> dict[str, Any]:
    status: dict[str, Any] = {"resumedFromStep": resumed_from_step}
    if latest is not None:
        ref: dict[str, Any] = {"step": latest.step, "path": str(latest.path)}
        if latest.saved_at:
            ref["savedAt"] = latest.saved_at
        status["latest"] = ref
    return status


class ProgressCallback(TrainerCallback):
    def __init__(self, reporter: Reporter, interval: float = 5.0, clock=time.monotonic,
                 wall=time.time) -> None:
        self.reporter = reporter
        self.interval = interval
        self.clock = clock
        self.wall = wall
        self.last_report: float | None = None
        self.start_time: float | None = None
        self.start_step = 0
        self.loss: float | None = None
        self.learning_rate: float | None = None
        self.eval_metrics: dict[str, float] | None = None
        self.latest: checkpoints.Checkpoint | None = None

    # Trainer events --------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.start_time = self.clock()
            self.start_step = state.global_step
            self.latest = checkpoints.latest_complete(Path(args.output_dir))
            self._emit(args, state, force=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if "learning_rate" in logs:
            self.learning_rate = float(logs["learning_rate"])
        self._emit(args, state)

    def on_step_end(self, args, state, control, **kwargs):
        # When Trainer is about to log, evaluate or save at this step, that event reports
        # (with the new loss): reporting here too would show the step twice.
        follows = control.should_log or control.should_evaluate or control.should_save
        if state.is_world_process_zero and not follows:
            self._emit(args, state)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero and metrics:
            self.eval_metrics = numeric_metrics(metrics)
            self._emit(args, state, force=True)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{checkpoints.PREFIX}{state.global_step}"
            verdict = checkpoints.verify(folder)
            if verdict.complete:
                self.latest = verdict.checkpoint
            self._emit(args, state, force=True)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._emit(args, state, force=True, final=True)

    # ------------------------------------------------------------------------------

    def _emit(self, args, state, force: bool = False, final: bool = False) -> None:
        now = self.clock()
        if not due(now, self.last_report, self.interval, force):
            return
        self.last_report = now
        start = self.start_time if self.start_time is not None else now
        samples_per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                            * max(1, args.world_size))
        progress = build_progress(
            global_step=state.global_step,
            max_steps=state.max_steps,
            epoch=state.epoch,
            loss=self.loss,
            learning_rate=self.learning_rate,
            start_step=self.start_step,
            elapsed=now - start,
            samples_per_step=samples_per_step,
            eval_metrics=self.eval_metrics,
            now=self.wall(),
        )
        try:
            self.reporter.report(progress, build_checkpoint(self.latest, self.start_step), final)
        except Exception:  # noqa: BLE001 - reporting must never stop training
            log.exception("progress reporter failed; training goes on")
