"""Shared fixtures: the in-process Kubernetes API (tests/kubeemu) and the operator on it."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# `tests.kubeemu` and the suites' helpers import as `tests.*`: make that work however
# pytest was started (`python -m pytest` adds the checkout; the `pytest` script does not).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from ftjob_operator.crd import build_crd  # noqa: E402
from tests.kubeemu import Emulator, Faults  # noqa: E402


@pytest.fixture
def kube() -> Iterator[Emulator]:
    """A fresh emulated cluster with the FineTuneJob CRD installed."""
    with Emulator(crds=[build_crd()]) as emu:
        yield emu


@pytest.fixture
def kubeconfig(kube: Emulator, tmp_path, monkeypatch) -> str:
    path = kube.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return str(path)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def never(predicate: Callable[[], Any], seconds: float, what: str,
          interval: float = 0.05) -> None:
    """Fail if `predicate()` becomes truthy within `seconds` (a window for a wrong action)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        assert not value, f"{what} happened: {value!r}"
        time.sleep(interval)


@pytest.fixture
def run_operator(kubeconfig: str, monkeypatch) -> Callable[..., contextlib.AbstractContextManager]:
    """Context manager factory: the real operator (kopf) in a thread against `kube`."""
    from kopf.testing import KopfRunner

    monkeypatch.setenv("FTJOB_RESYNC_SECONDS", "2")
    monkeypatch.setenv("FTJOB_TRAINER_IMAGE", "ftjob/trainer:test")

    @contextlib.contextmanager
    def start(**env: str) -> Iterator[KopfRunner]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        args = ["run", "--standalone", "--all-namespaces", "-m", "ftjob_operator.handlers"]
        with KopfRunner(args, timeout=60) as runner:
            yield runner
        assert runner.exception is None, runner.output

    return start


__all__ = ["Faults", "never", "wait_for"]
