"""The cluster the e2e scenarios run on, through a small interface:

    kubectl(...)            the real kubectl against the cluster's API
    kill_container(pod)     SIGKILL the pod's container on its node, as a crash would
    exec / drain / uncordon what a user or an administrator does with kubectl
    diagnostics()           what to print when a scenario fails

`ClusterBackend`: whatever KUBECONFIG points at, with the operator already installed
(tests/e2e/run-kind.sh does that on the kind cluster of `make kind-up`).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
KUBECTL = os.environ.get("KUBECTL", "kubectl")  # run-kind.sh sets the pinned build
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
TRAINER_IMAGE = os.environ.get("FTJOB_TRAINER_IMAGE", "ftjob-trainer:dev")
# A namespace the admission webhook is told to leave alone (the chart's
# webhook.namespaceSelector, as run-kind.sh installs it): what the
# operator does with a job the webhook never saw (failurePolicy Ignore while the operator
# was down, a namespace outside the selector).
UNCHECKED_NAMESPACE = "ftjob-e2e-unchecked"
WEBHOOK_NAMESPACE_SELECTOR = {"matchExpressions": [
    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [UNCHECKED_NAMESPACE]}]}


RESOURCES = {"Pod": "pods", "ConfigMap": "configmaps", "PersistentVolumeClaim":
             "persistentvolumeclaims", "FineTuneJob": "finetunejobs"}
API_PATHS = {"pods": "/api/v1", "configmaps": "/api/v1", "persistentvolumeclaims": "/api/v1",
             "events": "/api/v1", "finetunejobs": "/apis/finetune.dev/v1alpha1"}


class ClusterBackend:
    """A real cluster from KUBECONFIG; the operator must already run there. Its requests go
    to a fresh namespace of its own (Pod Security `restricted`), removed by `close`."""

    kubectl_binary = KUBECTL

    def __init__(self, namespace: str | None = None) -> None:
        self.kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
        self.namespace = namespace or f"ftjob-e2e-{uuid.uuid4().hex[:6]}"
        self.trainer_image = TRAINER_IMAGE
        self.namespaces: list[str] = []
        self.create_namespace(self.namespace)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [self.kubectl_binary, f"--kubeconfig={self.kubeconfig}",
               f"--namespace={self.namespace}", *args]
        done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[3:])} failed ({done.returncode}):\n"
                                 f"{done.stderr}{done.stdout}")
        return done

    def apply(self, *objects: dict[str, Any]) -> None:
        """`kubectl apply` (FineTuneJobs: the user's way in)."""
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    # Core objects go through `kubectl ... --raw`: the same requests on every backend.

    def path(self, resource: str, name: str = "") -> str:
        group = API_PATHS[resource]
        return f"{group}/namespaces/{self.namespace}/{resource}" + (f"/{name}" if name else "")

    def create(self, obj: dict[str, Any]) -> None:
        """Create an object; one that already exists is left as it is."""
        resource = RESOURCES[obj["kind"]]
        done = self.kubectl("create", "--raw", self.path(resource), "-f", "-",
                            input=json.dumps(obj), check=False)
        if done.returncode != 0 and "AlreadyExists" not in done.stderr + done.stdout:
            raise AssertionError(f"creating {obj['kind']} {obj['metadata']['name']}: "
                                 f"{done.stderr}{done.stdout}")

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        done = self.kubectl("get", "--raw", self.path(resource, name), check=False)
        if done.returncode != 0:
            if "NotFound" in done.stderr or "not found" in done.stderr:
                return None
            raise AssertionError(f"reading {resource}/{name}: {done.stderr}")
        return json.loads(done.stdout)

    def list(self, resource: str, label_selector: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"labelSelector": label_selector})
        done = self.kubectl("get", "--raw", f"{self.path(resource)}?{query}")
        return json.loads(done.stdout).get("items") or []

    def delete(self, resource: str, name: str) -> None:
        """Delete with the default grace period; returns at once (like --wait=false)."""
        done = self.kubectl("delete", "--raw", self.path(resource, name), check=False)
        if done.returncode != 0 and "NotFound" not in done.stderr:
            raise AssertionError(f"deleting {resource}/{name}: {done.stderr}")

    def in_namespace(self, name: str) -> "ClusterBackend":
        """This backend, with its requests going to namespace `name`."""
        other = copy.copy(self)
        other.namespace = name
        return other

    def create_namespace(self, name: str) -> None:
        """A namespace for training jobs that enforces Pod Security `restricted`, as a
        careful cluster would: every pod the operator makes must pass it."""
        done = self.kubectl("create", "namespace", name, check=False)
        if done.returncode != 0 and "AlreadyExists" not in done.stderr:
            raise AssertionError(f"creating namespace {name}: {done.stderr}")
        self.kubectl("label", "--overwrite", "namespace", name,
                     "pod-security.kubernetes.io/enforce=restricted")
        self.namespaces.append(name)

    def kill_container(self, pod: str) -> None:
        """SIGKILL the container's main process from its node (kind nodes are containers)."""
        node = self.kubectl("get", "pod", pod, "-o", "jsonpath={.spec.nodeName}").stdout.strip()
        script = (
            "set -e; id=$(crictl ps -q --label io.kubernetes.pod.name=%s "
            "--label io.kubernetes.pod.namespace=%s); "
            "pid=$(crictl inspect --output go-template --template '{{.info.pid}}' $id); "
            "kill -9 $pid" % (pod, self.namespace))
        done = subprocess.run([DOCKER, "exec", node, "sh", "-c", script],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(
                f"could not SIGKILL pod {pod} on node {node} (needs a kind cluster, whose nodes "
                f"are Docker containers): {done.stderr}")

    def exec(self, pod: str, *command: str) -> str:
        """stdout of `command` run in the pod's container (`kubectl exec`)."""
        return self.kubectl("exec", pod, "--", *command).stdout

    def drain(self, node: str) -> None:
        """`kubectl drain` as an administrator would before maintenance: cordon, then evict
        every pod (SIGTERM, grace period) except DaemonSets'."""
        self.kubectl("drain", node, "--ignore-daemonsets", "--delete-emptydir-data", "--force",
                     "--timeout=180s", timeout=240)

    def uncordon(self, node: str) -> None:
        self.kubectl("uncordon", node, check=False)

    def diagnostics(self) -> str:
        return self.kubectl("get", "pods,events", "-o", "wide", check=False).stdout

    def close(self) -> None:
        for name in self.namespaces:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_ready(backend: ClusterBackend, timeout: float = 60) -> None:
    """The FineTuneJob resource answers (the CRD is served)."""
    wait_for(lambda: backend.kubectl("get", "finetunejobs", check=False).returncode == 0,
             timeout, "the FineTuneJob API")


def refusal(backend: ClusterBackend, job: dict[str, Any], *args: str) -> str | None:
    """What `kubectl apply` answers for `job` when the API server refuses it, None when it
    is admitted (`args`: more kubectl arguments, e.g. --dry-run=server)."""
    done = backend.kubectl("apply", "-f", "-", *args, input=yaml.safe_dump(job), check=False)
    return None if done.returncode == 0 else done.stderr + done.stdout


def wait_admission(backend: ClusterBackend, job: dict[str, Any], timeout: float = 120) -> None:
    """The admission webhook answers: a server-side dry run of an invalid `job` is denied
    by it. Until the operator has published its certificate's CA the API server cannot
    call it (and, under `Ignore`, would admit anything)."""
    last = ""

    def denied() -> bool:
        nonlocal last
        last = refusal(backend, job, "--dry-run=server") or "(admitted)"
        return "denied the request" in last

    wait_for(denied, timeout, "the admission webhook to answer",
             describe=lambda: f"last answer: {last}\n{backend.diagnostics()}")
