"""The pod runner against Docker and the real API server, with small shell pods.

Checks the kubelet duties the scenarios rely on, each in seconds: env and ConfigMap
files reach the container, the claim is one folder shared by pods, exit code and
termination message come back in the Pod status, and deletion is SIGTERM, then the grace
period, then SIGKILL.
"""

from __future__ import annotations

import json

import pytest

from .podrunner.docker import Docker
from tests.polling import wait_for

pytestmark = pytest.mark.e2e

BASE_IMAGE = "local/ftjob-base:bookworm"
NS = "podrunner-tests"


def shell_pod(name: str, script: str, grace: int | None = None, **spec) -> dict:
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main", "image": BASE_IMAGE, "command": ["sh", "-c", script],
                "env": [{"name": "GREETING", "value": "hello"},
                        {"name": "MY_NAME",
                         "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True},
                                 {"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}},
                        {"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}],
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
            **spec,
        },
    }
    if grace is not None:
        pod["spec"]["terminationGracePeriodSeconds"] = grace
    return pod


def read_pod(core, name: str) -> dict | None:
    try:
        return json.loads(core.read_namespaced_pod(name, NS, _preload_content=False).data)
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "status", None) == 404:
            return None
        raise


def terminated(core, name: str) -> dict | None:
    pod = read_pod(core, name)
    for status in ((pod or {}).get("status") or {}).get("containerStatuses") or []:
        if "terminated" in status.get("state", {}):
            return status["state"]["terminated"] | {"phase": pod["status"]["phase"]}
    return None


@pytest.fixture
def cluster(backend):
    """(CoreV1Api, the runner) of the local backend, in a namespace of its own."""
    if backend.name != "local":
        pytest.skip("the pod runner is the local backend's node; other clusters have kubelets")
    from kubernetes import client

    from tests.controlplane.install import create_namespace

    core = client.CoreV1Api(backend.api_client)
    create_namespace(backend.plane, NS, restricted=False)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cfg"},
                                           "data": {"file.txt": "from the config map"}},
                                      _preload_content=False)
    core.create_namespaced_persistent_volume_claim(NS, {
        "metadata": {"name": "shared"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }, _preload_content=False)
    yield core, backend.runner
    core.delete_namespace(NS, _preload_content=False)
    wait_for(lambda: read_namespace_gone(core), 60, f"namespace {NS} to be deleted")


def read_namespace_gone(core) -> bool:
    try:
        core.read_namespace(NS, _preload_content=False)
    except Exception as exc:  # noqa: BLE001
        return getattr(exc, "status", None) == 404
    return False


def test_files_env_claim_exit_code_and_message(cluster):
    core, runner = cluster
    core.create_namespaced_pod(NS, shell_pod(
        "writer",
        'cat /etc/cfg/file.txt > /data/copy.txt && echo "$GREETING from $MY_NAME on $(hostname)"'
        ' > /dev/termination-log && exit 3'), _preload_content=False)
    done = wait_for(lambda: terminated(core, "writer"), 60, "pod writer to terminate",
                    describe=lambda: json.dumps(read_pod(core, "writer"), indent=1))
    assert done["phase"] == "Failed" and done["exitCode"] == 3 and done["reason"] == "Error"
    assert done["message"].strip() == "hello from writer on writer"
    # A second pod sees what the first wrote: one host folder per claim.
    core.create_namespaced_pod(NS, shell_pod("reader", "cat /data/copy.txt > /dev/termination-log"),
                               _preload_content=False)
    done = wait_for(lambda: terminated(core, "reader"), 60, "pod reader to terminate")
    assert done["phase"] == "Succeeded" and done["reason"] == "Completed"
    assert done["message"] == "from the config map"
    assert (runner.claim_dir(NS, "shared") / "copy.txt").read_text() == "from the config map"


def test_delete_is_sigterm_then_grace_then_sigkill(cluster):
    core, runner = cluster
    docker = Docker()
    # Ignores SIGTERM after noting it: only SIGKILL after the grace period ends it.
    core.create_namespaced_pod(NS, shell_pod(
        "stubborn", "trap 'date +%s.%N > /data/stubborn-term' TERM; "
                    "while true; do sleep 0.1; done", grace=3), _preload_content=False)
    # Exits on SIGTERM by itself: must not wait for the grace period.
    core.create_namespaced_pod(NS, shell_pod(
        "polite", "trap 'echo bye > /data/polite-term; exit 0' TERM; "
                  "while true; do sleep 0.1; done", grace=30), _preload_content=False)
    for name in ("stubborn", "polite"):
        wait_for(lambda: (read_pod(core, name) or {}).get("status", {}).get("phase") == "Running",
                 60, f"pod {name} to run")
    containers = {n: runner.container_of(NS, n) for n in ("stubborn", "polite")}
    core.delete_namespaced_pod("stubborn", NS, _preload_content=False)
    core.delete_namespaced_pod("polite", NS, _preload_content=False)
    claim = runner.claim_dir(NS, "shared")
    wait_for(lambda: docker.state(containers["polite"]) is None, 15,
             "the polite container to stop and be removed well before its 30s grace")
    assert (claim / "polite-term").read_text() == "bye\n"
    wait_for(lambda: (claim / "stubborn-term").exists(), 10, "SIGTERM to reach the stubborn pod")
    state = docker.state(containers["stubborn"])
    assert state is not None and state["Running"], "killed without waiting for the grace period"
    # The API server keeps the pod (deletionTimestamp set) while its container stops.
    assert (read_pod(core, "stubborn") or {}).get("metadata", {}).get("deletionTimestamp")
    wait_for(lambda: docker.state(containers["stubborn"]) is None, 30,
             "the stubborn container to be killed after its 3s grace")
    wait_for(lambda: read_pod(core, "stubborn") is None, 10, "the pod object to go")
    assert (runner.logs_dir() / f"{containers['stubborn']}.log").exists()
