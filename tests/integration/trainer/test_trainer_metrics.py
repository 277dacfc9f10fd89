"""The trainer's Prometheus endpoint: what a pod with `spec.monitoring.metricsPort` serves."""

from __future__ import annotations

import math
import os
import signal
import socket
import urllib.error
import urllib.request

from tests.integration.trainer.helpers import classification_spec, poll, start

MAX_STEPS = 160
CLASSES = 3  # tests/tinymodels.TOPICS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[str, float] | None:
    """The ftjob_* samples on /metrics, or None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    samples = {}
    for line in text.splitlines():
        if line.startswith("ftjob_"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_rank0_serves_prometheus_metrics_while_it_trains(tiny, tmp_path):
    port = free_port()
    # A learning rate too small to move the loss: the classifier head stays fresh, so the
    # loss the gauge shows must be close to ln(classes).
    spec = classification_spec(tiny, max_steps=MAX_STEPS, learning_rate=1e-9, warmup_steps=0,
                               save_steps=10_000)
    # What the operator renders for a job with spec.monitoring (see render.py).
    run = start(tmp_path, spec, nproc=2, isolate=True,
                env={"FTJOB_METRICS_PORT": str(port), "FTJOB_PROGRESS_INTERVAL": "1"})
    try:
        # A report sets the gauges one after the other while the server thread may scrape:
        # wait for a scrape that has the loss and the throughput set after it.
        samples = poll(lambda: (s := scrape(port)) and s.get("ftjob_train_loss")
                       and s.get("ftjob_samples_per_second") and s, 240,
                       f"a training loss and throughput on :{port}/metrics")
    finally:
        os.kill(run.proc.pid, signal.SIGKILL)  # the PID namespace dies with it, like a pod
        run.wait(30)
    assert samples["ftjob_max_steps"] == MAX_STEPS
    assert 1 <= samples["ftjob_global_step"] <= MAX_STEPS
    assert samples["ftjob_global_step"] == int(samples["ftjob_global_step"])
    assert abs(samples["ftjob_train_loss"] - math.log(CLASSES)) < 0.15, samples
    assert samples["ftjob_samples_per_second"] > 0
    # Two processes, one port: only world rank 0 opened it.
    assert "could not serve Prometheus metrics" not in run.log(tail=None)
