"""Helpers for the operator integration tests: a job manifest, API shortcuts, polling."""

from __future__ import annotations

import copy
import json
from typing import Any

from ftjob_operator import api, naming
from tests.kubeemu import Emulator

NS = "team-a"

BASE_SPEC: dict[str, Any] = {
    "task": "sequence-classification",
    "model": {"path": "/models/tiny"},
    "dataset": {"files": {"train": "/data/train.jsonl"}},
    "trainingArguments": {"max_steps": 5},
    "resources": {"nodes": 2, "cpu": "1", "memory": "1Gi", "shmSize": "64Mi"},
    "storage": {"accessModes": ["ReadWriteMany"], "size": "1Gi"},
    "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 0},
}


def manifest(name: str = "demo", **overrides: Any) -> dict[str, Any]:
    spec = copy.deepcopy(BASE_SPEC)
    for key, value in overrides.items():
        spec[key] = value
    return {"apiVersion": api.API_VERSION, "kind": api.KIND,
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def job_type(kube: Emulator):
    return kube.store.type_of(api.GROUP, api.PLURAL)


def create_job(kube: Emulator, body: dict[str, Any]) -> dict[str, Any]:
    return kube.store.create(job_type(kube), NS, body)


def get_job(kube: Emulator, name: str = "demo") -> dict[str, Any] | None:
    try:
        return kube.store.get(job_type(kube), NS, name)
    except Exception:
        return None


def status(kube: Emulator, name: str = "demo") -> dict[str, Any]:
    return (get_job(kube, name) or {}).get("status") or {}


def phase_is(kube: Emulator, phase: str, name: str = "demo"):
    return lambda: status(kube, name) if status(kube, name).get("phase") == phase else None


def pods(kube: Emulator, name: str = "demo", attempt: int | None = None) -> list[dict[str, Any]]:
    selector = f"{naming.LABEL_JOB}={name}"
    if attempt is not None:
        selector += f",{naming.LABEL_ATTEMPT}={attempt}"
    return kube.kubelet.pods(NS, selector)


def pod_names(kube: Emulator, name: str = "demo") -> list[str]:
    return sorted(p["metadata"]["name"] for p in pods(kube, name))


def run_all(kube: Emulator, name: str = "demo", attempt: int | None = None) -> None:
    for pod in pods(kube, name, attempt):
        kube.kubelet.run(NS, pod["metadata"]["name"])


def bring_up(kube: Emulator, attempt: int = 1) -> None:
    """Play the kubelet for one attempt: wait for its 2 pods, run them, wait for Running."""
    from tests.conftest import wait_for

    wait_for(lambda: len(pods(kube, attempt=attempt)) == 2, what=f"attempt {attempt} pods")
    run_all(kube, attempt=attempt)
    wait_for(lambda: status(kube).get("phase") == "Running"
             and status(kube).get("attempt") == attempt, what=f"attempt {attempt} running")


def objects(kube: Emulator, plural: str, group: str = "") -> list[dict[str, Any]]:
    return kube.store.list(kube.store.type_of(group, plural), NS)[0]


def events(kube: Emulator, name: str = "demo") -> list[dict[str, Any]]:
    return [e for e in objects(kube, "events")
            if (e.get("involvedObject") or {}).get("name") == name]


def summary(**fields: Any) -> str:
    return json.dumps(fields)


def patch_spec(kube: Emulator, patch: dict[str, Any], name: str = "demo") -> dict[str, Any]:
    return kube.store.patch(job_type(kube), NS, name, {"spec": patch},
                            "application/merge-patch+json")


def delete_job(kube: Emulator, name: str = "demo") -> None:
    kube.store.delete(job_type(kube), NS, name)


class PodCreations:
    """Counts every pod ever created, by name (a duplicate shows up as a count of 2)."""

    def __init__(self, kube: Emulator):
        self.names: list[str] = []
        kube.store.hooks.append(self._hook)

    def _hook(self, etype, rtype, obj) -> None:
        if etype == "ADDED" and rtype.key == "pods":
            self.names.append(obj["metadata"]["name"])

    def duplicates(self) -> list[str]:
        return sorted({n for n in self.names if self.names.count(n) > 1})


def condition(st: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), None)


def event_reasons(kube: Emulator, name: str = "demo") -> list[str]:
    return [e["reason"] for e in events(kube, name)]


def wait_event(kube: Emulator, reason: str, name: str = "demo") -> list[str]:
    """Events are posted in the background: poll until one with `reason` lands."""
    from tests.conftest import wait_for

    return wait_for(lambda: (r := event_reasons(kube, name)) and reason in r and r,
                    what=f"a {reason} event")
