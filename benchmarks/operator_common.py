"""Shared set-up of the operator benchmarks: the emulated API in this process, the operator
as its own process (`python -m ftjob_operator`, as in a cluster), so its memory is its own.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftjob_api import api  # noqa: E402
from ftjob_api.crd import build_crd  # noqa: E402
from tests.kubeemu import Emulator  # noqa: E402
from tests.polling import wait_for  # noqa: E402,F401 - re-exported for the benchmarks

NS = "bench"
SPEC: dict[str, Any] = {
    "task": "sequence-classification",
    "model": {"path": "/models/tiny"},
    "dataset": {"files": {"train": "/data/train.jsonl"}},
    "trainingArguments": {"max_steps": 5},
    "resources": {"nodes": 2},
    "storage": {"accessModes": ["ReadWriteMany"]},
    "restartPolicy": {"maxRestarts": 3, "backoffSeconds": 0},
}


def manifest(name: str, nodes: int = 2) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    spec["resources"]["nodes"] = nodes
    return {"apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def cluster(auto_run_pods: bool = False) -> Iterator[Emulator]:
    with Emulator(crds=[build_crd()], auto_run_pods=auto_run_pods) as emu:
        yield emu


@contextlib.contextmanager
def operator_process(emu: Emulator, **env: str) -> Iterator[subprocess.Popen]:
    """`python -m ftjob_operator` against the emulator; stopped with SIGTERM afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="ftjob-bench-"))
    kubeconfig = emu.write_kubeconfig(workdir / "kubeconfig")
    full_env = {**os.environ, "KUBECONFIG": str(kubeconfig), "FTJOB_LOG_LEVEL": "WARNING",
                "FTJOB_LIVENESS_PORT": str(_free_port()), "FTJOB_RESYNC_SECONDS": "30",
                "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("api", "operator")), **env}
    log = open(workdir / "operator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ftjob_operator"], env=full_env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        # Ready when the operator has listed FineTuneJobs (its watch is open).
        wait_for(lambda: any(c.resource == "finetunejobs" and c.verb == "watch"
                             for c in list(emu.calls)) or proc.poll() is not None,
                 60, "the operator to start watching")
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited: see {workdir / 'operator.log'}")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def rss_mib(pid: int) -> dict[str, float]:
    """Current and peak resident memory of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mib": round(fields.get("VmRSS", 0), 1), "peak_rss_mib": round(fields.get("VmHWM", 0), 1)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
