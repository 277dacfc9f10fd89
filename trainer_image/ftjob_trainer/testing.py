"""Fault injection for the project's own tests: a rank that stops stepping (a hang).

Honoured only when `FTJOB_TEST_MODE=1`. Users cannot set either variable in a cluster (the
operator reserves every `FTJOB_*` name) and the operator never sets them, so these hooks
only act in tests that launch the trainer themselves.

    FTJOB_TEST_HANG_AT_STEP=N   once step N is done (logged, saved), world rank
                                FTJOB_TEST_HANG_RANK (default 1, or 0 when alone) blocks
                                until killed instead of starting step N+1; its peers block
                                in that step's gradient all-reduce, as in an NCCL deadlock.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from transformers import TrainerCallback

log = logging.getLogger(__name__)

ENV_TEST_MODE = "FTJOB_TEST_MODE"
ENV_HANG_AT_STEP = "FTJOB_TEST_HANG_AT_STEP"
ENV_HANG_RANK = "FTJOB_TEST_HANG_RANK"


class HangAtStep(TrainerCallback):
    def __init__(self, step: int, rank: int) -> None:
        self.step = step
        self.rank = rank

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step and args.process_index == self.rank:
            log.warning("test hook: rank %d hangs at step %d", self.rank, self.step)
            threading.Event().wait()  # forever; only a kill ends it


def hooks(env: Mapping[str, str]) -> list[TrainerCallback]:
    if env.get(ENV_TEST_MODE) != "1" or not env.get(ENV_HANG_AT_STEP):
        return []
    world = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get(ENV_HANG_RANK) or (1 if world > 1 else 0))
    return [HangAtStep(int(env[ENV_HANG_AT_STEP]), rank)]
