"""Shared fixtures: a real Kubernetes control plane (tests/controlplane) with the operator on
it, and the in-process API emulator (tests/kubeemu) for the few tests that inject API faults.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# `tests.*` imports work however pytest was started (`python -m pytest` adds the checkout;
# the `pytest` script does not).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from ftjob_api.crd import build_crd  # noqa: E402
from tests.kubeemu import Emulator, Faults  # noqa: E402
from tests.polling import never, wait_for  # noqa: E402

TEST_NODE = "ftjob-test-node"
TRAINER_IMAGE = "ftjob/trainer:test"


# --------------------------------------------------------------------------- real cluster


@dataclass
class ClusterSession:
    """The session's control plane with the CRD, the chart's RBAC, a node and volumes."""

    plane: Any  # tests.controlplane.ControlPlane
    api_client: Any
    kubelet: Any  # tests.controlplane.kubelet.Kubelet
    operator_account: str  # system:serviceaccount:<ns>:<name> the operator runs as
    operator_kubeconfig: Path


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory) -> Iterator[ClusterSession]:
    """etcd, kube-apiserver, controller-manager and scheduler, started once per session."""
    from tests.controlplane.session import operator_cluster

    with operator_cluster(tmp_path_factory.mktemp("cluster"), TEST_NODE) as c:
        yield ClusterSession(c.plane, c.api_client, c.kubelet, c.operator_account,
                             c.operator_kubeconfig)


@dataclass
class Cluster:
    """One test's view of the session cluster: its own restricted namespace."""

    session: ClusterSession
    ns: str

    @property
    def kubelet(self):
        return self.session.kubelet

    @property
    def plane(self):
        return self.session.plane

    @property
    def core(self):
        from kubernetes import client

        return client.CoreV1Api(self.session.api_client)

    @property
    def custom(self):
        from kubernetes import client

        return client.CustomObjectsApi(self.session.api_client)


@pytest.fixture
def cluster(control_plane: ClusterSession) -> Iterator[Cluster]:
    """A fresh namespace under Pod Security `restricted` on the session's control plane.

    Afterwards the namespace is deleted and awaited: the operator of a later test watches all
    namespaces, and would otherwise take on this test's leftovers (and put its finalizer on
    them, which no operator removes once that test ends)."""
    from tests.controlplane.install import create_namespace, delete_namespace

    ns = f"t-{uuid.uuid4().hex[:8]}"
    create_namespace(control_plane.plane, ns)
    yield Cluster(control_plane, ns)
    delete_namespace(control_plane.plane, ns)


def _operator_runner(monkeypatch, kubeconfig: str) -> Callable[..., contextlib.AbstractContextManager]:
    """Context manager factory: the real operator (kopf) in a thread, all namespaces (as the
    chart installs it by default), with `KUBECONFIG` and any extra environment set."""
    from kopf.testing import KopfRunner

    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    monkeypatch.setenv("FTJOB_RESYNC_SECONDS", "2")
    monkeypatch.setenv("FTJOB_TRAINER_IMAGE", TRAINER_IMAGE)

    @contextlib.contextmanager
    def start(**env: str) -> Iterator[KopfRunner]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        args = ["run", "--standalone", "--all-namespaces", "-m", "ftjob_operator.handlers"]
        with KopfRunner(args, timeout=60) as runner:
            yield runner
        assert runner.exception is None, runner.output

    return start


@pytest.fixture
def run_operator(cluster: Cluster, monkeypatch) -> Callable[..., contextlib.AbstractContextManager]:
    """The operator authenticated as the chart's ServiceAccount (so a rule missing from the
    chart's RBAC fails the test); the `cluster` fixture deletes each test's namespace, so
    earlier tests leave nothing behind for it to handle."""
    return _operator_runner(monkeypatch, str(cluster.session.operator_kubeconfig))


# --------------------------------------------------------------------------- emulator


@pytest.fixture
def kube() -> Iterator[Emulator]:
    """A fresh emulated cluster with the FineTuneJob CRD installed (fault injection only)."""
    with Emulator(crds=[build_crd()]) as emu:
        yield emu


@pytest.fixture
def run_emulated_operator(kube: Emulator, tmp_path, monkeypatch
                          ) -> Callable[..., contextlib.AbstractContextManager]:
    """The operator against `kube` (admin: the emulator has no RBAC)."""
    return _operator_runner(monkeypatch, str(kube.write_kubeconfig(tmp_path / "kubeconfig")))


__all__ = ["Cluster", "Faults", "never", "wait_for"]
