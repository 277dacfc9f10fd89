"""Every pod the chart or the operator creates meets the "restricted" Pod Security Standard."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from .pss import restricted_violations
from .rbac import Call, allowed, grants
from .rendering import (
    KUBE_VERSION, NON_DEFAULT_VALUES, RELEASE, RELEASE_NAMESPACE, ROOT, one, pod_specs, render,
)

VALUE_SETS = {"defaults": {}, "non-default": NON_DEFAULT_VALUES}

COMPLIANT = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "c", "image": "x", "securityContext": {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def breaking(path: str, value) -> dict:
    """A copy of COMPLIANT with one field set (dotted path; digits index lists)."""
    pod = copy.deepcopy(COMPLIANT)
    *parents, leaf = path.split(".")
    node = pod
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if isinstance(node, list):
        node.append(value)
    else:
        node[leaf] = value
    return pod


@pytest.mark.parametrize("pod, expected", [
    (breaking("hostNetwork", True), "hostNetwork"),
    (breaking("securityContext.runAsNonRoot", False), "runAsNonRoot must be true"),
    (breaking("securityContext.runAsUser", 0), "runAsUser must not be 0"),
    (breaking("securityContext.seccompProfile", {"type": "Unconfined"}), "seccompProfile"),
    (breaking("containers.0.securityContext.allowPrivilegeEscalation", True),
     "allowPrivilegeEscalation"),
    (breaking("containers.0.securityContext.privileged", True), "privileged"),
    (breaking("containers.0.securityContext.capabilities", {"add": ["SYS_ADMIN"],
                                                             "drop": ["ALL"]}), "SYS_ADMIN"),
    (breaking("containers.0.securityContext.capabilities", {}), "drop must contain ALL"),
    (breaking("containers.0.ports", [{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    (breaking("volumes.x", {"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
    (breaking("initContainers", [{"name": "init", "image": "x"}]), "initContainers[init]"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_checker_reports_each_violation(pod, expected):
    problems = restricted_violations(pod)
    assert any(expected in p for p in problems), problems


def test_checker_passes_a_compliant_pod():
    assert restricted_violations(COMPLIANT) == []


# ---------------------------------------------------------------------------- chart


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS)
def test_chart_pods_are_restricted(values):
    pods = list(pod_specs(render(values)))
    assert pods, "the chart renders no pod"
    for where, spec in pods:
        assert restricted_violations(spec) == [], where


def test_operator_has_read_only_root_and_a_writable_tmp():
    spec = one(render(), "Deployment")["spec"]["template"]["spec"]
    emptydirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    for container in spec["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts.get("/tmp") in emptydirs, container["name"]


def test_weakening_the_security_context_is_caught():
    # The values are free-form Kubernetes objects: what a user overrides is checked too.
    values = {"securityContext": {"allowPrivilegeEscalation": True, "capabilities": {"drop": None}}}
    [(_, spec)] = pod_specs(render(values))
    assert len(restricted_violations(spec)) == 2


# ---------------------------------------------------------------------------- training pods


def training_specs():
    """The examples plus variants that change the pod shape (GPUs, queue, claim, token)."""
    from ftjob_api.manifests import load_file

    docs = [d.body for path in sorted((ROOT / "examples").glob("*.yaml"))
            for d in load_file(path) if d.body.get("kind") == "FineTuneJob"]
    assert docs, "no FineTuneJob in examples/"
    variant = copy.deepcopy(docs[0])
    variant["metadata"]["name"] = "variant"
    variant["spec"]["resources"] = {"nodes": 3, "gpusPerNode": 8, "cpu": "32", "memory": "256Gi"}
    variant["spec"]["model"]["hfTokenSecretRef"] = {"name": "hf", "key": "token"}
    variant["spec"]["scheduling"] = {"queueName": "gpu", "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    variant["spec"]["storage"] = {"existingClaim": "shared-checkpoints"}
    variant["spec"]["env"] = [{"name": "WANDB_API_KEY",
                               "secretKeyRef": {"name": "wandb", "key": "key"}}]
    return docs + [variant]


def rendered_training_objects():
    from ftjob_api import api
    from ftjob_operator import render as render_mod
    from ftjob_operator.settings import Settings

    settings = Settings(trainer_image="ghcr.io/ftjob/trainer:0.1.0")
    out = []
    for body in training_specs():
        spec = api.parse_spec(body["spec"])
        job = render_mod.JobRef(name=body["metadata"]["name"], namespace="team-a",
                                uid="0b3f6c2e-7d41-4c59-9a52-1f0e8d2c3b4a")
        objects = render_mod.render_job_objects(job, spec, body["spec"], settings)
        objects += render_mod.render_pods(job, spec, attempt=2, settings=settings)
        out.append((job.name, objects))
    return out


def test_training_pods_are_restricted_and_valid():
    checked = 0
    for job, objects in rendered_training_objects():
        for where, spec in pod_specs(objects):
            assert restricted_violations(spec) == [], f"job {job}: {where}"
            checked += 1
        for obj in objects:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    assert checked >= 5  # every example plus the 3-node variant


@pytest.mark.parametrize("watch", [[], ["team-a"]], ids=["all-namespaces", "namespace-list"])
def test_operator_may_grant_the_job_roles_it_creates(watch):
    """Kubernetes refuses a Role granting more than its creator holds (no `escalate` verb):
    every rule of a job's Role must be allowed to the operator in the job's namespace."""
    granted = grants(render({"watchNamespaces": watch}), RELEASE, RELEASE_NAMESPACE)
    for job, objects in rendered_training_objects():
        for role in (o for o in objects if o["kind"] == "Role"):
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        res, _, sub = resource.partition("/")
                        for name in rule.get("resourceNames") or [None]:
                            for verb in rule["verbs"]:
                                call = Call(verb, group, res, sub, role["metadata"]["namespace"],
                                            name)
                                assert allowed(granted, call), f"job {job}: cannot grant {call}"
