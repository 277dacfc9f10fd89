"""admission.review: which requests the webhook refuses, warns about or lets through."""

from __future__ import annotations

import copy
import ipaddress

import pytest
from cryptography import x509
from ftjob_api.validation import validate_document
from ftjob_operator import admission
from ftjob_operator.policies.spec_edits import ignored_changes_message

from tests.integration.operator.helpers import manifest


def job(**args):
    doc = manifest(trainingArguments={"max_steps": 5, **args})
    doc["metadata"].update(namespace="team-a", uid="u1", generation=1)
    return doc


def stored(doc, **status):
    """As the API server sends it: with status and server-set metadata."""
    doc = copy.deepcopy(doc)
    doc["metadata"].update(resourceVersion="7", creationTimestamp="2026-01-01T00:00:00Z",
                           managedFields=[{"manager": "kubectl"}], finalizers=["x/y"])
    doc["status"] = status or {"phase": "Running", "attempt": 1}
    return doc


TYPO = job(learning_rat=1e-4)


def paths(problems):
    return [p.path for p in problems]


CASES = {
    # name: (operation, new, old, started spec, refused paths, warns)
    "valid create": ("CREATE", job(), None, None, [], False),
    "invalid create": ("CREATE", TYPO, None, None, ["spec.trainingArguments.learning_rat"], False),
    "server fields are not the user's": ("CREATE", stored(job()), None, None, [], False),
    "delete is not checked": ("DELETE", TYPO, TYPO, None, [], False),
    "metadata-only update of an invalid job": ("UPDATE", stored(TYPO, phase="Failed"),
                                               stored(TYPO), None, [], False),
    "job being deleted": ("UPDATE", {**TYPO, "spec": job()["spec"], "metadata": {
        **TYPO["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}, TYPO, None, [], False),
    "edit introduces a problem": ("UPDATE", TYPO, job(), None,
                                  ["spec.trainingArguments.learning_rat"], False),
    "edit keeps an old problem": ("UPDATE", job(learning_rat=1e-4, max_steps=6), TYPO, None,
                                  [], True),
    "edit of a started job": ("UPDATE", job(max_steps=50), job(), job()["spec"], [], True),
    "suspend a started job": ("UPDATE", {**job(), "spec": {**job()["spec"], "suspend": True}},
                              job(), job()["spec"], [], False),
}


@pytest.mark.parametrize("case", CASES)
def test_review(case):
    operation, new, old, started, refused, warns = CASES[case]
    problems, warnings = admission.review(operation, new, old, started)
    assert paths(problems) == refused
    assert bool(warnings) == warns, warnings


def test_refusal_names_every_problem_as_ftjob_validate_does():
    doc = job(learning_rat=1e-4, fp16=True)
    problems, _ = admission.review("CREATE", doc, None, None)
    assert problems == validate_document(doc) and len(problems) == 2
    text = admission.refusal("FineTuneJob team-a/demo", problems)
    assert all(f"  {p}" in text.splitlines() for p in problems)


def test_started_job_warning_is_the_condition_message():
    _, warnings = admission.review("UPDATE", job(max_steps=50), job(), job()["spec"])
    assert warnings == [ignored_changes_message(["trainingArguments"])]


def test_old_problems_become_warnings():
    _, warnings = admission.review("UPDATE", job(learning_rat=1e-4, max_steps=6), TYPO, None)
    assert warnings == ["spec.trainingArguments.learning_rat: unknown field; did you mean "
                        "learning_rate?"]


def test_self_signed_certificate_covers_names_and_ips():
    cert_pem, key_pem = admission.self_signed_certificate(
        ["ftjob-webhook.ftjob-system.svc", "127.0.0.1", "0.0.0.0", "ftjob-webhook"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["ftjob-webhook.ftjob-system.svc",
                                                      "ftjob-webhook"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert b"PRIVATE KEY" in key_pem


def test_no_server_without_a_port():
    from ftjob_operator.settings import Settings

    assert isinstance(admission.webhook_server(Settings(), None), admission.NoWebhookServer)


def test_self_signed_server_serves_files_it_renews(tmp_path):
    from ftjob_operator.settings import Settings

    server = admission.webhook_server(
        Settings(webhook_port=9443, webhook_hosts=("a.b.svc", "a"), webhook_configuration="x"),
        publish=lambda ca: None)
    assert (server.port, server.host) == (9443, "a.b.svc")
    assert server.publish is not None and server.certfile == server.self_signed.pair
    files = server.self_signed
    cert = x509.load_pem_x509_certificate(files.ca.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["a.b.svc", "a"]
    assert files.pair.read_bytes().endswith(files.ca.read_bytes())  # key, then certificate
    assert oct(files.pair.stat().st_mode & 0o777) == "0o600"
    days = files.seconds_until_renewal() / 86400
    lifetime, renew = admission.CERT_LIFETIME.days, admission.RENEW_BEFORE.days
    assert lifetime - renew - 1 < days < lifetime - renew


def test_mounted_files_are_served_and_not_published():
    from ftjob_operator.settings import Settings

    server = admission.webhook_server(
        Settings(webhook_port=9443, webhook_cert_dir="/certs", webhook_configuration="x"),
        publish=lambda ca: None)
    assert server.publish is None and server.self_signed is None
    assert str(server.certfile) == "/certs/tls.crt" and str(server.pkeyfile) == "/certs/tls.key"
