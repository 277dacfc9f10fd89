"""An in-process Kubernetes API for tests, built on kmock 0.8. See README.md."""

from .kubelet import Kubelet
from .runtime import Emulator
from .server import Call, Faults, KubeEmulator
from .store import ApiError, ResourceType, Store

__all__ = ["ApiError", "Call", "Emulator", "Faults", "KubeEmulator", "Kubelet", "ResourceType",
           "Store"]
