"""The validating webhook on the real control plane: `kubectl apply` refuses what `ftjob
validate` refuses, with the field paths, through the chart's ValidatingWebhookConfiguration
and the operator's self-signed certificate (the operator runs in-process, so the chart's
`webhook.url` points the API server at it)."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from ftjob_api.manifest_reader import read_manifest
from ftjob_api.validation import validate_document
from ftjob_operator import admission

from tests.controlplane.cluster import free_port
from tests.controlplane.install import apply, chart_webhook, kubectl
from tests.integration.operator.helpers import (TIMEOUT, Real, bring_up, condition, manifest,
                                                phase_is, status)
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def with_args(**args: Any) -> dict[str, Any]:
    return manifest(trainingArguments={"max_steps": 5, **args})


# What users get wrong, in the style of examples/: (manifest, paths and words the refusal
# must contain).
INVALID = {
    "typo": (with_args(learning_rat=5e-5),
             ["spec.trainingArguments.learning_rat", "did you mean learning_rate?"]),
    "renamed key": (with_args(evaluation_strategy="steps"),
                    ["spec.trainingArguments.evaluation_strategy", "renamed to `eval_strategy`"]),
    "fp16 on cpu": (with_args(fp16=True),
                    ["spec.trainingArguments.fp16", "gpusPerNode is 0"]),
    "best model, mismatched strategies": (
        manifest(dataset={"files": {"train": "/data/train.jsonl",
                                    "validation": "/data/validation.jsonl"}},
                 trainingArguments={"max_steps": 5, "load_best_model_at_end": True,
                                    "eval_strategy": "steps", "save_strategy": "epoch"}),
        ["spec.trainingArguments.load_best_model_at_end", "needs eval_strategy and "
         "save_strategy to match"]),
}


class Webhook:
    """The chart's webhook configuration for this test's namespace, and the operator
    environment that serves it on a loopback port."""

    def __init__(self, cluster: Any, failure_policy: str = "Ignore"):
        self.cluster = cluster
        self.port = free_port()
        self.config = chart_webhook(f"https://127.0.0.1:{self.port}", cluster.ns,
                                    failure_policy)
        self.name = self.config["metadata"]["name"]
        self.env = {"FTJOB_WEBHOOK_PORT": str(self.port), "FTJOB_WEBHOOK_ADDR": "127.0.0.1",
                    "FTJOB_WEBHOOK_HOSTS": "127.0.0.1",
                    "FTJOB_WEBHOOK_CONFIGURATION": self.name}

    def ca_bundle(self) -> str | None:
        done = kubectl(self.cluster.plane, "get", "validatingwebhookconfiguration", self.name,
                       "-o", "json")
        return json.loads(done.stdout)["webhooks"][0]["clientConfig"].get("caBundle")


@pytest.fixture
def webhook(cluster, request):
    hook = Webhook(cluster, getattr(request, "param", "Ignore"))
    apply(cluster.plane, [hook.config])
    yield hook
    kubectl(cluster.plane, "delete", "validatingwebhookconfiguration", hook.name,
            "--ignore-not-found")


@pytest.fixture
def h(cluster) -> Real:
    return Real(cluster)


def kubectl_apply(cluster: Any, doc: dict[str, Any], *args: str):
    return kubectl(cluster.plane, "apply", "-n", cluster.ns, "-f", "-", *args,
                   input=yaml.safe_dump(doc), check=False)


def answering(webhook: Webhook) -> None:
    """Until the API server calls the webhook with the CA now in its configuration: a
    server-side dry run of an invalid job is denied by it. The API server reads webhook
    configurations through its own watch, a moment after they are stored; until then it
    cannot call the webhook (under `Ignore` it admits anything, under `Fail` it refuses
    with a certificate error)."""
    doc, _ = INVALID["typo"]
    last = ""

    def denied() -> bool:
        nonlocal last
        done = kubectl_apply(webhook.cluster, doc, "--dry-run=server")
        last = done.stderr if done.returncode != 0 else "(admitted)"
        return 'admission webhook "validate.finetune.dev" denied the request' in last

    wait_for(denied, TIMEOUT, what="the API server to call the webhook", interval=0.5,
             describe=lambda: f"last answer: {last}")


def ready(webhook: Webhook) -> str:
    """Until the operator has published its CA and the API server calls the webhook with
    it; returns the CA."""
    ca = wait_for(webhook.ca_bundle, TIMEOUT, what="webhook CA in the configuration")
    answering(webhook)
    return ca


def assert_refused(cluster: Any, doc: dict[str, Any], expected: list[str]) -> str:
    done = kubectl_apply(cluster, doc)
    assert done.returncode != 0, f"admitted:\n{done.stdout}{done.stderr}"
    assert 'admission webhook "validate.finetune.dev" denied the request' in done.stderr, \
        done.stderr
    for text in expected:
        assert text in done.stderr, f"{text!r} not in:\n{done.stderr}"
    return done.stderr


def test_invalid_manifests_are_refused_with_every_problem(cluster, webhook, run_operator):
    with run_operator(**webhook.env):
        ready(webhook)
        for case, (doc, expected) in INVALID.items():
            stderr = assert_refused(cluster, doc, expected)
            # The same problems as `ftjob validate`, every one of them.
            for problem in validate_document(doc):
                assert str(problem) in stderr, f"{case}: {problem} not in:\n{stderr}"
        # Nothing was stored.
        listed = kubectl(cluster.plane, "get", "finetunejobs", "-n", cluster.ns, "-o", "name")
        assert listed.stdout.strip() == ""


def test_valid_examples_are_admitted(cluster, webhook, run_operator):
    paths = sorted(EXAMPLES.glob("*.yaml"))
    assert len(paths) >= 4
    with run_operator(**webhook.env):
        ready(webhook)
        for path in paths:
            for doc in read_manifest(str(path)):
                body = copy.deepcopy(doc.body)
                body["metadata"].pop("namespace", None)
                # Server-side dry run goes through admission without the operator starting
                # the job (the webhook declares no side effects).
                done = kubectl_apply(cluster, body, "--dry-run=server")
                assert done.returncode == 0, f"{doc.label}: {done.stderr}"
        # ...and the webhook was asked: the same example with a typo is refused.
        body = copy.deepcopy(read_manifest(str(paths[0]))[0].body)
        body["metadata"].pop("namespace", None)
        body["spec"].setdefault("trainingArguments", {})["num_train_epoch"] = 1
        assert_refused(cluster, body, ["spec.trainingArguments.num_train_epoch",
                                       "did you mean num_train_epochs?"])


def test_typo_outside_training_arguments_is_refused_by_the_schema(cluster, webhook,
                                                                  run_operator):
    """Only trainingArguments keeps unknown keys; elsewhere kubectl's strict field validation
    refuses a typo (and without it the server prunes the key before admission)."""
    doc = manifest()
    doc["spec"]["resources"]["gpuPerNode"] = 1
    with run_operator(**webhook.env):
        ready(webhook)
        done = kubectl_apply(cluster, doc)
        assert done.returncode != 0 and 'unknown field "spec.resources.gpuPerNode"' in \
            done.stderr, done.stderr
        # Without field validation the server prunes the key before admission: the webhook
        # never sees it, and the job is stored without it.
        done = kubectl_apply(cluster, doc, "--validate=false")
        assert done.returncode == 0, done.stderr
        stored = json.loads(kubectl(cluster.plane, "get", "finetunejob", "demo", "-n",
                                    cluster.ns, "-o", "json").stdout)
        assert "gpuPerNode" not in stored["spec"]["resources"]
        # In trainingArguments the same carelessness is caught: the key is kept for the webhook.
        typo, expected = INVALID["typo"]
        done = kubectl_apply(cluster, {**typo, "metadata": {"name": "typo"}}, "--validate=false")
        assert done.returncode != 0 and all(t in done.stderr for t in expected), done.stderr
    explain = kubectl(cluster.plane, "explain", "finetunejobs.spec.trainingArguments.learning_rate")
    assert "number" in explain.stdout and "learning rate" in explain.stdout.lower(), \
        explain.stdout


def test_spec_edit_of_a_started_job_is_admitted_with_the_condition_as_warning(
        h, cluster, webhook, run_operator):
    with run_operator(**webhook.env):
        ready(webhook)
        done = kubectl_apply(cluster, manifest())
        assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr
        bring_up(h)
        edited = manifest(trainingArguments={"max_steps": 500})
        done = kubectl_apply(cluster, edited)
        assert done.returncode == 0, done.stderr
        cond = wait_for(lambda: condition(status(h), "SpecChangeIgnored"), TIMEOUT,
                        what="SpecChangeIgnored")
        assert f"Warning: {cond['message']}" in done.stderr, done.stderr
        # An edit that breaks the spec is refused even on a started job.
        assert_refused(cluster, manifest(trainingArguments={"max_step": 500}),
                       ["spec.trainingArguments.max_step", "did you mean max_steps?"])
        # Mutable fields and metadata go through without a word.
        done = kubectl(cluster.plane, "label", "finetunejob", "demo", "-n", cluster.ns, "team=nlp")
        assert "Warning" not in done.stderr, done.stderr


def test_restarted_operator_publishes_its_new_certificate(cluster, webhook, run_operator):
    doc, expected = INVALID["typo"]
    with run_operator(**webhook.env):
        first = ready(webhook)
        assert_refused(cluster, doc, expected)
    with run_operator(**webhook.env):
        second = wait_for(lambda: (ca := webhook.ca_bundle()) != first and ca, TIMEOUT,
                          what="the new CA in the configuration")
        assert second != first
        answering(webhook)  # the API server trusts the new CA only once it has read it
        assert_refused(cluster, doc, expected)
        done = kubectl_apply(cluster, manifest())
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("webhook", ["Fail"], indirect=True)
def test_self_signed_certificate_is_renewed_without_a_gap(cluster, webhook, run_operator,
                                                          monkeypatch):
    """Lifetimes of a minute, renewed 50 s early: the new CA is trusted (published next to
    the old one) before the new certificate is served, so no request meets a certificate
    the API server does not trust. With `Fail`, such a request would be refused with a TLS
    error instead of being quietly admitted, so the test sees it. kopf's server restarts its
    listener when the certificate files change; a request in that instant is refused with
    the connection (not the certificate), which is kopf's and retried here."""
    monkeypatch.setattr(admission, "CERT_LIFETIME", timedelta(seconds=60))
    monkeypatch.setattr(admission, "RENEW_BEFORE", timedelta(seconds=50))
    monkeypatch.setattr(admission, "FILE_CHECK_SECONDS", 0.2)
    doc, expected = INVALID["typo"]
    with run_operator(**webhook.env):
        seen = {ready(webhook)}

        def renewed_twice() -> bool:
            done = kubectl_apply(cluster, doc)
            assert done.returncode != 0, f"admitted:\n{done.stdout}{done.stderr}"
            assert "x509" not in done.stderr and "certificate" not in done.stderr, done.stderr
            if "failed calling webhook" not in done.stderr:  # else: the listener's restart
                assert_refused(cluster, doc, expected)
            seen.add(webhook.ca_bundle())
            return len(seen) >= 3

        wait_for(renewed_twice, TIMEOUT, what="two renewals")


