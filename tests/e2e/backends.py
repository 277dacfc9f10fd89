"""Where the e2e scenarios run: an emulated cluster on this machine, or a real one.

Both backends answer the same small interface, so the scenarios are written once:

    kubectl(...)            the real kubectl against the backend's API
    kill_container(pod)     SIGKILL the pod's container from outside, as a crash would
    diagnostics()           what to print when a scenario fails

`EmulatedBackend`: the in-process API emulator (tests/kubeemu), the operator image run as
a container with host networking, and the pod runner playing the kubelet.
`ClusterBackend`: whatever KUBECONFIG points at, with the operator already installed
(tests/e2e/run-kind.sh does that on kind).
"""

from __future__ import annotations

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
from .waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "finetune.dev_finetunejobs.yaml"
KUBECTL = os.environ.get("KUBECTL", "kubectl")
OPERATOR_IMAGE = os.environ.get("FTJOB_OPERATOR_IMAGE", "ftjob-operator:dev")
TRAINER_IMAGE = os.environ.get("FTJOB_TRAINER_IMAGE", "ftjob-trainer:dev")


RESOURCES = {"Pod": "pods", "ConfigMap": "configmaps", "PersistentVolumeClaim":
             "persistentvolumeclaims", "FineTuneJob": "finetunejobs"}
API_PATHS = {"pods": "/api/v1", "configmaps": "/api/v1", "persistentvolumeclaims": "/api/v1",
             "events": "/api/v1", "finetunejobs": "/apis/finetune.dev/v1alpha1"}


class Backend:
    name = "base"

    def __init__(self, namespace: str, kubeconfig: Path, trainer_image: str) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.trainer_image = trainer_image

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [KUBECTL, f"--kubeconfig={self.kubeconfig}", f"--namespace={self.namespace}",
               *self.kubectl_extra(args), *args]
        done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[3:])} failed ({done.returncode}):\n"
                                 f"{done.stderr}{done.stdout}")
        return done

    def kubectl_extra(self, args: tuple[str, ...]) -> list[str]:
        return []

    def apply(self, *objects: dict[str, Any]) -> None:
        """`kubectl apply` (FineTuneJobs: the user's way in)."""
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    # Core objects go through `kubectl ... --raw`: the same requests on every backend, and
    # no discovery (the emulator's core discovery is not good enough for kubectl's mapper).

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


class EmulatedBackend(Backend):
    name = "emulated"

    def __init__(self, work_dir: Path, namespace: str = "ftjob-e2e") -> None:
        from kubeemu import Emulator  # tests/ is on sys.path under pytest
        from kubernetes import client, config

        work_dir.mkdir(parents=True, exist_ok=True)
        crd = yaml.safe_load(CRD_FILE.read_text())
        self.emulator = Emulator(crds=[crd]).start()
        kubeconfig = self.emulator.write_kubeconfig(work_dir / "kubeconfig", namespace)
        kubeconfig.chmod(0o644)  # read by the non-root operator and trainer containers
        super().__init__(namespace, kubeconfig, TRAINER_IMAGE)
        self.docker = Docker()
        self.run_id = uuid.uuid4().hex[:8]
        # No Namespace object: the emulator serves namespaced objects without one (and kmock
        # 0.8 cannot parse POST /api/v1/namespaces).
        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))
        self.runner = PodRunner(client.CoreV1Api(self.api_client), work_dir / "pods",
                                namespace=namespace, pod_kubeconfig=kubeconfig)
        self.runner.start()
        self.operator = f"ftjob-e2e-operator-{self.run_id}"
        self._start_operator()

    def _start_operator(self) -> None:
        # Cluster-wide, as the chart installs it by default (the emulator holds nothing else).
        if not self.docker.image_exists(OPERATOR_IMAGE):
            raise AssertionError(f"image {OPERATOR_IMAGE} missing: run scripts/build-images.sh")
        self.docker.run([
            "run", "--detach", f"--name={self.operator}", "--network=host",
            "--mount", f"type=bind,source={self.kubeconfig},target=/etc/ftjob-e2e/kubeconfig,"
                       "readonly",
            "--env", "KUBECONFIG=/etc/ftjob-e2e/kubeconfig",
            "--env", f"FTJOB_TRAINER_IMAGE={self.trainer_image}",
            "--env", "FTJOB_TRAINER_IMAGE_PULL_POLICY=Never",
            # Host network: the liveness port must not clash with anything on this host.
            "--env", f"FTJOB_LIVENESS_PORT={_free_port()}",
            OPERATOR_IMAGE,
        ])

    def kubectl_extra(self, args: tuple[str, ...]) -> list[str]:
        # The emulator serves no OpenAPI document, which client-side validation needs.
        return ["--validate=false"] if args and args[0] in ("apply", "create") else []

    def check(self) -> None:
        state = self.docker.state(self.operator)
        if not state or not state.get("Running"):
            raise AssertionError(f"the operator container exited:\n{self.diagnostics()}")
        if self.runner.errors:
            raise AssertionError(f"the pod runner failed:\n{self.diagnostics()}")

    def kill_container(self, pod: str) -> None:
        container = self.runner.container_of(self.namespace, pod)
        if container is None:
            raise AssertionError(f"pod {pod} has no running container to kill")
        self.docker.kill(container, "KILL")

    def claim_dir(self, claim: str) -> Path:
        return self.runner.claim_dir(self.namespace, claim)

    def diagnostics(self) -> str:
        parts = [f"--- operator log (tail)\n{self.docker.logs(self.operator, tail=60).decode(errors='replace')}"]
        if self.runner.errors:
            parts.append("--- pod runner errors\n" + "\n".join(self.runner.errors[-10:]))
        parts.append(f"--- pod logs in {self.runner.logs_dir()}")
        return "\n".join(parts)

    def close(self) -> None:
        logs = self.docker.logs(self.operator)
        self.runner.logs_dir().mkdir(parents=True, exist_ok=True)
        (self.runner.logs_dir() / "operator.log").write_bytes(logs)
        self.docker.remove(self.operator)
        self.runner.stop()
        self.api_client.close()
        self.emulator.stop()


class ClusterBackend(Backend):
    """A real cluster from KUBECONFIG; the operator must already run there."""

    name = "cluster"

    def __init__(self, namespace: str | None = None) -> None:
        kubeconfig = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
        namespace = namespace or f"ftjob-e2e-{uuid.uuid4().hex[:6]}"
        super().__init__(namespace, kubeconfig, TRAINER_IMAGE)
        self.kubectl("create", "namespace", namespace)

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
        self.kubectl("delete", "namespace", self.namespace, "--wait=false", check=False)


def wait_ready(backend: Backend, timeout: float = 60) -> None:
    """The FineTuneJob resource answers (the CRD is served)."""
    wait_for(lambda: backend.kubectl("get", "finetunejobs", check=False).returncode == 0,
             timeout, "the FineTuneJob API")
