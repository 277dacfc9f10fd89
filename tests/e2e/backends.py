"""Where the e2e scenarios run: an emulated cluster on this machine, or a real one.

Both backends answer the same small interface, so the scenarios are written once:

    kubectl(...)            the real kubectl against the backend's API
    kill_container(pod)     SIGKILL the pod's container from outside, as a crash would
    diagnostics()           what to print when a scenario fails

`LocalBackend`: a real control plane built from upstream on this machine, the chart
installed with helm, and the Docker pod runner registered as the one Node.
`ClusterBackend`: whatever KUBECONFIG points at, with the operator already installed
(tests/e2e/run-kind.sh does that on kind).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import yaml

from .podrunner.docker import Docker
from .podrunner.runner import PodRunner
from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "finetune.dev_finetunejobs.yaml"
KUBECTL = os.environ.get("KUBECTL", "kubectl")  # LocalBackend uses the pinned build
OPERATOR_IMAGE = os.environ.get("FTJOB_OPERATOR_IMAGE", "ftjob-operator:dev")
TRAINER_IMAGE = os.environ.get("FTJOB_TRAINER_IMAGE", "ftjob-trainer:dev")
# A namespace the admission webhook is told to leave alone (the chart's
# webhook.namespaceSelector, set by both installs: LocalBackend and run-kind.sh): what the
# operator does with a job the webhook never saw (failurePolicy Ignore while the operator
# was down, a namespace outside the selector).
UNCHECKED_NAMESPACE = "ftjob-e2e-unchecked"
WEBHOOK_NAMESPACE_SELECTOR = {"matchExpressions": [
    {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [UNCHECKED_NAMESPACE]}]}


RESOURCES = {"Pod": "pods", "ConfigMap": "configmaps", "PersistentVolumeClaim":
             "persistentvolumeclaims", "FineTuneJob": "finetunejobs"}
API_PATHS = {"pods": "/api/v1", "configmaps": "/api/v1", "persistentvolumeclaims": "/api/v1",
             "events": "/api/v1", "finetunejobs": "/apis/finetune.dev/v1alpha1"}


class Backend:
    name = "base"

    kubectl_binary = KUBECTL

    def __init__(self, namespace: str, kubeconfig: Path, trainer_image: str) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.trainer_image = trainer_image

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

    def create_namespace(self, name: str) -> None:
        """Another namespace for training jobs (removed by `close`)."""
        raise NotImplementedError

    def in_namespace(self, name: str) -> "Backend":
        """This backend, with its requests going to namespace `name`."""
        other = copy.copy(self)
        other.namespace = name
        return other

    def check(self) -> None:
        """Fail at once when a part of the backend died (instead of at a wait's deadline)."""

    def kill_container(self, pod: str) -> None:
        raise NotImplementedError

    def diagnostics(self) -> str:
        return ""

    def close(self) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalBackend(Backend):
    """A real control plane on this machine (tests/controlplane), the chart installed with
    the real `helm`, and the Docker pod runner as the one Node: the operator runs as the
    chart's Deployment (controller-manager -> ReplicaSet -> Pod -> scheduler -> runner) with
    its ServiceAccount's token, and training namespaces enforce Pod Security `restricted`.
    """

    name = "local"
    NODE = "ftjob-e2e-node"
    RELEASE, RELEASE_NAMESPACE = "ftjob", "ftjob-system"

    def __init__(self, work_dir: Path, namespace: str = "ftjob-e2e") -> None:
        from kubernetes import client, config
        from tests.controlplane import ControlPlane
        from tests.controlplane.install import create_namespace
        from tests.controlplane.nodes import NodeHeartbeat
        from tests.controlplane.volumes import LocalVolumes

        work_dir.mkdir(parents=True, exist_ok=True)
        self.plane = ControlPlane(work_dir / "cluster")
        self.docker = Docker()
        for image in (OPERATOR_IMAGE, TRAINER_IMAGE):
            if not self.docker.image_exists(image):
                raise AssertionError(f"image {image} missing: run scripts/build-images.sh")
        self.plane.start()
        super().__init__(namespace, self.plane.kubeconfig, TRAINER_IMAGE)
        self.kubectl_binary = str(self.plane.binary("kubectl"))
        self.api_client = config.new_client_from_config(config_file=str(self.plane.kubeconfig))
        core = client.CoreV1Api(self.api_client)
        self.node = NodeHeartbeat(core, client.CoordinationV1Api(self.api_client), self.NODE,
                                  capacity={"cpu": "16", "memory": "64Gi", "pods": "110",
                                            "ephemeral-storage": "100Gi"}).start()
        self.volumes = LocalVolumes(core, work_dir / "volumes").start()
        port = int(self.plane.server.rsplit(":", 1)[1])
        self.runner = PodRunner(core, work_dir / "pods", node=self.NODE,
                                api_server=("127.0.0.1", port))
        self.runner.start()
        self._install_chart()
        create_namespace(self.plane, namespace, restricted=True)

    def create_namespace(self, name: str) -> None:
        from tests.controlplane.install import create_namespace
        create_namespace(self.plane, name, restricted=True)

    def _install_chart(self) -> None:
        """`helm install` as a platform team would, with the images built here."""
        repo, tag = OPERATOR_IMAGE.rsplit(":", 1)
        trainer_repo, trainer_tag = TRAINER_IMAGE.rsplit(":", 1)
        webhook_port = _free_port()
        done = subprocess.run([
            str(self.plane.binary("helm")), "install", self.RELEASE, str(REPO / "charts" / "ftjob"),
            f"--kubeconfig={self.plane.kubeconfig}", f"--namespace={self.RELEASE_NAMESPACE}",
            "--create-namespace", "--wait", "--timeout=180s",
            f"--set=image.repository={repo}", f"--set=image.tag={tag}",
            "--set=image.pullPolicy=Never",
            f"--set=trainer.image.repository={trainer_repo}",
            f"--set=trainer.image.tag={trainer_tag}", "--set=trainer.image.pullPolicy=Never",
            # Host network: the liveness port must not clash with anything on this host.
            f"--set=livenessPort={_free_port()}",
            # The admission webhook, called by URL: Endpoints refuse the loopback addresses
            # the pod runner gives pods, but the operator pod shares the host's network, and
            # its self-signed certificate names the URL's host. `Fail`: a webhook that stops
            # answering fails the scenarios instead of being skipped silently.
            "--set=webhook.enabled=true", f"--set=webhook.port={webhook_port}",
            f"--set=webhook.url=https://127.0.0.1:{webhook_port}",
            "--set=webhook.failurePolicy=Fail",
            f"--set-json=webhook.namespaceSelector={json.dumps(WEBHOOK_NAMESPACE_SELECTOR)}",
        ], capture_output=True, text=True, timeout=240)
        if done.returncode != 0:
            raise AssertionError(f"helm install failed:\n{done.stderr}{done.stdout}\n"
                                 f"{self.diagnostics()}")

    def operator_pod(self) -> dict[str, Any] | None:
        query = urllib.parse.urlencode({"labelSelector": "app.kubernetes.io/name=ftjob"})
        done = self.kubectl("get", "--raw",
                            f"/api/v1/namespaces/{self.RELEASE_NAMESPACE}/pods?{query}",
                            check=False)
        items = json.loads(done.stdout).get("items") if done.returncode == 0 else []
        return next(iter(items or []), None)

    def check(self) -> None:
        if self.runner.errors:
            raise AssertionError(f"the pod runner failed:\n{self.diagnostics()}")
        pod = self.operator_pod()
        if pod and (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            raise AssertionError(f"the operator pod ended:\n{self.diagnostics()}")

    def kill_container(self, pod: str) -> None:
        container = self.runner.container_of(self.namespace, pod)
        if container is None:
            raise AssertionError(f"pod {pod} has no running container to kill")
        self.docker.kill(container, "KILL")

    def operator_log(self, tail: int | None = 60) -> str:
        pod = self.operator_pod()
        if pod is None:
            return "(no operator pod)"
        container = self.runner.container_of(self.RELEASE_NAMESPACE, pod["metadata"]["name"])
        if container is None:
            return "(the operator pod has no container)"
        return self.docker.logs(container, tail=tail).decode(errors="replace")

    def diagnostics(self) -> str:
        parts = [f"--- operator log (tail)\n{self.operator_log()}"]
        if self.runner.errors:
            parts.append("--- pod runner errors\n" + "\n".join(self.runner.errors[-10:]))
        parts.append(f"--- pod logs in {self.runner.logs_dir()}; control plane logs in "
                     f"{self.plane.logs_dir}")
        return "\n".join(parts)

    def close(self) -> None:
        self.runner.logs_dir().mkdir(parents=True, exist_ok=True)
        (self.runner.logs_dir() / "operator.log").write_text(self.operator_log(tail=None))
        self.runner.stop()
        self.volumes.stop()
        self.node.stop()
        self.api_client.close()
        self.plane.stop()


class ClusterBackend(Backend):
    """A real cluster from KUBECONFIG; the operator must already run there."""

    name = "cluster"

    def __init__(self, namespace: str | None = None) -> None:
        kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
        namespace = namespace or f"ftjob-e2e-{uuid.uuid4().hex[:6]}"
        super().__init__(namespace, kubeconfig, TRAINER_IMAGE)
        self.namespaces = [namespace]
        self.kubectl("create", "namespace", namespace)

    def create_namespace(self, name: str) -> None:
        done = self.kubectl("create", "namespace", name, check=False)
        if done.returncode != 0 and "AlreadyExists" not in done.stderr:
            raise AssertionError(f"creating namespace {name}: {done.stderr}")
        self.namespaces.append(name)

    def kill_container(self, pod: str) -> None:
        """SIGKILL the container's main process from its node (kind nodes are containers)."""
        node = self.kubectl("get", "pod", pod, "-o", "jsonpath={.spec.nodeName}").stdout.strip()
        script = (
            "set -e; id=$(crictl ps -q --label io.kubernetes.pod.name=%s "
            "--label io.kubernetes.pod.namespace=%s); "
            "pid=$(crictl inspect --output go-template --template '{{.info.pid}}' $id); "
            "kill -9 $pid" % (pod, self.namespace))
        done = subprocess.run([Docker().binary, "exec", node, "sh", "-c", script],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(
                f"could not SIGKILL pod {pod} on node {node} (needs a kind cluster, whose nodes "
                f"are Docker containers): {done.stderr}")

    def diagnostics(self) -> str:
        return self.kubectl("get", "pods,events", "-o", "wide", check=False).stdout

    def close(self) -> None:
        for name in self.namespaces:
            self.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_ready(backend: Backend, timeout: float = 60) -> None:
    """The FineTuneJob resource answers (the CRD is served)."""
    wait_for(lambda: backend.kubectl("get", "finetunejobs", check=False).returncode == 0,
             timeout, "the FineTuneJob API")


def refusal(backend: Backend, job: dict[str, Any], *args: str) -> str | None:
    """What `kubectl apply` answers for `job` when the API server refuses it, None when it
    is admitted (`args`: more kubectl arguments, e.g. --dry-run=server)."""
    done = backend.kubectl("apply", "-f", "-", *args, input=yaml.safe_dump(job), check=False)
    return None if done.returncode == 0 else done.stderr + done.stdout


def wait_admission(backend: Backend, job: dict[str, Any], timeout: float = 120) -> None:
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
