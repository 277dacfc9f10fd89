"""The checkpoint-completion callback: barrier, marker, rotation, barrier."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

from . import checkpoints

log = logging.getLogger(__name__)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CheckpointMarkerCallback(TrainerCallback):
    """Trainer calls on_save on every rank after that rank wrote its part of checkpoint-N.

    The first barrier means every rank's files are on the volume; then world rank 0 writes
    the marker and rotates old checkpoints (rotation lives here, not in Trainer, so an old
    checkpoint is deleted only once a newer one is known complete); the second barrier
    keeps the other ranks from exiting (and torchrun from killing rank 0) mid-marker.
    """

    def __init__(self, save_total_limit: int | None = None, barrier_fn=barrier) -> None:
        self.save_total_limit = save_total_limit
        self.barrier = barrier_fn

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{checkpoints.PREFIX}{state.global_step}"
        self.barrier()
        if state.is_world_process_zero:
            checkpoints.write_marker(folder, state.global_step)
            keep = {state.best_model_checkpoint} if state.best_model_checkpoint else set()
            for removed in checkpoints.rotate(folder.parent, self.save_total_limit, keep):
                log.info("deleted old checkpoint %s (saveTotalLimit %s)", removed, self.save_total_limit)
        self.barrier()
        return control


class NothingLeftToTrain(Exception):
    """The checkpoint resumed from is at max_steps already (see `StopAtMaxSteps`)."""


class StopAtMaxSteps(TrainerCallback):
    """Trainer resumed from a checkpoint at max_steps trains one more step (its loop checks
    the limit only after a step), so a run stopped at its last step before its final save
    would end one step past max_steps. At train begin the checkpoint's weights and state are
    loaded: raise instead, and let the caller evaluate and save what it holds."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise NothingLeftToTrain(f"resumed at step {state.global_step} of {state.max_steps}")
        return control
