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
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"

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


def master_addr(job: str, attempt: int) -> str:
    """DNS name of rank 0: `<hostname>.<subdomain>` resolves through the headless Service."""
    return f"{pod(job, attempt, 0)}.{service(job)}"


def common_labels(job: str) -> dict[str, str]:
    return {LABEL_APP: APP, LABEL_MANAGED_BY: MANAGER, LABEL_JOB: job}


def pod_labels(job: str, attempt: int, rank: int) -> dict[str, str]:
    return {**common_labels(job), LABEL_ATTEMPT: str(attempt), LABEL_RANK: str(rank)}

