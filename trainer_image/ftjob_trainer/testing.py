"""Fault injection for the project's own tests: a rank that stops stepping (a hang).

Honoured only when `FTJOB_TEST_MODE=1`. In a cluster the operator sets these variables
empty on every pod (empty is unset here): validation rejects `FTJOB_*` names in `spec.env`,
and explicit pod `env` wins over `spec.podTemplate.envFrom`, so no user ConfigMap or Secret
can supply them either. These hooks only act in tests that launch the trainer themselves.

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

from ftjob_api import contract
from transformers import TrainerCallback

log = logging.getLogger(__name__)

ENV_TEST_MODE = contract.ENV_TEST_MODE
ENV_HANG_AT_STEP = contract.ENV_TEST_HANG_AT_STEP
ENV_HANG_RANK = contract.ENV_TEST_HANG_RANK


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
