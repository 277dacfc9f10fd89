"""Deterministic names and labels of every object a FineTuneJob owns.

The trainer, the Helm chart's RBAC and the e2e suite rely on these exact shapes, so they
live in one place and are pure.
"""

from __future__ import annotations

from . import api

LABEL_APP = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB = f"{api.GROUP}/job-name"
LABEL_ATTEMPT = f"{api.GROUP}/attempt"
LABEL_RANK = f"{api.GROUP}/rank"
# The export pod (spec.output) carries `role: export` and its try; the rank pods carry neither.
LABEL_ROLE = f"{api.GROUP}/role"
LABEL_EXPORT_TRY = f"{api.GROUP}/export-try"
ROLE_EXPORT = "export"
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
LABEL_KUEUE_POD_GROUP = "kueue.x-k8s.io/pod-group-name"
ANNOTATION_KUEUE_POD_GROUP_COUNT = "kueue.x-k8s.io/pod-group-total-count"
# Keys of the pod metadata that ftjob sets, or that would hand the pods to Kueue one by one
# (a queued job is one Workload, see the operator's kueue.py); spec.podTemplate may not set
# them, nor anything under the API group's domain.
RESERVED_LABELS = frozenset({LABEL_APP, LABEL_MANAGED_BY, LABEL_KUEUE_QUEUE, LABEL_KUEUE_POD_GROUP})
RESERVED_ANNOTATIONS = frozenset({ANNOTATION_KUEUE_POD_GROUP_COUNT})

APP = "ftjob"
MANAGER = "ftjob-operator"

TRAINER_CONTAINER = "trainer"


def service(job: str) -> str:
    return job


def config_map(job: str) -> str:
    return f"{job}-job"


def claim(job: str) -> str:
    return f"{job}-output"


def trainer_account(job: str) -> str:
    """ServiceAccount, Role and RoleBinding share this name."""
    return f"{job}-trainer"


def pod(job: str, attempt: int, rank: int) -> str:
    return f"{job}-{attempt}-{rank}"


def export_pod(job: str, try_: int) -> str:
    """The export pod of one try (`spec.output`: gate, merge, push after training)."""
    return f"{job}-export-{try_}"


def master_addr(job: str, attempt: int) -> str:
    """DNS name of rank 0: `<hostname>.<subdomain>` resolves through the headless Service."""
    return f"{pod(job, attempt, 0)}.{service(job)}"


def common_labels(job: str) -> dict[str, str]:
    return {LABEL_APP: APP, LABEL_MANAGED_BY: MANAGER, LABEL_JOB: job}


def pod_labels(job: str, attempt: int, rank: int) -> dict[str, str]:
    return {**common_labels(job), LABEL_ATTEMPT: str(attempt), LABEL_RANK: str(rank)}


def export_pod_labels(job: str, try_: int) -> dict[str, str]:
    return {**common_labels(job), LABEL_ROLE: ROLE_EXPORT, LABEL_EXPORT_TRY: str(try_)}


def is_reserved_key(key: str, reserved: frozenset[str]) -> bool:
    """A label or annotation key ftjob owns: one it sets, or one under its domain."""
    prefix = key.rpartition("/")[0]
    return key in reserved or prefix == api.GROUP or prefix.endswith(f".{api.GROUP}")
