"""The admission webhook in the chart: what the API server sends it (creates and spec edits of
FineTuneJobs, never deletes or status writes), where (the Service, or a URL), and how its
certificate gets trusted (the operator's self-signed CA, or cert-manager)."""

from __future__ import annotations

import pytest
from ftjob_operator import admission
from ftjob_operator.settings import from_env

from .rendering import RELEASE, RELEASE_NAMESPACE, by_kind, container_env, one, render

ON = {"webhook": {"enabled": True}}
CERT_MANAGER = {"webhook": {"enabled": True, "certificates": {"source": "cert-manager"}}}


def webhook(values) -> dict:
    [hook] = one(render(values), "ValidatingWebhookConfiguration")["webhooks"]
    return hook


def pod_spec(values) -> dict:
    return one(render(values), "Deployment")["spec"]["template"]["spec"]


def env(values) -> dict[str, str]:
    return container_env(pod_spec(values)["containers"][0])


def test_on_by_default_with_a_self_signed_certificate_and_ignore():
    """`helm install` with no values: the webhook through the Service, the operator signing
    its certificate and publishing the CA, and an unreachable webhook blocking nothing."""
    objects = render()
    [config] = by_kind(objects, "ValidatingWebhookConfiguration")
    [hook] = config["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["clientConfig"]["service"]["name"] == one(objects, "Service")["metadata"]["name"]
    settings = from_env(env({}))
    assert settings.webhook_port == 9443
    assert settings.webhook_configuration == config["metadata"]["name"]
    assert settings.webhook_cert_dir is None
    assert by_kind(objects, "Certificate") == by_kind(objects, "Issuer") == []


def test_can_be_turned_off():
    off = {"webhook": {"enabled": False}}
    objects = render(off)
    assert by_kind(objects, "ValidatingWebhookConfiguration") == []
    assert by_kind(objects, "Service") == []
    assert not any(k.startswith("FTJOB_WEBHOOK_") for k in env(off))
    assert from_env(env(off)).webhook_port is None
    # nor does the operator get the right to patch a webhook configuration
    rules = [r for o in objects if o["kind"] in ("ClusterRole", "Role") for r in o["rules"]]
    assert not any("validatingwebhookconfigurations" in r.get("resources", []) for r in rules)


def test_only_creates_and_spec_edits_of_jobs_reach_it():
    hook = webhook(ON)
    assert hook["rules"] == [{"apiGroups": ["finetune.dev"], "apiVersions": ["v1alpha1"],
                              "resources": ["finetunejobs"],  # not finetunejobs/status
                              "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}]
    [condition] = hook["matchConditions"]
    assert "object.spec != oldObject.spec" in condition["expression"]
    assert "deletionTimestamp" in condition["expression"]
    assert hook["sideEffects"] == "None"  # server-side dry runs are checked too
    assert hook["admissionReviewVersions"] == ["v1"]


def test_failure_policy_and_timeout_defaults_and_values():
    hook = webhook(ON)
    assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Ignore", 5)
    hook = webhook({"webhook": {"enabled": True, "failurePolicy": "Fail",
                                "timeoutSeconds": 12}})
    assert (hook["failurePolicy"], hook["timeoutSeconds"]) == ("Fail", 12)


def test_service_reaches_the_operator_port_and_path():
    objects = render(ON)
    pod = one(objects, "Deployment")["spec"]["template"]
    container = pod["spec"]["containers"][0]
    [service] = by_kind(objects, "Service")
    [port] = service["spec"]["ports"]
    target = next(p for p in container["ports"] if p["name"] == port["targetPort"])
    assert target["containerPort"] == int(container_env(container)["FTJOB_WEBHOOK_PORT"])
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    client = webhook(ON)["clientConfig"]
    assert client["service"] == {"name": service["metadata"]["name"],
                                 "namespace": RELEASE_NAMESPACE, "port": port["port"],
                                 "path": f"/{admission.HANDLER_ID}"}
    assert "caBundle" not in client


def test_self_signed_certificate_names_the_service_and_publishes_into_the_configuration():
    settings = from_env(env(ON))
    service = one(render(ON), "Service")["metadata"]["name"]
    # The API server calls a service webhook as <service>.<namespace>.svc.
    assert f"{service}.{RELEASE_NAMESPACE}.svc" in settings.webhook_hosts
    assert settings.webhook_configuration == one(
        render(ON), "ValidatingWebhookConfiguration")["metadata"]["name"] == RELEASE
    assert settings.webhook_cert_dir is None


def test_self_signed_needs_one_replica():
    with pytest.raises(Exception, match="self-signed needs replicaCount 1.*cert-manager.*"
                                        "webhook.enabled=false"):
        render({"replicaCount": 2})
    render({"replicaCount": 2, **CERT_MANAGER})
    render({"replicaCount": 2, "webhook": {"enabled": False}})


def test_cert_manager_certificate_is_mounted_and_injected():
    objects = render(CERT_MANAGER)
    settings = from_env(env(CERT_MANAGER))
    certificate = one(objects, "Certificate")
    assert certificate["spec"]["dnsNames"] == list(settings.webhook_hosts)
    assert one(objects, "Issuer")["spec"] == {"selfSigned": {}}
    assert certificate["spec"]["issuerRef"]["name"] == one(objects, "Issuer")["metadata"]["name"]
    config = one(objects, "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{RELEASE_NAMESPACE}/{certificate['metadata']['name']}")
    assert settings.webhook_configuration is None  # nothing for the operator to publish
    spec = pod_spec(CERT_MANAGER)
    volume = next(v for v in spec["volumes"] if v.get("secret"))
    assert volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount["mountPath"] == settings.webhook_cert_dir and mount["readOnly"]


def test_cert_manager_with_the_users_issuer():
    values = {"webhook": {"enabled": True, "certificates": {
        "source": "cert-manager",
        "certManager": {"issuerRef": {"kind": "ClusterIssuer", "name": "corp-ca"}}}}}
    objects = render(values)
    assert by_kind(objects, "Issuer") == []
    assert one(objects, "Certificate")["spec"]["issuerRef"] == {"kind": "ClusterIssuer",
                                                                "name": "corp-ca"}


def test_namespaces_follow_the_watched_ones_unless_set():
    assert "namespaceSelector" not in webhook(ON)
    selector = webhook({"watchNamespaces": ["team-a", "team-b"], **ON})["namespaceSelector"]
    assert selector == {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                              "operator": "In",
                                              "values": ["team-a", "team-b"]}]}
    own = {"matchLabels": {"ftjob": "on"}}
    assert webhook({"webhook": {"enabled": True, "namespaceSelector": own}})[
        "namespaceSelector"] == own


def test_url_for_an_operator_outside_the_cluster():
    values = {"webhook": {"enabled": True, "url": "https://10.0.0.5:9443/"}}
    assert webhook(values)["clientConfig"] == {"url": "https://10.0.0.5:9443/validate"}
    assert by_kind(render(values), "Service") == []
    assert from_env(env(values)).webhook_hosts == ("10.0.0.5",)  # the certificate's SAN


@pytest.mark.parametrize("bad", [
    {"failurePolicy": "Deny"}, {"timeoutSeconds": 31}, {"url": "http://insecure:80"},
    {"certificates": {"source": "vault"}},
])
def test_values_schema_refuses_bad_webhook_values(bad):
    with pytest.raises(Exception, match="webhook"):
        render({"webhook": {"enabled": True, **bad}})
