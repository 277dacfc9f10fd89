"""`helm lint` and `helm template` work, and what they produce is valid Kubernetes."""

from __future__ import annotations

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest

from .rendering import (
    CHART_DIR, KUBE_VERSION, NON_DEFAULT_VALUES, RELEASE_NAMESPACE, ROOT, by_kind, chart,
    chart_crds, container_env, label, notes, one, render,
)

MIN_KUBE_VERSION = "1.27"
VALUE_SETS = {"defaults": {}, "non-default": NON_DEFAULT_VALUES}

# The only variables the operator reads (see operator/ftjob_operator); anything else set on
# its container would be dead configuration.
OPERATOR_ENV = {
    "FTJOB_TRAINER_IMAGE", "FTJOB_TRAINER_IMAGE_PULL_POLICY", "FTJOB_TRAINER_IMAGE_PULL_SECRETS",
    "FTJOB_TRAINER_METRICS_PORT", "FTJOB_TRAINER_PROGRESS_INTERVAL",
    "FTJOB_STORAGE_CLASS",
    "FTJOB_STORAGE_SIZE", "FTJOB_NAMESPACES", "FTJOB_LOG_LEVEL", "FTJOB_LOG_FORMAT",
    "FTJOB_PEERING", "FTJOB_LEASE_NAMESPACE", "FTJOB_LIVENESS_PORT", "FTJOB_METRICS_PORT",
    "FTJOB_WEBHOOK_PORT", "FTJOB_WEBHOOK_HOSTS", "FTJOB_WEBHOOK_CERT_DIR",
    "FTJOB_WEBHOOK_CONFIGURATION", "FTJOB_WEBHOOK_CHECK_REFERENCE_ACCESS",
    "FTJOB_ALLOW_PROXY_ENV", "FTJOB_ALLOWED_RUNTIME_CLASSES", "FTJOB_ALLOWED_ANNOTATION_PREFIXES",
}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS)
def test_lint_is_clean(values):
    report = helm.lint(str(CHART_DIR), values, strict=True, namespace=RELEASE_NAMESPACE,
                       kube_version=f"v{KUBE_VERSION}.0")
    findings = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert report["errors"] == [] and findings == [], report


def test_lint_reports_a_broken_template(tmp_path):
    # The lint check above can fail: a chart copy with an unclosed action is reported.
    broken = helm.Chart.load(str(CHART_DIR)).save_dir(str(tmp_path))
    (tmp_path / "ftjob" / "templates" / "broken.yaml").write_text("kind: {{ .Values.x\n")
    report = helm.lint(broken, {}, strict=True)
    assert report["errors"], report


