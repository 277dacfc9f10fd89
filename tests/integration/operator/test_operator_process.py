"""`python -m ftjob_operator` as a process: settings from the environment, liveness, a job."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.conftest import wait_for
from tests.integration.operator.helpers import create_job, manifest, pods, status

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "operator"), **extra}


def test_module_runs_the_operator_with_liveness_and_metrics(kube, kubeconfig, tmp_path):
    port, metrics_port = _free_port(), _free_port()
    log = open(tmp_path / "operator.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftjob_operator"], stdout=log, stderr=subprocess.STDOUT,
        env=_env(KUBECONFIG=kubeconfig, FTJOB_LIVENESS_PORT=str(port), FTJOB_LOG_FORMAT="json",
                 FTJOB_TRAINER_IMAGE="example/trainer:7", FTJOB_NAMESPACES="team-a",
                 FTJOB_METRICS_PORT=str(metrics_port)))
    try:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(lambda: healthy() or proc.poll() is not None, what="/healthz")
        assert proc.poll() is None, (tmp_path / "operator.log").read_text()
        create_job(kube, manifest())
        wait_for(lambda: len(pods(kube)) == 2, what="pods from the operator process")
        image = pods(kube)[0]["spec"]["containers"][0]["image"]
        assert image == "example/trainer:7"
        assert wait_for(lambda: status(kube).get("phase") == "Pending")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'ftjob_operator_decisions_total{case="start"} 1.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    # Namespaced mode: the operator listed jobs in its namespace only.
    assert {c.namespace for c in kube.calls if c.resource == "finetunejobs"} == {"team-a"}


def test_bad_setting_stops_with_the_variable_named():
    out = subprocess.run([sys.executable, "-m", "ftjob_operator"], capture_output=True,
                         text=True, env=_env(FTJOB_LOG_FORMAT="xml"), timeout=60)
    assert out.returncode == 2
    assert "FTJOB_LOG_FORMAT: expected text or json, got 'xml'" in out.stderr
