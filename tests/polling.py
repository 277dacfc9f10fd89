"""Polling with a deadline: the one way tests and benchmarks wait for something."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    """A condition was not met in time; the message names it and the state last seen."""


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.1, describe: Callable[[], str] | None = None) -> T:
    """Call `probe` until it returns something truthy and return that; fail after `timeout`.

    The failure names what was awaited, the last value seen and, through `describe`, any
    state worth showing, so a red test says why without rerunning it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"\n{describe()}" if describe is not None else ""
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what} "
                          f"(last: {value!r}){detail}")
        time.sleep(interval)


def never(probe: Callable[[], Any], seconds: float, what: str, interval: float = 0.05) -> None:
    """Fail if `probe()` becomes truthy within `seconds` (a window for a wrong action)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = probe()
        assert not value, f"{what} happened: {value!r}"
        time.sleep(interval)
