"""A control plane ready for the operator: the CRD, the chart's RBAC and its namespace, a
Node with a heartbeat, local volumes for claims and the test kubelet. Used by the tests'
session fixture and by benchmarks that run the operator on a real API server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPERATOR_NAMESPACE = "ftjob-system"


@dataclass
class OperatorCluster:
    plane: Any  # ControlPlane
    api_client: Any  # admin
    kubelet: Any  # tests.controlplane.kubelet.Kubelet
    operator_account: str  # system:serviceaccount:<ns>:<name> the operator runs as
    operator_kubeconfig: Path


@contextlib.contextmanager
def operator_cluster(root: Path, node_name: str) -> Iterator[OperatorCluster]:
    from ftjob_api.crd import build_crd
    from kubernetes import client, config

    from .cluster import ControlPlane
    from .install import (apply, chart_rbac, create_namespace, service_account_kubeconfig,
                          wait_established)
    from .kubelet import Kubelet
    from .nodes import NodeHeartbeat
    from .volumes import LocalVolumes

    plane = ControlPlane(root / "state").start()
    api_client = config.new_client_from_config(config_file=str(plane.kubeconfig))
    core = client.CoreV1Api(api_client)
    node = NodeHeartbeat(core, client.CoordinationV1Api(api_client), node_name).start()
    volumes = LocalVolumes(core, root / "volumes").start()
    kubelet = Kubelet(core, node_name)
    try:
        crd = build_crd()
        apply(plane, [crd])
        wait_established(plane, crd["metadata"]["name"])
        create_namespace(plane, OPERATOR_NAMESPACE, restricted=True)
        rbac = chart_rbac()
        apply(plane, rbac)
        account = next(o["metadata"] for o in rbac if o["kind"] == "ServiceAccount")
        kubeconfig = service_account_kubeconfig(plane, account["namespace"], account["name"],
                                                root / "operator.kubeconfig")
        yield OperatorCluster(plane, api_client, kubelet,
                              f"system:serviceaccount:{account['namespace']}:{account['name']}",
                              kubeconfig)
    finally:
        kubelet.stop()
        volumes.stop()
        node.stop()
        api_client.close()
        plane.stop()
