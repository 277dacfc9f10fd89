"""Fake nodes for scale runs: kwok plays the kubelet of many Nodes without running anything.

    with Kwok(plane, workdir) as kwok:
        kwok.add_nodes(20)   # 64 CPU, 256 GiB, 110 pods each unless `capacity` says otherwise
        ...   # the real scheduler binds pods to the fake nodes, kwok marks them Running

kwok (sigs.k8s.io/kwok, pinned with the control plane) manages only the Nodes annotated
`kwok.x-k8s.io/node: fake`, so it never touches the node of the tests' kubelet. kwok v0.8
does nothing without Stage objects, so `STAGES` gives it three, the
smallest "fast" lifecycle: a node turns Ready at once (its Lease in `kube-node-lease` is kept
fresh by `--node-lease-duration-seconds`); a pod bound to one of its nodes gets a pod IP,
Ready conditions and phase Running in one status patch, and stays Running; a deleted pod is
removed. kwok authenticates as its own ServiceAccount, `kube-system:kwok`, bound to
`cluster-admin`, so the audit log tells its requests apart from everyone else's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from ..polling import wait_for
from .cluster import ControlPlane, ControlPlaneError, _die_with_parent
from .install import apply, service_account_kubeconfig

NAMESPACE = "kube-system"
ACCOUNT = "kwok"
USER = f"system:serviceaccount:{NAMESPACE}:{ACCOUNT}"
ANNOTATION = "kwok.x-k8s.io/node"
POD_CIDR = "10.128.0.0/14"  # room for many pods (kwok's default /24 holds 254)
DEFAULT_CAPACITY = {"cpu": "64", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}


def _stage(name: str, kind: str, selector: list[dict[str, Any]], next_: dict[str, Any]
           ) -> dict[str, Any]:
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
            "spec": {"resourceRef": {"apiGroup": "v1", "kind": kind},
                     "selector": {"matchExpressions": selector}, "next": next_}}


_NODE_READY = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type | Quote }}
{{ end }}
addresses:
- address: {{ NodeIP | Quote }}
  type: InternalIP
- address: {{ NodeName | Quote }}
  type: Hostname
allocatable:
{{ YAML .status.allocatable 1 }}
capacity:
{{ YAML .status.capacity 1 }}
phase: Running
"""

_POD_RUNNING = """\
{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: true
  restartCount: 0
  started: true
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName false .metadata.uid .metadata.name .metadata.namespace | Quote }}
phase: Running
startTime: {{ $now | Quote }}
"""

STAGES: list[dict[str, Any]] = [
    _stage("node-ready", "Node",
           [{"key": '.status.conditions.[] | select( .type == "Ready" ) | .status',
             "operator": "NotIn", "values": ["True"]}],
           {"statusTemplate": _NODE_READY}),
    _stage("pod-running", "Pod",
           [{"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
            {"key": ".status.podIP", "operator": "DoesNotExist"}],
           {"statusTemplate": _POD_RUNNING}),
    _stage("pod-delete", "Pod",
           [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}],
           {"finalizers": {"empty": True}, "delete": True}),
]


def fake_node(name: str, capacity: dict[str, str] | None = None) -> dict[str, Any]:
    """A Node kwok manages: capacity given, conditions left to kwok's node stages."""
    capacity = dict(capacity or DEFAULT_CAPACITY)
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name,
                     "annotations": {ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "type": "kwok"}},
        "spec": {},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def _access() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": ACCOUNT, "namespace": NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "ftjob-kwok"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE}]},
    ]


class Kwok:
    """The kwok process against `plane`, its config, kubeconfig and log under `workdir`."""

    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.plane = plane
        self.workdir = Path(workdir)
        self.process: subprocess.Popen | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "kwok.log"

    def args(self, kubeconfig: Path, config: Path) -> list[str]:
        return [str(self.plane.binary("kwok")), f"--kubeconfig={kubeconfig}",
                f"--config={config}", "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={ANNOTATION}=fake",
                f"--cidr={POD_CIDR}", "--node-ip=127.0.0.1",
                # Leases (kube-node-lease) as heartbeats, as a kubelet does, not status writes.
                "--node-lease-duration-seconds=40"]

    def start(self) -> Kwok:
        self.workdir.mkdir(parents=True, exist_ok=True)
        apply(self.plane, _access())
        kubeconfig = service_account_kubeconfig(self.plane, NAMESPACE, ACCOUNT,
                                                self.workdir / "kwok.kubeconfig")
        # Our own configuration and stages, so a ~/.kwok/kwok.yaml on the machine is ignored.
        config = self.workdir / "kwok.yaml"
        config.write_text(yaml.safe_dump_all(STAGES, sort_keys=False))
        log = open(self.log, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(self.args(kubeconfig, config), stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent)  # as the control plane
        log.close()
        return self

    def add_nodes(self, count: int, capacity: dict[str, str] | None = None,
                  prefix: str = "kwok-node", timeout: float = 60) -> list[str]:
        """Create `count` fake nodes and wait until kwok has made every one Ready."""
        names = [f"{prefix}-{i}" for i in range(count)]
        apply(self.plane, [fake_node(name, capacity) for name in names])

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise ControlPlaneError(f"kwok exited with {self.process.returncode}: "
                                        f"see {self.log}")
            return all(self._ready(name) for name in names)

        wait_for(ready, timeout, f"{count} kwok nodes Ready (kwok log: {self.log})", interval=0.2)
        return names

    def _ready(self, name: str) -> bool:
        code, body = self.plane.get(f"/api/v1/nodes/{name}")
        if code != 200:
            return False
        conditions = (json.loads(body).get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Kwok:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