def test_operator_down_ignore_admits_and_the_operator_fails_the_job_later(
        h, cluster, webhook, run_operator):
    """The default policy: an unreachable webhook admits; the operator, once back, marks the
    job Failed with the messages the webhook would have given."""
    doc, expected = INVALID["typo"]
    with run_operator(**webhook.env):
        ready(webhook)
        assert_refused(cluster, doc, expected)
    done = kubectl_apply(cluster, doc)
    assert done.returncode == 0, done.stderr
    with run_operator(**webhook.env):
        wait_for(phase_is(h, "Failed"), TIMEOUT, what="Failed")
        assert all(text in status(h)["message"] for text in expected), status(h)


@pytest.mark.parametrize("webhook", ["Fail"], indirect=True)
def test_operator_down_fail_refuses_writes_but_never_deletes(h, cluster, webhook, run_operator):
    with run_operator(**webhook.env):
        ready(webhook)
        assert kubectl_apply(cluster, manifest()).returncode == 0
        wait_for(lambda: status(h).get("phase"), TIMEOUT, what="the operator's first status")
    done = kubectl_apply(cluster, manifest(name="second"))
    assert done.returncode != 0 and "failed calling webhook" in done.stderr, done.stderr
    # Metadata-only updates are not sent to the webhook, so they pass; deletes are never
    # sent, and no finalizer of the operator's holds the job until it is back.
    kubectl(cluster.plane, "label", "finetunejob", "demo", "-n", cluster.ns, "team=nlp")
    kubectl(cluster.plane, "delete", "finetunejob", "demo", "-n", cluster.ns, "--wait=false")
    wait_for(lambda: h.get_job() is None, TIMEOUT, what="job deleted")


