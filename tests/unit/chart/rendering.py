"""Render the chart the way `helm template` does (through Helm's Go SDK) into plain dicts."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[3]
CHART_DIR = ROOT / "charts" / "ftjob"
RELEASE = "ftjob"
RELEASE_NAMESPACE = "ftjob-system"
KUBE_VERSION = "1.32"  # the schemas objects are validated against; kubectl here is 1.32 too

# Every value the chart exposes set away from its default (but `webhook.enabled`, on by
# default: its other values only matter when it is on): the "upgrade" a platform team
# might run on a GPU cluster with two watched namespaces, HA replicas and monitoring.
NON_DEFAULT_VALUES: dict[str, Any] = {
    "replicaCount": 2,
    "image": {"repository": "registry.example.com/ml/ftjob-operator", "tag": "1.2.3",
              "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "fullnameOverride": "ml-ftjob",
    "watchNamespaces": ["team-nlp", "team-vision"],
    "trainer": {"image": {"repository": "registry.example.com/ml/ftjob-trainer",
                          "tag": "1.2.3-cuda12", "pullPolicy": "Always"},
                "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror-creds"}],
                "metricsPort": 9500, "progressIntervalSeconds": 15,
                "podMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s",
                               "labels": {"release": "kube-prometheus"}}},
    "storage": {"storageClassName": "cephfs", "size": "200Gi"},
    "jobPolicy": {"allowProxyEnv": True, "allowedRuntimeClasses": ["nvidia", "gvisor"],
                  "allowedAnnotationPrefixes": ["example.com/", "sidecar.istio.io/inject"]},
    "logging": {"level": "DEBUG", "format": "json"},
    "livenessPort": 8181,
    "probes": {"liveness": {"periodSeconds": 30, "timeoutSeconds": 3, "failureThreshold": 5},
               "readiness": {"periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
               "startup": {"periodSeconds": 2, "failureThreshold": 60}},
    "metrics": {"enabled": True, "port": 9400,
                "service": {"annotations": {"example.com/scrape": "true"}},
                "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s",
                                   "labels": {"release": "kube-prometheus"}}},
    "webhook": {"enabled": True, "port": 9444, "failurePolicy": "Fail", "timeoutSeconds": 10,
                "checkReferenceAccess": False,
                "namespaceSelector": {"matchLabels": {"ftjob.example.com/enabled": "true"}},
                "certificates": {"source": "cert-manager",
                                 "certManager": {"issuerRef": {"kind": "ClusterIssuer",
                                                               "name": "corp-ca"},
                                                 "duration": "720h", "renewBefore": "240h"}}},
    "peering": {"name": "ml-ftjob"},
    "serviceAccount": {"create": True, "name": "ftjob-controller",
                       "annotations": {"example.com/role": "ftjob"}},
    "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                  "limits": {"cpu": "1", "memory": "1Gi"}},
    "podAnnotations": {"example.com/team": "ml-platform"},
    "podLabels": {"cost-center": "ml"},
    "priorityClassName": "platform-critical",
    "nodeSelector": {"node-role.example.com/system": "true"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system",
                     "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}]}]}}},
}


@lru_cache(maxsize=1)
def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART_DIR))


def render_files(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, like `helm template RELEASE charts/ftjob -n NS`."""
    return chart().render(values or {}, name=RELEASE, namespace=RELEASE_NAMESPACE,
                          is_install=True)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The Kubernetes objects the chart's templates produce (crds/ not included)."""
    objects = []
    for path, text in sorted(render_files(values).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                objects.append(doc)
    return objects


def notes(values: dict[str, Any] | None = None) -> str:
    return next(text for path, text in render_files(values).items() if path.endswith("NOTES.txt"))


def chart_crds() -> list[dict[str, Any]]:
    """The CRDs Helm installs from the chart's crds/ folder before the templates."""
    out = []
    for path in sorted((CHART_DIR / "crds").glob("*.yaml")):
        out.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)
    return out


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def label(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj['kind']} {where}{meta.get('name')}"


POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, pod spec) of every pod the objects run, directly or through a template."""
    for obj in objects:
        if obj["kind"] == "Pod":
            yield label(obj), obj["spec"]
        elif obj["kind"] in POD_TEMPLATE_KINDS:
            yield label(obj), obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield label(obj), obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's variables as its pod would see them; the downward API's
    `metadata.namespace` is the release namespace (where the chart puts the Deployment)."""
    def value(e: dict[str, Any]) -> str | None:
        field = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        return RELEASE_NAMESPACE if field == "metadata.namespace" else e.get("value")
    return {e["name"]: value(e) for e in container.get("env", [])}