def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> openAPIV3Schema for every CRD the chart installs."""
    out = {}
    for crd in chart_crds():
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            out[(api_version, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return out


# The pinned version, and the oldest one Chart.yaml's kubeVersion admits.
@pytest.mark.parametrize("kube_version", [KUBE_VERSION, MIN_KUBE_VERSION])
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS)
def test_every_rendered_object_is_valid_kubernetes(values, kube_version):
    own_kinds = crd_schemas()
    objects = render(values)
    assert objects
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in own_kinds:  # instances of the chart's own CRDs (kopf peering objects)
            jsonschema.validate(obj, own_kinds[key])
        elif obj["kind"] in ("ServiceMonitor", "PodMonitor", "Certificate", "Issuer"):
            continue  # Prometheus Operator / cert-manager CRDs, not shipped offline; see
            # the monitor tests and test_chart_webhook
        else:
            # strict: unknown fields fail too, which catches misspelled keys in templates.
            kubernetes_validate.validate(obj, kube_version, strict=True)


def test_chart_admits_the_oldest_validated_version():
    assert chart().metadata["kubeVersion"] == f">={MIN_KUBE_VERSION}.0-0"


def test_validation_rejects_a_malformed_object():
    deployment = one(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Always"
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


def test_objects_rendered_by_default():
    kinds = sorted(o["kind"] for o in render())
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service",
                     "ServiceAccount", "ValidatingWebhookConfiguration"]  # Service: the webhook's


def test_objects_rendered_with_every_option_on():
    objects = render(NON_DEFAULT_VALUES)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount",
                            "ServiceMonitor", "PodMonitor", "ValidatingWebhookConfiguration",
                            "Certificate"] + ["Role", "RoleBinding", "KopfPeering", "Service"] * 2
                           + ["Role", "RoleBinding"])  # the replicas' Lease
    for obj in objects:
        assert len(obj["metadata"]["name"]) <= 63, label(obj)


# ---------------------------------------------------------------------------- CRDs


def test_chart_crd_is_a_copy_of_the_generated_crd():
    generated = ROOT / "crds" / "finetune.dev_finetunejobs.yaml"
    copy = CHART_DIR / "crds" / generated.name
    assert copy.read_bytes() == generated.read_bytes(), (
        f"{copy.relative_to(ROOT)} differs from {generated.relative_to(ROOT)}: run `make crds`")


def test_chart_crds_are_valid_apiextensions_v1():
    crds = chart_crds()
    assert {c["metadata"]["name"] for c in crds} == {
        "finetunejobs.finetune.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    for crd in crds:
        for version in (KUBE_VERSION, MIN_KUBE_VERSION):
            kubernetes_validate.validate(crd, version, strict=True)
        assert crd["metadata"]["name"] == f"{crd['spec']['names']['plural']}.{crd['spec']['group']}"
        assert sum(v["storage"] for v in crd["spec"]["versions"]) == 1


def test_helm_loads_the_crds_folder():
    # What `helm install` applies before the templates: both files, nothing from templates/.
    assert sorted(c["filename"].split("/", 1)[1] for c in chart().crds) == [
        "crds/finetune.dev_finetunejobs.yaml", "crds/kopf.dev_peerings.yaml"]


# ---------------------------------------------------------------------------- values schema


@pytest.mark.parametrize("typo, key", [
    ({"replicaCout": 2}, "replicaCout"),
    ({"image": {"pullpolicy": "Always"}}, "pullpolicy"),
    ({"watchNamespace": ["team-a"]}, "watchNamespace"),
    ({"metrics": {"serviceMonitor": {"enable": True}}}, "enable"),
    ({"storage": {"storageClass": "fast"}}, "storageClass"),
])
def test_values_schema_rejects_misspelled_keys(typo, key):
    with pytest.raises(helm.HelmValuesError, match=key):
        render(typo)
    report = helm.lint(str(CHART_DIR), typo, namespace=RELEASE_NAMESPACE)
    assert any(key in e for e in report["errors"]), report


@pytest.mark.parametrize("bad", [
    {"logging": {"format": "xml"}},
    {"logging": {"level": "verbose"}},
    {"image": {"pullPolicy": "Sometimes"}},
    {"replicaCount": 0},
    {"watchNamespaces": ["Team_A"]},
    {"storage": {"size": "lots"}},
    {"livenessPort": 80},
    {"trainer": {"metricsPort": 80}},
    {"trainer": {"metricsPort": 29500}},
    {"trainer": {"progressIntervalSeconds": 0}},
])
def test_values_schema_rejects_bad_values(bad):
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema(bad)


# ---------------------------------------------------------------------------- Deployment


def operator_container(values=None) -> dict:
    return one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_operator_env_defaults():
    env = container_env(operator_container())
    assert env == {
        "FTJOB_TRAINER_IMAGE": "ghcr.io/ftjob/trainer:" + chart().metadata["appVersion"],
        "FTJOB_TRAINER_IMAGE_PULL_POLICY": "IfNotPresent",
        "FTJOB_TRAINER_IMAGE_PULL_SECRETS": "",
        "FTJOB_TRAINER_PROGRESS_INTERVAL": "5",
        "FTJOB_STORAGE_CLASS": "",
        "FTJOB_STORAGE_SIZE": "20Gi",
        "FTJOB_NAMESPACES": "",
        "FTJOB_LOG_LEVEL": "INFO",
        "FTJOB_LOG_FORMAT": "text",
        "FTJOB_LIVENESS_PORT": "8080",
        "FTJOB_ALLOW_PROXY_ENV": "false",
        "FTJOB_ALLOWED_RUNTIME_CLASSES": "",
        "FTJOB_ALLOWED_ANNOTATION_PREFIXES": "",
        "FTJOB_WEBHOOK_PORT": "9443",
        "FTJOB_WEBHOOK_CHECK_REFERENCE_ACCESS": "true",
        "FTJOB_WEBHOOK_HOSTS": "ftjob-webhook.ftjob-system.svc,"
                               "ftjob-webhook.ftjob-system.svc.cluster.local,"
                               "ftjob-webhook.ftjob-system,ftjob-webhook",
        "FTJOB_WEBHOOK_CONFIGURATION": "ftjob",
    }


def test_operator_env_follows_values():
    v = NON_DEFAULT_VALUES
    container = operator_container(v)
    env = container_env(container)
    assert set(env) <= OPERATOR_ENV
    assert env["FTJOB_TRAINER_IMAGE"] == "{repository}:{tag}".format(**v["trainer"]["image"])
    assert env["FTJOB_TRAINER_IMAGE_PULL_POLICY"] == v["trainer"]["image"]["pullPolicy"]
    assert env["FTJOB_TRAINER_IMAGE_PULL_SECRETS"] == "regcred,mirror-creds"
    assert env["FTJOB_TRAINER_METRICS_PORT"] == "9500"
    assert env["FTJOB_TRAINER_PROGRESS_INTERVAL"] == "15"
    assert env["FTJOB_STORAGE_CLASS"] == v["storage"]["storageClassName"]
    assert env["FTJOB_STORAGE_SIZE"] == v["storage"]["size"]
    assert env["FTJOB_NAMESPACES"].split(",") == v["watchNamespaces"]
    assert env["FTJOB_LOG_LEVEL"] == "DEBUG" and env["FTJOB_LOG_FORMAT"] == "json"
    assert env["FTJOB_PEERING"] == v["peering"]["name"]
    assert env["FTJOB_METRICS_PORT"] == str(v["metrics"]["port"])
    assert env["FTJOB_ALLOW_PROXY_ENV"] == "true"
    assert env["FTJOB_ALLOWED_RUNTIME_CLASSES"] == "nvidia,gvisor"
    assert env["FTJOB_ALLOWED_ANNOTATION_PREFIXES"] == "example.com/,sidecar.istio.io/inject"
    assert env["FTJOB_WEBHOOK_CHECK_REFERENCE_ACCESS"] == "false"
    assert container["image"] == "{repository}:{tag}".format(**v["image"])
    assert container["imagePullPolicy"] == "Always"


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS)
def test_probes_call_kopf_liveness_endpoint(values):
    container = operator_container(values)
    port = int(container_env(container)["FTJOB_LIVENESS_PORT"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        assert ports[get["port"]] == port, probe


def test_pod_placement_and_identity_follow_values():
    v = NON_DEFAULT_VALUES
    deployment = one(render(v), "Deployment")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    assert spec["nodeSelector"] == v["nodeSelector"]
    assert spec["tolerations"] == v["tolerations"]
    assert spec["affinity"] == v["affinity"]
    assert spec["imagePullSecrets"] == v["imagePullSecrets"]
    assert spec["priorityClassName"] == v["priorityClassName"]
    assert spec["serviceAccountName"] == v["serviceAccount"]["name"]
    assert spec["containers"][0]["resources"] == v["resources"]
    assert pod["metadata"]["annotations"] == v["podAnnotations"]
    assert pod["metadata"]["labels"]["cost-center"] == "ml"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    sa = one(render(v), "ServiceAccount")
    assert sa["metadata"]["name"] == v["serviceAccount"]["name"]
    assert sa["metadata"]["annotations"] == v["serviceAccount"]["annotations"]


def test_single_replica_never_overlaps_and_has_no_peering():
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "FTJOB_PEERING" not in container_env(operator_container())
    assert not by_kind(objects, "KopfPeering") and not by_kind(objects, "ClusterKopfPeering")


@pytest.mark.parametrize("namespaces, kind", [([], "ClusterKopfPeering"),
                                              (["team-a", "team-b"], "KopfPeering")])
def test_replicas_share_a_peering_object(namespaces, kind):
    objects = render({"replicaCount": 2, "watchNamespaces": namespaces,
                      "webhook": {"certificates": {"source": "cert-manager"}}})
    env = container_env(one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    peerings = by_kind(objects, kind)
    assert [p["metadata"]["name"] for p in peerings] == [env["FTJOB_PEERING"]] * max(
        1, len(namespaces))
    assert sorted(p["metadata"].get("namespace") or "" for p in peerings) == (
        namespaces or [""])
    assert one(objects, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_metrics_off_by_default():
    assert "FTJOB_METRICS_PORT" not in container_env(operator_container())
    services = by_kind(render(), "Service")
    assert not any(p["name"] == "metrics" for s in services for p in s["spec"]["ports"])


def test_metrics_service_and_monitor_reach_the_operator_port():
    objects = render(NON_DEFAULT_VALUES)
    pod = one(objects, "Deployment")["spec"]["template"]
    container = pod["spec"]["containers"][0]
    # (the webhook's Service carries the same labels but no `metrics` port to scrape)
    [service] = [s for s in by_kind(objects, "Service")
                 if s["metadata"]["name"].endswith("-metrics")]
    [svc_port] = service["spec"]["ports"]
    target = next(p for p in container["ports"] if p["name"] == svc_port["targetPort"])
    assert target["containerPort"] == int(container_env(container)["FTJOB_METRICS_PORT"])
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [RELEASE_NAMESPACE]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [svc_port["name"]]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"


@pytest.mark.parametrize("namespaces", [[], ["team-nlp", "team-vision"]])
def test_pod_monitor_scrapes_the_metrics_port_of_rank_0_only(namespaces):
    # The chart's PodMonitor against the pods render.py builds for a job with a metrics port.
    from ftjob_api import api, contract
    from ftjob_operator import render as operator_render
    from ftjob_operator.settings import Settings

    monitor = one(render({**NON_DEFAULT_VALUES, "watchNamespaces": namespaces}), "PodMonitor")
    spec = api.parse_spec({"task": "causal-lm", "model": {"name": "gpt2"},
                           "dataset": {"name": "x"}, "resources": {"nodes": 2}})
    job = operator_render.JobRef("demo", "team-nlp", "uid")
    settings = Settings(trainer_metrics_port=NON_DEFAULT_VALUES["trainer"]["metricsPort"])
    scraped = []
    for pod in operator_render.render_pods(job, spec, 1, settings):
        selected = monitor["spec"]["selector"]["matchLabels"].items() <= (
            pod["metadata"]["labels"].items())
        ports = [p["name"] for p in pod["spec"]["containers"][0]["ports"]]
        if selected and monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports:
            scraped.append(pod["metadata"]["name"])
    assert scraped == ["demo-1-0"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == contract.METRICS_PORT_NAME
    assert monitor["spec"]["namespaceSelector"] == (
        {"matchNames": namespaces} if namespaces else {"any": True})
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus"
    assert by_kind(render(), "PodMonitor") == []  # off by default


def test_notes_tell_the_next_command():
    deployment = one(render(NON_DEFAULT_VALUES), "Deployment")
    text = notes(NON_DEFAULT_VALUES)
    assert (f"kubectl -n {RELEASE_NAMESPACE} rollout status "
            f"deployment/{deployment['metadata']['name']}") in text
    assert "kubectl apply -n team-nlp" in text
    assert "team-nlp, team-vision" in text


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS)
def test_operator_accepts_the_rendered_environment(values):
    # The operator's own parser reads the Deployment's env: a value the chart renders but
    # the operator rejects (or reads differently) fails here, not at pod start.
    from ftjob_operator import settings as settings_mod

    merged = chart().merge_values(values)
    settings = settings_mod.from_env(container_env(operator_container(values)))
    trainer = merged["trainer"]["image"]
    assert settings.trainer_image == f"{trainer['repository']}:{trainer['tag'] or chart().metadata['appVersion']}"
    assert settings.trainer_image_pull_policy == trainer["pullPolicy"]
    assert settings.trainer_image_pull_secrets == tuple(
        s["name"] for s in merged["trainer"]["imagePullSecrets"])
    assert settings.trainer_metrics_port == (merged["trainer"]["metricsPort"] or None)
    assert settings.trainer_progress_interval == merged["trainer"]["progressIntervalSeconds"]
    assert settings.storage_class == (merged["storage"]["storageClassName"] or None)
    assert settings.storage_size == merged["storage"]["size"]
    assert settings.namespaces == tuple(merged["watchNamespaces"])
    assert (settings.log_level, settings.log_format) == (merged["logging"]["level"],
                                                         merged["logging"]["format"])
    assert settings.liveness_port == merged["livenessPort"]
    assert settings.metrics_port == (merged["metrics"]["port"] if merged["metrics"]["enabled"]
                                     else None)
    assert settings.peering == (merged["peering"]["name"] if merged["replicaCount"] > 1
                                else None)
    assert settings.lease_namespace == (RELEASE_NAMESPACE if merged["replicaCount"] > 1
                                        else None)
    webhook = merged["webhook"]
    assert settings.webhook_port == (webhook["port"] if webhook["enabled"] else None)
