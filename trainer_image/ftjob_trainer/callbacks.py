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
