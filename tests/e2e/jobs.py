"""The objects the scenarios create: pure builders, no I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftjob_api import api

TESTS = Path(__file__).resolve().parents[1]
SHARED_CLAIM = "e2e-shared"
INPUTS = "/output/inputs"  # the job's folder on the shared claim is its /output


# What Pod Security `restricted` demands of every pod (the e2e namespaces enforce it).
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                  "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def shared_claim() -> dict[str, Any]:
    """One claim for every job: each job mounts its own sub-folder (`existingClaim`).
    ReadWriteMany: the two ranks of a job run on different nodes of a real cluster."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": SHARED_CLAIM},
            "spec": {"accessModes": ["ReadWriteMany"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


def seed_objects(name: str, image: str, jobs: list[str]) -> list[dict[str, Any]]:
    """A ConfigMap with the seeding code and the Pod that runs it on the shared claim."""
    code = {"seed.py": (Path(__file__).parent / "seed" / "seed.py").read_text(),
            "tinymodels.py": (TESTS / "tinymodels.py").read_text()}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                  "data": code}
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {**RESTRICTED_POD, "fsGroup": 1000},
            "containers": [{
                "name": "seed", "image": image, "imagePullPolicy": "IfNotPresent",
                "securityContext": RESTRICTED_CONTAINER,
                "command": ["python", "/seed/seed.py", "/claim", *jobs],
                "env": [{"name": "HF_HUB_OFFLINE", "value": "1"},
                        {"name": "HF_HOME", "value": "/tmp/hf"}],
                "volumeMounts": [{"name": "code", "mountPath": "/seed", "readOnly": True},
                                 {"name": "claim", "mountPath": "/claim"}],
            }],
            "volumes": [{"name": "code", "configMap": {"name": name}},
                        {"name": "claim", "persistentVolumeClaim": {"claimName": SHARED_CLAIM}}],
        },
    }
    return [config_map, pod]


def probe_pod(name: str, image: str, job: str, script: str) -> dict[str, Any]:
    """A pod that runs `script` in the job's folder of the shared claim; its output comes
    back as the termination message (readable through the API on every backend)."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": RESTRICTED_POD,
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
                "securityContext": RESTRICTED_CONTAINER,
                "workingDir": f"/claim/{job}",
                "command": ["sh", "-c", f"({script}) > /dev/termination-log 2>&1"],
                "volumeMounts": [{"name": "claim", "mountPath": "/claim", "readOnly": True}],
            }],
            "volumes": [{"name": "claim",
                         "persistentVolumeClaim": {"claimName": SHARED_CLAIM}}],
        },
    }


def training_job(name: str, max_steps: int, save_steps: int, *, train_file: str = "train.jsonl",
                 max_restarts: int = 2, **training: Any) -> dict[str, Any]:
    """2 nodes x 1 CPU process, the tiny BERT classifier seeded on the shared claim."""
    args = {"max_steps": max_steps, "save_steps": save_steps, "per_device_train_batch_size": 8,
            "learning_rate": 3e-3, "logging_steps": 1, "eval_strategy": "no", "seed": 7,
            "warmup_steps": 2}
    args.update(training)
    return {
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
        "spec": {
            "task": "sequence-classification",
            "model": {"path": f"{INPUTS}/model"},
            "dataset": {"files": {"train": f"{INPUTS}/{train_file}"}, "maxLength": 32},
            "trainingArguments": args,
            "resources": {"nodes": 2, "shmSize": "256Mi"},
            "storage": {"existingClaim": SHARED_CLAIM},
            "restartPolicy": {"maxRestarts": max_restarts, "backoffSeconds": 1},
        },
    }


MISSPELT = ("learning_rat", "learning_rate")  # (the typo, what `ftjob validate` suggests)


def misspelt_job(name: str) -> dict[str, Any]:
    """A job with a misspelt training argument: what the admission webhook must refuse."""
    return training_job(name, 10, 10, **{MISSPELT[0]: 1e-3})
