"""Reporters against real endpoints: the kubernetes client over HTTP, Prometheus, a stream."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from ftjob_trainer.progress_reporters import (ConsoleReporter, FanoutReporter, KubernetesReporter,
                                     NullReporter, PrometheusReporter, build_reporter)


@pytest.fixture
def apiserver():
    """A one-route HTTP server that records what the kubernetes client sends."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.command, self.path, self.headers["Content-Type"], json.loads(body)))
            reply = b'{"kind": "FineTuneJob"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_the_kubernetes_client_sends_a_merge_patch_to_the_status_subresource(apiserver):
    from kubernetes import client

    url, seen = apiserver
    config = client.Configuration()
    config.host = url
    reporter = KubernetesReporter("job-a", "team", api_client=client.ApiClient(config))
    reporter.report({"globalStep": 7, "maxSteps": 10}, {"resumedFromStep": 0})
    reporter.close()
    assert seen == [("PATCH", "/apis/finetune.dev/v1alpha1/namespaces/team/finetunejobs/job-a/status",
                     "application/merge-patch+json",
                     {"status": {"progress": {"globalStep": 7, "maxSteps": 10},
                                 "checkpoint": {"resumedFromStep": 0}}})]


def test_an_unreachable_apiserver_is_logged_not_raised(caplog):
    from kubernetes import client

    config = client.Configuration()
    config.host = "http://127.0.0.1:9"  # discard port: connection refused
    config.retries = 0
    reporter = KubernetesReporter("job-a", "team", api_client=client.ApiClient(config))
    reporter.report({"globalStep": 1}, None)
    assert "could not patch team/job-a" in caplog.text


def test_console_lines_without_a_terminal_and_no_repeats():
    stream = io.StringIO()
    reporter = ConsoleReporter(stream=stream)
    progress = {"globalStep": 5, "maxSteps": 10, "percent": 50.0, "loss": 0.25,
                "samplesPerSecond": 12.5, "etaSeconds": 4.0}
    reporter.report(progress, {"latest": {"step": 5, "path": "/o/checkpoint-5"}})
    reporter.report(progress, {"latest": {"step": 5, "path": "/o/checkpoint-5"}})
    lines = stream.getvalue().splitlines()
    assert lines == ["step 5/10 (50%)  loss 0.2500  12.5 samples/s  eta 4s",
                     "step 5/10  checkpoint-5 complete"]


def test_console_prints_the_last_step_once_through_eval_save_end_and_final_eval():
    """What the end of an epoch sends: the step, its evaluation, its checkpoint, the end of
    training, then the final evaluation (same figures, other runtimes)."""
    stream = io.StringIO()
    reporter = ConsoleReporter(stream=stream)
    step = {"globalStep": 66, "maxSteps": 66, "percent": 100.0, "loss": 0.5,
            "samplesPerSecond": 20.0, "etaSeconds": 0.0}
    evaluated = {**step, "samplesPerSecond": 19.0,
                 "evalMetrics": {"eval_loss": 0.1, "eval_accuracy": 0.99, "eval_runtime": 2.0}}
    final_eval = {**evaluated, "evalMetrics": {**evaluated["evalMetrics"], "eval_runtime": 2.5}}
    saved = {"latest": {"step": 66, "path": "/o/checkpoint-66"}}
    reporter.report(step, None)
    reporter.report(evaluated, None)
    reporter.report(evaluated, saved)
    reporter.report(evaluated, saved, final=True)
    reporter.report(final_eval, saved)
    assert stream.getvalue().splitlines() == [
        "step 66/66 (100%)  loss 0.5000  20.0 samples/s  eta 0s",
        "step 66/66  eval_accuracy 0.9900  eval_loss 0.1000",
        "step 66/66  checkpoint-66 complete",
    ]


def test_prometheus_gauges_follow_the_reports():
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    reporter = PrometheusReporter(0, registry=registry)  # port 0: no server in a unit test
    reporter.report({"globalStep": 3, "loss": 0.5}, {"latest": {"step": 2, "path": "p"}})
    assert registry.get_sample_value("ftjob_global_step") == 3
    assert registry.get_sample_value("ftjob_train_loss") == 0.5
    assert registry.get_sample_value("ftjob_checkpoint_step") == 2


def test_fanout_calls_every_reporter_even_after_one_fails(caplog):
    class Broken:
        def report(self, *a):
            raise RuntimeError("boom")

        def close(self):
            pass

    class Recorder:
        calls = 0

        def report(self, *a):
            Recorder.calls += 1

        def close(self):
            pass

    FanoutReporter([Broken(), Recorder()]).report({}, None)
    assert Recorder.calls == 1 and "Broken failed" in caplog.text


def test_build_reporter_choices(caplog):
    assert isinstance(build_reporter("none", name="j", namespace=None, metrics_port=None), NullReporter)
    assert isinstance(build_reporter("console", name="j", namespace=None, metrics_port=None),
                      ConsoleReporter)
    assert isinstance(build_reporter("kubernetes", name="j", namespace="ns", metrics_port=None),
                      KubernetesReporter)
    assert isinstance(build_reporter("kubernetes", name="j", namespace=None, metrics_port=None),
                      NullReporter)
    assert "FTJOB_NAMESPACE is not set" in caplog.text


def test_console_shows_the_dpo_reward_accuracy():
    stream = io.StringIO()
    reporter = ConsoleReporter(stream=stream)
    reporter.report({"globalStep": 20, "maxSteps": 60, "percent": 33.3, "evalMetrics": {
        "eval_loss": 0.56, "eval_rewards/accuracies": 0.875, "eval_logps/chosen": -9.0}}, None)
    assert "step 20/60  eval_rewards/accuracies 0.8750  eval_loss 0.5600" in \
        stream.getvalue().splitlines()
