"""`python -m ftjob_operator` as a process on the real control plane, as the chart's
ServiceAccount: settings from the environment, liveness, metrics, a job."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.operator.helpers import (TIMEOUT, Real, describe, healthz_ok, manifest,
                                                parse_time, pods, settled_audit_events, status)
from tests.polling import wait_for

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(str(ROOT / d) for d in ("api", "operator"))  # this checkout's
    return {**os.environ, "PYTHONPATH": path, **extra}


@pytest.mark.cluster
def test_module_runs_the_operator_with_liveness_and_metrics(cluster, tmp_path):
    h = Real(cluster)
    port, metrics_port = _free_port(), _free_port()
    log = open(tmp_path / "operator.log", "w")  # noqa: SIM115 - closed in finally
    started = datetime.now(UTC)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ftjob_operator"], stdout=log, stderr=subprocess.STDOUT,
        env=_env(KUBECONFIG=str(cluster.session.operator_kubeconfig),
                 FTJOB_LIVENESS_PORT=str(port), FTJOB_LOG_FORMAT="json",
                 FTJOB_TRAINER_IMAGE="example/trainer:7", FTJOB_NAMESPACES=h.ns,
                 FTJOB_METRICS_PORT=str(metrics_port)))
    try:
        wait_for(lambda: healthz_ok(port) or proc.poll() is not None, TIMEOUT, what="/healthz")
        assert proc.poll() is None, (tmp_path / "operator.log").read_text()
        h.create_job(manifest())
        wait_for(lambda: len(pods(h)) == 2, TIMEOUT, what="pods from the operator process",
                 describe=lambda: describe(h) + (tmp_path / "operator.log").read_text()[-3000:])
        image = pods(h)[0]["spec"]["containers"][0]["image"]
        assert image == "example/trainer:7"
        assert wait_for(lambda: status(h).get("phase") == "Pending", TIMEOUT, what="Pending")

        # The operator counts a decision once its plan is carried out, after the status
        # patch and the pod creates this test has already seen: poll for the count.
        def start_counted() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                            timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                return None
            return text if 'ftjob_operator_decisions_total{case="start"}' in text else None

        text = wait_for(start_counted, TIMEOUT, what="the start decision on /metrics")
        assert 'ftjob_operator_decisions_total{case="start"} 1.0' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    # Namespaced mode: the operator (as the chart's ServiceAccount) touched jobs in its
    # namespace only; the API server's audit log says so (once it has caught up: the server
    # logs a request after answering it).
    logged = settled_audit_events(h, user=cluster.session.operator_account)
    calls = [e for e in logged
             if (e.get("objectRef") or {}).get("resource") == "finetunejobs"
             and parse_time(e["requestReceivedTimestamp"]) >= started]
    assert calls, "no FineTuneJob request by the operator's ServiceAccount in the audit log"
    assert {e["objectRef"].get("namespace") for e in calls} == {h.ns}
    # ...and it asked for nothing its RBAC refuses (a namespace scan would: a minute of 403s).
    refused = [(e["verb"], e["objectRef"].get("resource"))
               for e in logged
               if (e.get("responseStatus") or {}).get("code") == 403
               and parse_time(e["requestReceivedTimestamp"]) >= started]
    assert refused == [], refused


def test_bad_setting_stops_with_the_variable_named():
    out = subprocess.run([sys.executable, "-m", "ftjob_operator"], capture_output=True,
                         text=True, env=_env(FTJOB_LOG_FORMAT="xml"), timeout=60)
    assert out.returncode == 2
    assert "FTJOB_LOG_FORMAT: expected text or json, got 'xml'" in out.stderr
