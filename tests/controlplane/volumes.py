"""Bind every PersistentVolumeClaim to a host folder: the cluster's volume provisioner.

There is no storage driver here, and the scheduler refuses pods whose claims are unbound.
For each Pending claim this creates a hostPath PersistentVolume pre-bound to it (claimRef),
and the real PV controller in kube-controller-manager completes the binding. The folder is
`root/<namespace>/<claim>`.
The volumes are `Retain` (hostPath has no deleter); `sweep()` deletes the Released ones
this provisioner made, and their folders.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

log = logging.getLogger("controlplane.volumes")
MANAGED_BY = "ftjob.dev/local-volumes"


def volume_for(claim: dict[str, Any], folder: Path) -> dict[str, Any]:
    meta, spec = claim["metadata"], claim.get("spec") or {}
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "labels": {"app.kubernetes.io/managed-by":
                                                              "ftjob-local-volumes"},
                     "annotations": {MANAGED_BY: str(folder)}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": spec.get("storageClassName") or "",
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                         "namespace": meta["namespace"], "name": meta["name"],
                         "uid": meta["uid"]},
        },
    }


class LocalVolumes:
    """Provision hostPath volumes for Pending claims, every `period` seconds."""

    def __init__(self, core: Any, root: Path, period: float = 0.5) -> None:
        self.core = core
        self.root = Path(root)
        self.period = period
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def folder(self, namespace: str, claim: str) -> Path:
        return self.root / namespace / claim

    def start(self) -> LocalVolumes:
        self._thread = threading.Thread(target=self._loop, name="local-volumes", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - retried at the next step
                log.exception("provisioning volumes failed")
            self._stop.wait(self.period)

    def step(self) -> None:
        claims = self.core.list_persistent_volume_claim_for_all_namespaces(
            _preload_content=False)
        for claim in json.loads(claims.data).get("items") or []:
            if (claim.get("status") or {}).get("phase") != "Pending":
                continue
            if (claim.get("spec") or {}).get("volumeName"):
                continue
            meta = claim["metadata"]
            folder = self.folder(meta["namespace"], meta["name"])
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)  # a fresh volume is writable by the pod's non-root user
            try:
                self.core.create_persistent_volume(volume_for(claim, folder))
                log.info("volume for claim %s/%s at %s", meta["namespace"], meta["name"], folder)
            except ApiException as exc:
                if exc.status != 409:
                    raise
        self.sweep()

    def sweep(self) -> None:
        """Delete the volumes this provisioner made whose claim is gone (Released)."""
        volumes = self.core.list_persistent_volume(
            label_selector="app.kubernetes.io/managed-by=ftjob-local-volumes")
        for pv in volumes.items:
            if pv.status and pv.status.phase == "Released":
                try:
                    self.core.delete_persistent_volume(pv.metadata.name)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                folder = (pv.metadata.annotations or {}).get(MANAGED_BY)
                if folder:
                    shutil.rmtree(folder, ignore_errors=True)
