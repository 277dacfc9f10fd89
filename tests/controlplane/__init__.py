"""A real Kubernetes control plane for tests and for `make cluster-up` (see cluster.py)."""

from .cluster import ControlPlane, ControlPlaneError, binaries_dir, write_kubeconfig

__all__ = ["ControlPlane", "ControlPlaneError", "binaries_dir", "write_kubeconfig"]
