"""A Node object that stays Ready: registered with its capacity, its Lease renewed.

The real scheduler binds pods only to Ready nodes that have room, and the node lifecycle
controller marks a node NotReady (then taints and evicts) when its Lease in
`kube-node-lease` goes stale. Whatever plays the kubelet (the tests' kubelet, kwok for
scale runs) registers its node through this class.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException

log = logging.getLogger("controlplane.nodes")

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
DEFAULT_CAPACITY = {"cpu": "32", "memory": "128Gi", "pods": "110", "nvidia.com/gpu": "8",
                    "ephemeral-storage": "200Gi"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def node_body(name: str, capacity: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
    """The Node a kubelet registers: capacity, Ready, loopback address."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                              "kubernetes.io/os": "linux",
                                              "kubernetes.io/arch": "amd64", **labels}},
        "spec": {},
        "status": {
            "capacity": capacity, "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "ftjob pod runner is ready",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                         "kubeletVersion": "ftjob-podrunner", "containerRuntimeVersion":
                         "docker://", "osImage": "", "kernelVersion": "", "bootID": "",
                         "machineID": "", "systemUUID": "", "kubeProxyVersion": ""},
        },
    }


class NodeHeartbeat:
    """Register `name` and renew its Lease every `period` seconds until `stop()`."""

    def __init__(self, core: Any, coordination: Any, name: str,
                 capacity: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                 period: float = 10.0) -> None:
        self.core, self.coordination = core, coordination
        self.name = name
        self.capacity = capacity or dict(DEFAULT_CAPACITY)
        self.labels = labels or {}
        self.period = period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def register(self) -> None:
        body = node_body(self.name, self.capacity, self.labels)
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # Status given on create is kept; an existing node gets its status refreshed.
            self.core.patch_node_status(self.name, {"status": body["status"]})
        self._renew()

    def start(self) -> NodeHeartbeat:
        self.register()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, delete: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if delete:
            for call in (lambda: self.core.delete_node(self.name),
                         lambda: self.coordination.delete_namespaced_lease(self.name,
                                                                           LEASE_NAMESPACE)):
                try:
                    call()
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self._renew()
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                log.exception("renewing the lease of node %s failed", self.name)

    def _renew(self) -> None:
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _now()}
        try:
            self.coordination.patch_namespaced_lease(self.name, LEASE_NAMESPACE, {"spec": spec})
        except ApiException as exc:
            if exc.status != 404:
                raise
            node = self.core.read_node(self.name)
            self.coordination.create_namespaced_lease(LEASE_NAMESPACE, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE,
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                  "name": self.name,
                                                  "uid": node.metadata.uid}]},
                "spec": spec})
