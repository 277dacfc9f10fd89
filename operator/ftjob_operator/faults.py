"""Fault points, for the tests only: places in a plan where the operator kills itself.

A plan is a status write followed by actions (k8s.Kube.record, carry_out). The tests arm a
point with FTJOB_FAULT_POINTS (`<case>:<point>`, `;`-separated; the case as plan.Case
spells it, e.g. `start:after-status`, `rank failed, gang restart:after-DeletePods`), the
operator SIGKILLs itself there, and a restarted operator must finish the plan exactly once:
no duplicate pod, no lost action, no restart counted twice. `<case>:<point>:stop` freezes it
there instead, the first time it gets there (SIGSTOP: every thread, its Lease renewals
too), for the test to wake it once another replica has taken over (leadership.py). Nothing sets the variable outside the tests
(the chart does not know it).
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)
_stopped_at: set[str] = set()  # `:stop` points freeze the process once each


def point_after(action: object) -> str:
    """The point right after an action of this type, e.g. `after-CreatePods`."""
    return f"after-{type(action).__name__}"


def reached(armed: frozenset[str], case: str, point: str) -> None:
    """Die here (SIGKILL: no cleanup, no finalizer, like an OOM kill) when armed; or freeze
    (SIGSTOP) and carry on from here when woken."""
    if f"{case}:{point}:stop" in armed and f"{case}:{point}" not in _stopped_at:
        _stopped_at.add(f"{case}:{point}")
        log.critical("fault point %s:%s reached: stopping the operator", case, point)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGSTOP)
        log.warning("fault point %s:%s: woken, carrying on with the plan", case, point)
    if f"{case}:{point}" in armed:
        log.critical("fault point %s:%s reached: killing the operator", case, point)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
