"""Polling with a deadline: the only way e2e tests wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    pass


def wait_for(probe: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.5, describe: Callable[[], str] | None = None) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds.

    The failure names what was awaited and, through `describe`, the state last seen, so a
    red test says why without rerunning it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"\n{describe()}" if describe is not None else ""
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)
