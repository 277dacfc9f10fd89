"""spec.podTemplate and spec.monitoring on the real control plane: what the API server stores
for the training pods (after its admission chain), and what it refuses."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from ftjob_api import naming

from tests.integration.operator.helpers import (TIMEOUT, Real, condition, describe, manifest,
                                                objects, parse_time, phase_is, pods, status,
                                                wait_event)
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

METRICS_PORT = 9400
TEMPLATE = {
    "labels": {"team": "nlp", "app.kubernetes.io/part-of": "search"},
    "annotations": {"example.com/owner": "nlp@example.com"},
    "envFrom": [{"configMapRef": {"name": "tracking"}},
                {"secretRef": {"name": "wandb", "optional": True}, "prefix": "WANDB_"}],
}


@pytest.fixture
def h(cluster) -> Real:
    return Real(cluster)


@contextlib.contextmanager
def runtime_class(h: Real, name: str) -> Iterator[None]:
    """A cluster-scoped RuntimeClass for the test, with a pod overhead its admission applies."""
    from kubernetes import client

    node = client.NodeV1Api(h.api_client)
    node.create_runtime_class({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                               "metadata": {"name": name}, "handler": "runc",
                               "overhead": {"podFixed": {"cpu": "10m", "memory": "16Mi"}}})
    try:
        yield
    finally:
        node.delete_runtime_class(name)


def allowing(runtime: str, annotations: str = "") -> dict[str, str]:
    """The operator settings that let jobs name this RuntimeClass and these annotations."""
    return {"FTJOB_ALLOWED_RUNTIME_CLASSES": runtime,
            "FTJOB_ALLOWED_ANNOTATION_PREFIXES": annotations}


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def test_pod_template_and_monitoring_reach_every_pod(h, run_operator):
    runtime = f"gvisor-{h.ns}"
    template = dict(TEMPLATE, runtimeClassName=runtime)
    with runtime_class(h, runtime), run_operator(FTJOB_TRAINER_PROGRESS_INTERVAL="15",
                                                 **allowing(runtime, "example.com/")):
        h.create_job(manifest(podTemplate=template,
                              monitoring={"metricsPort": METRICS_PORT}))
        stored = wait_for(lambda: len(p := pods(h, attempt=1)) == 2 and p, TIMEOUT,
                          what="2 pods", describe=lambda: describe(h))
    for pod in stored:
        meta, spec = pod["metadata"], pod["spec"]
        rank = int(meta["labels"][naming.LABEL_RANK])
        assert meta["labels"] == {**naming.pod_labels("demo", 1, rank), **TEMPLATE["labels"]}
        assert meta["annotations"] == TEMPLATE["annotations"]
        assert spec["runtimeClassName"] == runtime
        # The RuntimeClass admission plugin ran on the pod: it added the class's overhead.
        assert spec["overhead"] == {"cpu": "10m", "memory": "16Mi"}
        container = spec["containers"][0]
        assert container["envFrom"] == TEMPLATE["envFrom"]
        env = env_of(pod)
        assert env["FTJOB_METRICS_PORT"] == str(METRICS_PORT)
        assert env["FTJOB_PROGRESS_INTERVAL"] == "15"  # the operator's default
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == ({"rendezvous": 29500, "metrics": METRICS_PORT} if rank == 0
                         else {"rendezvous": 29500})


def test_missing_runtime_class_is_reported_and_the_job_starts_once_it_exists(h, run_operator):
    # Admission refuses a pod whose RuntimeClass does not exist (HTTP 403); the operator
    # says so in an event and keeps trying.
    runtime = f"later-{h.ns}"
    with run_operator(**allowing(runtime)):
        h.create_job(manifest(podTemplate={"runtimeClassName": runtime}))
        wait_event(h, "ApiRejected")
        rejected = next(e for e in h.list("events") if e["reason"] == "ApiRejected")
        assert f'RuntimeClass "{runtime}" not found' in rejected["message"], rejected["message"]
        assert not pods(h)
        with runtime_class(h, runtime):
            wait_for(lambda: len(pods(h, attempt=1)) == 2, TIMEOUT, what="pods once it exists",
                     describe=lambda: describe(h))


def test_pod_creation_refused_past_pending_timeout_fails_the_job(h, run_operator):
    # The same refusal, never resolved: the status says so while it lasts, and the job fails
    # once it has lasted longer than pendingTimeoutSeconds (the allowance of a Pending pod).
    runtime = f"never-{h.ns}"
    refused = f'RuntimeClass "{runtime}" not found'
    with run_operator(**allowing(runtime)):
        h.create_job(manifest(podTemplate={"runtimeClassName": runtime},
                              restartPolicy={"pendingTimeoutSeconds": 30}))
        pending = wait_for(lambda: (st := status(h)).get("phase") == "Pending"
                           and refused in (st.get("message") or "") and st, TIMEOUT,
                           what="Pending naming the refusal", describe=lambda: describe(h))
        cond = condition(pending, "PodCreationRejected")
        assert cond is not None and cond["status"] == "True", pending
        assert refused in cond["message"] and "pendingTimeoutSeconds" in cond["message"], cond
        st = wait_for(phase_is(h, "Failed"), 30 + TIMEOUT, what="phase Failed",
                      describe=lambda: describe(h))
    failed = condition(st, "Failed")
    assert failed["reason"] == "PodCreationRejected", failed
    assert refused in failed["message"] and "pendingTimeoutSeconds (30s)" in failed["message"]
    # Not before the allowance: from the job's start to its failure, at least 30s passed.
    started, ended = parse_time(st["startTime"]), parse_time(st["completionTime"])
    assert (ended - started).total_seconds() >= 29, st  # both rounded down to whole seconds
    wait_event(h, "PodCreationRejected")
    assert not pods(h)


def test_runtime_class_the_operator_does_not_allow_fails_the_job_naming_the_setting(
        h, run_operator):
    with run_operator(**allowing("nvidia")):
        h.create_job(manifest(podTemplate={"runtimeClassName": "gvisor"}))
        st = wait_for(phase_is(h, "Failed"), TIMEOUT, what="phase Failed",
                      describe=lambda: describe(h))
    cond = condition(st, "InvalidSpec")
    assert ("spec.podTemplate.runtimeClassName: RuntimeClass 'gvisor' is not allowed"
            in cond["message"]), cond["message"]
    assert "FTJOB_ALLOWED_RUNTIME_CLASSES" in cond["message"]
    assert not pods(h)


def test_reserved_label_fails_the_job_naming_the_field(h, run_operator):
    with run_operator():
        h.create_job(manifest(podTemplate={"labels": {naming.LABEL_RANK: "7"}}))
        st = wait_for(phase_is(h, "Failed"), TIMEOUT, what="phase Failed",
                      describe=lambda: describe(h))
        cond = condition(st, "InvalidSpec")
        assert cond["status"] == "True"
        assert (f"spec.podTemplate.labels[{naming.LABEL_RANK}]: {naming.LABEL_RANK} is reserved"
                in cond["message"]), cond["message"]
        assert not pods(h) and not objects(h, "configmaps")


def test_server_rejects_an_env_source_with_two_refs_naming_the_field(h):
    from kubernetes.client.rest import ApiException

    both = {"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}
    with pytest.raises(ApiException) as raised:
        h.create_job(manifest("both", podTemplate={"envFrom": [both]}))
    assert raised.value.status == 422
    causes = json.loads(raised.value.body)["details"]["causes"]
    assert {"field": "spec.podTemplate.envFrom[0]", "reason": "FieldValueInvalid",
            "message": "Invalid value: set exactly one of configMapRef or secretRef"} in causes