def test_certificate_from_mounted_files(cluster, webhook, run_operator, tmp_path):
    """cert-manager's way: the operator serves the Secret's files and leaves the CA bundle
    to the cainjector (played here by a patch)."""
    import base64

    from ftjob_operator.admission import CERT_FILE, KEY_FILE, self_signed_certificate

    cert, key = self_signed_certificate(["127.0.0.1"])
    (tmp_path / CERT_FILE).write_bytes(cert)
    (tmp_path / KEY_FILE).write_bytes(key)
    ca = base64.b64encode(cert).decode()
    patch = {"webhooks": [{"name": "validate.finetune.dev", "clientConfig": {"caBundle": ca}}]}
    kubectl(cluster.plane, "patch", "validatingwebhookconfiguration", webhook.name,
            "--type=strategic", "-p", json.dumps(patch))
    env = {k: v for k, v in webhook.env.items() if k != "FTJOB_WEBHOOK_CONFIGURATION"}
    doc, expected = INVALID["renamed key"]
    with run_operator(FTJOB_WEBHOOK_CERT_DIR=str(tmp_path), **env):
        wait_for(lambda: kubectl_apply(cluster, doc, "--dry-run=server").returncode != 0,
                 TIMEOUT, what="the webhook answering")
        assert_refused(cluster, doc, expected)
        assert webhook.ca_bundle() == ca
