"""Graceful stop: SIGTERM or the launcher's stop file -> checkpoint at the next step, exit 30.

In Kubernetes only one node may receive SIGTERM (a drained node), so a rank cannot stop on
its own: at every step boundary the ranks agree with an all_reduce(MAX) of their flags and
then all save the same step. A rank that stopped alone would deadlock the others' save.

Before training begins there is nothing to save, and a rank may be blocked where no step
comes (a rendezvous with a rank that cannot start): SIGTERM then ends the worker at once
(its default action), and the marker file `TRAINING_STARTED` tells the launcher whether a
graceful stop is worth waiting for. `PreemptionCallback.on_train_begin` installs the
handler and writes the marker.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .job import TRAINING_STARTED

log = logging.getLogger(__name__)


class StopRequest:
    """A local wish to stop, from a signal or from a file the launcher creates."""

    def __init__(self, stop_file: Path | None = None) -> None:
        self.stop_file = stop_file
        self.signalled = False

    def install(self) -> StopRequest:
        signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Only a flag: the step in progress finishes and the checkpoint is saved at its end.
        self.signalled = True

    @property
    def requested(self) -> bool:
        return self.signalled or (self.stop_file is not None and self.stop_file.exists())


def agree(local: bool) -> bool:
    """True on every rank when any rank wants to stop (all_reduce MAX; no-op alone)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    flag = torch.tensor([1 if local else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class PreemptionCallback(TrainerCallback):
    """At each step end: if any rank was asked to stop, save this step and stop training."""

    def __init__(self, request: StopRequest, agree_fn=agree,
                 result_dir: Path | None = None) -> None:
        self.request = request
        self.agree = agree_fn
        self.result_dir = result_dir
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        """From here a stop saves a checkpoint: tell the launcher, then catch SIGTERM (a
        worker never catches it while the launcher still thinks training has not begun)."""
        if self.result_dir is not None:
            (self.result_dir / TRAINING_STARTED).touch()
        self.request.install()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped_at is None and self.agree(self.request.requested):
            self.stopped_at = state.global_step
            log.warning("stop requested: saving a checkpoint at step %d and exiting", state.global_step)
            control.should_save = True
            control.should_training_stop = True
        return control
