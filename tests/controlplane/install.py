"""Put things into a running control plane the way a user or a platform team would:
`kubectl apply`, namespaces under Pod Security `restricted`, a ServiceAccount's kubeconfig.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from .cluster import ControlPlane, write_kubeconfig

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def chart_rbac(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The operator's ServiceAccount and RBAC exactly as `helm template` renders them (with
    the admission webhook on, which adds the right to publish its CA). `values` go over
    that, top-level key by key, like `--set` (e.g. `replicaCount: 2` adds kopf peering)."""
    from tests.unit.chart.rendering import render

    return [o for o in render({"webhook": {"enabled": True}} | (values or {})) if o["kind"] in
            ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]


def chart_webhook(url: str, namespace: str, failure_policy: str = "Ignore"
                  ) -> dict[str, Any]:
    """The chart's ValidatingWebhookConfiguration, calling an operator outside the cluster
    at `url` for the FineTuneJobs of one namespace."""
    from tests.unit.chart.rendering import one, render

    values = {"webhook": {"enabled": True, "url": url, "failurePolicy": failure_policy,
                          "namespaceSelector": {"matchLabels": {
                              "kubernetes.io/metadata.name": namespace}}}}
    return one(render(values), "ValidatingWebhookConfiguration")


def kubectl(plane: ControlPlane, *args: str, input: str | None = None,
            kubeconfig: Path | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [str(plane.binary("kubectl")), f"--kubeconfig={kubeconfig or plane.kubeconfig}", *args]
    done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n"
                             f"{done.stderr}{done.stdout}")
    return done


def apply(plane: ControlPlane, objects: list[dict[str, Any]], **kwargs: Any) -> str:
    """`kubectl apply` (client-side validation against the server's OpenAPI included)."""
    return kubectl(plane, "apply", "-f", "-", input=yaml.safe_dump_all(objects), **kwargs).stdout


def wait_established(plane: ControlPlane, crd_name: str, timeout: float = 60) -> None:
    """Until the CRD is served (its Established condition is True)."""
    deadline = time.monotonic() + timeout
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd_name}"
    while True:
        code, body = plane.get(path)
        conditions = ((json.loads(body).get("status") or {}).get("conditions") or []
                      if code == 200 else [])
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"CRD {crd_name} not Established after {timeout}s: "
                                 f"{code} {conditions}")
        time.sleep(0.1)


def namespace(name: str, restricted: bool = True) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": dict(RESTRICTED) if restricted else {}}}


def create_namespace(plane: ControlPlane, name: str, restricted: bool = True,
                     timeout: float = 30) -> None:
    """A namespace (Pod Security `restricted` by default) once its `default` ServiceAccount
    exists: the ServiceAccount admission plugin refuses pods until the controller made it."""
    apply(plane, [namespace(name, restricted)])
    deadline = time.monotonic() + timeout
    while plane.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] != 200:
        if time.monotonic() > deadline:
            raise AssertionError(f"namespace {name}: no default ServiceAccount after {timeout}s")
        time.sleep(0.1)


def delete_namespace(plane: ControlPlane, name: str, timeout: float = 120) -> None:
    """Delete a namespace and wait until it is gone, clearing the finalizers of the
    FineTuneJobs in it (the operator that put them there may be stopped)."""
    kubectl(plane, "delete", "namespace", name, "--wait=false", "--ignore-not-found")
    deadline = time.monotonic() + timeout
    while plane.get(f"/api/v1/namespaces/{name}")[0] != 404:
        code, body = plane.get(f"/apis/finetune.dev/v1alpha1/namespaces/{name}/finetunejobs")
        for item in (json.loads(body).get("items") or []) if code == 200 else []:
            if item["metadata"].get("finalizers"):
                kubectl(plane, "patch", "finetunejob", item["metadata"]["name"], "-n", name,
                        "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False)
        if time.monotonic() > deadline:
            raise AssertionError(f"namespace {name} still exists after {timeout}s")
        time.sleep(0.2)


def service_account_kubeconfig(plane: ControlPlane, namespace: str, account: str, path: Path,
                               seconds: int = 24 * 3600) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (a TokenRequest token)."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": seconds}}
    done = kubectl(plane, "create", "--raw",
                   f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
                   "-f", "-", input=json.dumps(request))
    token = json.loads(done.stdout)["status"]["token"]
    return write_kubeconfig(path, plane.server, plane.pki.ca_cert,
                            user=f"system:serviceaccount:{namespace}:{account}", token=token)


def audit_events(plane: ControlPlane, user: str | None = None) -> list[dict[str, Any]]:
    """The API server's audit log (one JSON event per request), optionally of one user."""
    if not plane.audit_log.exists():
        return []
    events = []
    for line in plane.audit_log.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        if user is None or (event.get("user") or {}).get("username") == user:
            events.append(event)
    return events
