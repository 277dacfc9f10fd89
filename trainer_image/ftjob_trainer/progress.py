"""Training progress from world rank 0, throttled, through a small reporter interface.

The callback turns Trainer's state into the camelCase `status.progress` and
`status.checkpoint` shapes of the API (api.Progress, api.CheckpointStatus) and hands them to
a Reporter. It writes at most every `interval` seconds, and always on save, evaluation, the
first step of an attempt and the end of training. A reporter that fails is logged and
ignored: progress is a view on training, never a reason to stop it.

Besides the step it says what the run is doing (`activity`: loading, training, evaluating,
saving), which attempt writes (`attempt`) and when `globalStep` last advanced
(`lastStepTime`): the operator's stall detection reads these. A heartbeat thread repeats the
last report every `heartbeat` seconds, so `updatedAt` stays fresh through one long step, an
evaluation or a save, and a run whose `updatedAt` goes stale is one whose process is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from ftjob_api import api
from ftjob_api.contract import rfc3339
from transformers import TrainerCallback

from . import checkpoints
from .exits import numeric_metrics

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0  # at most a minute between two writes of updatedAt
ACTIVITIES = ("loading", "training", "evaluating", "saving")


class Reporter(Protocol):
    def report(self, progress: dict[str, Any], checkpoint: dict[str, Any] | None,
               final: bool = False) -> None: ...

    def close(self) -> None: ...


def due(now: float, last: float | None, interval: float, force: bool) -> bool:
    """Whether a report should be written now (pure)."""
    return force or last is None or now - last >= interval


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
    return api.to_patch(api.Progress(**progress_fields(
        global_step=global_step, max_steps=max_steps, epoch=epoch, loss=loss,
        learning_rate=learning_rate, start_step=start_step, elapsed=elapsed,
        samples_per_step=samples_per_step, eval_metrics=eval_metrics, now=now)))


def progress_fields(*, global_step: int, max_steps: int, epoch: float | None,
                    loss: float | None, learning_rate: float | None, start_step: int,
                    elapsed: float, samples_per_step: int,
                    eval_metrics: dict[str, float] | None, now: float) -> dict[str, Any]:
    """The `api.Progress` fields a training report sets, by name; those without a value
    are left out (they are not sent)."""
    done = global_step - start_step
    steps_per_second = done / elapsed if elapsed > 0 and done > 0 else None
    fields: dict[str, Any] = {
        "global_step": global_step,
        "max_steps": max_steps,
        "percent": round(100.0 * global_step / max_steps, 2) if max_steps else None,
        "epoch": round(epoch, 4) if epoch is not None else None,
        "loss": loss,
        "learning_rate": learning_rate,
        "samples_per_second": round(steps_per_second * samples_per_step, 3)
        if steps_per_second else None,
        "eta_seconds": round(max(0, max_steps - global_step) / steps_per_second, 1)
        if steps_per_second else None,
        "eval_metrics": eval_metrics or None,
        "updated_at": rfc3339(now),
    }
    return {k: v for k, v in fields.items() if v is not None}


def build_checkpoint(latest: checkpoints.Checkpoint | None, resumed_from_step: int,
                     adopted_from: str | None = None) -> dict[str, Any]:
    """status.checkpoint (pure): the newest complete checkpoint, the step resumed from and
    the job whose output folder was adopted (if one was)."""
    adopted = {"adopted_from_job_uid": adopted_from} if adopted_from else {}
    if latest is None:
        return api.to_patch(api.CheckpointStatus(resumed_from_step=resumed_from_step, **adopted))
    saved = {"saved_at": latest.saved_at} if latest.saved_at else {}
    ref = api.CheckpointRef(step=latest.step, path=str(latest.path), **saved)
    return api.to_patch(api.CheckpointStatus(resumed_from_step=resumed_from_step, latest=ref,
                                             **adopted))


class ProgressCallback(TrainerCallback):
    def __init__(self, reporter: Reporter, interval: float = 5.0, clock=time.monotonic,
                 wall=time.time, attempt: int = 0, heartbeat: float = HEARTBEAT_SECONDS,
                 adopted_from: str | None = None) -> None:
        self.reporter = reporter
        self.interval = interval
        self.clock = clock
        self.wall = wall
        self.attempt = attempt
        self.adopted_from = adopted_from  # status.checkpoint.adoptedFromJobUid
        self.heartbeat = heartbeat
        self.last_report: float | None = None
        self.start_time: float | None = None
        self.start_step = 0
        self.loss: float | None = None
        self.learning_rate: float | None = None
        self.eval_metrics: dict[str, float] | None = None
        self.latest: checkpoints.Checkpoint | None = None
        self._activity = "loading"
        self.activity_since = self.wall()  # when the activity last changed
        self.finished = False  # training ended; the final evaluation and save follow
        self.step_seen: int | None = None  # globalStep when this attempt last advanced
        self.last_step_time: float | None = None  # wall time of that
        self._force_log = False  # the log of this attempt's first step reports at once
        self._last: tuple[Any, Any] | None = None  # (args, state) of the last report
        # Held while a report is built and sent: a heartbeat built before a save must not
        # be sent after the save's report (it would roll status.checkpoint back). Reentrant:
        # _emit sends through _report. The Kubernetes reporter's request has a timeout.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def activity(self) -> str:
        return self._activity

    @activity.setter
    def activity(self, value: str) -> None:
        if value != self._activity:
            self._activity = value
            self.activity_since = self.wall()

    # Heartbeat -------------------------------------------------------------------

    def start(self) -> ProgressCallback:
        """Report `loading` now and start the heartbeat (world rank 0 only)."""
        # lastStepTime null: a merge patch deletes the previous attempt's time.
        self._report(api.to_patch(api.Progress(
            activity="loading", attempt=self.attempt,
            activity_since=rfc3339(self.activity_since), last_step_time=None,
            updated_at=rfc3339(self.wall())), keep_none=True), None)
        if self.heartbeat > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="progress-heartbeat",
                                            daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            self.beat()

    def beat(self) -> None:
        """Repeat the last report with a new `updatedAt` (and the current activity)."""
        if self._last is not None:
            self._emit(*self._last, force=True)
        else:
            self._report(api.to_patch(api.Progress(
                activity=self.activity, attempt=self.attempt,
                activity_since=rfc3339(self.activity_since),
                updated_at=rfc3339(self.wall()))), None)

    # Trainer events --------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.finished = False  # a search runs train() again on this callback
            self.start_time = self.clock()
            self.start_step = state.global_step
            self.step_seen = state.global_step
            self.activity = "training"
            self.latest = checkpoints.latest_complete(Path(args.output_dir))
            self._emit(args, state, force=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if "loss" in logs:
            self.loss = float(logs["loss"])
        if "learning_rate" in logs:
            self.learning_rate = float(logs["learning_rate"])
        force, self._force_log = self._force_log, False
        self._emit(args, state, force=force)

    def on_step_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        first = self.last_step_time is None
        if state.global_step != self.step_seen:
            self.step_seen = state.global_step
            self.last_step_time = self.wall()
        # What comes next at this step: an evaluation, a save, or the next step.
        self.activity = ("evaluating" if control.should_evaluate
                         else "saving" if control.should_save else "training")
        if self.activity != "training":
            self._emit(args, state, force=True)  # the operator allows evaluations longer
        elif control.should_log:
            # Trainer is about to log at this step: that event reports (with the new loss);
            # reporting here too would show the step twice.
            self._force_log = first
        else:
            self._emit(args, state, force=first)  # an attempt's first step: at once

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.is_world_process_zero:
            if not self.finished:  # the final evaluation is followed by the final save
                self.activity = "saving" if control.should_save else "training"
            if metrics:
                self.eval_metrics = numeric_metrics(metrics)
            self._emit(args, state, force=True)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{checkpoints.PREFIX}{state.global_step}"
            verdict = checkpoints.verify(folder)
            if verdict.complete:
                self.latest = verdict.checkpoint
            self.activity = "training"
            self._emit(args, state, force=True)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.finished = True
            self.activity = "evaluating"  # the final evaluation and the final model follow
            self._emit(args, state, force=True, final=True)

    # ------------------------------------------------------------------------------

    def _emit(self, args, state, force: bool = False, final: bool = False) -> None:
        with self._lock:  # built and sent at once, in the order the state changed
            self._emit_locked(args, state, force, final)

    def _emit_locked(self, args, state, force: bool, final: bool) -> None:
        now = self.clock()
        if not due(now, self.last_report, self.interval, force):
            return
        self.last_report = now
        self._last = (args, state)
        start = self.start_time if self.start_time is not None else now
        samples_per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                            * max(1, args.world_size))
        fields = progress_fields(
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
        # lastStepTime None before this attempt's first step: a merge patch then deletes the
        # previous attempt's time instead of letting it pass for this one's.
        progress = api.to_patch(api.Progress(
            **fields, activity=self.activity, attempt=self.attempt,
            activity_since=rfc3339(self.activity_since),
            last_step_time=rfc3339(self.last_step_time)
            if self.last_step_time is not None else None), keep_none=True)
        self._report(progress, build_checkpoint(self.latest, self.start_step, self.adopted_from),
                     final)

    def _report(self, progress: dict[str, Any], checkpoint: dict[str, Any] | None,
                final: bool = False) -> None:
        with self._lock:  # the heartbeat thread reports too
            try:
                self.reporter.report(progress, checkpoint, final)
            except Exception:  # noqa: BLE001 - reporting must never stop training
                log.exception("progress reporter failed; training goes on")
