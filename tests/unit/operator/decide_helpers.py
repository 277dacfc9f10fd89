"""What the decide() tables share: a job, its pods and statuses as the operator sees them,
one table row (`Case`) and how a row is checked. Each policy's test file
(test_operator_policy_<policy>.py) has its own table of the named cases it decides."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ftjob_api import contract, naming
from ftjob_operator.observe import Observed, PodView, Refusal
from ftjob_api.contract import rfc3339
from ftjob_operator.plan import CreatePods, DeletePods, EnsureJobObjects, JobState, Plan
from ftjob_operator.policies.spec_edits import effective_spec
from ftjob_operator.reconcile import decide

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
EARLIER = rfc3339(NOW - timedelta(seconds=100))
SPEC: dict[str, Any] = {
    "task": "sequence-classification",
    "model": {"path": "/m"},
    "dataset": {"files": {"train": "/d/train.jsonl"}},
    "resources": {"nodes": 2},
    "storage": {"accessModes": ["ReadWriteMany"]},
    "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 10},
}


def job(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> JobState:
    body = copy.deepcopy(SPEC)
    body.update(spec)
    return JobState("demo", "ns", "uid-1", generation, body, status or {})


def pod(rank: int, attempt: int = 1, phase: str = "Running", **kw: Any) -> PodView:
    return PodView(name=f"demo-{attempt}-{rank}", job="demo", attempt=attempt, rank=rank,
                   owner_uid="uid-1", phase=phase, created_at=NOW - timedelta(seconds=5), **kw)


def running(attempt: int = 1, **extra: Any) -> dict[str, Any]:
    return {"phase": "Running", "attempt": attempt, "startTime": EARLIER, **extra}


def restarting(attempt: int = 1, since: datetime = NOW, **extra: Any) -> dict[str, Any]:
    return {"phase": "Restarting", "attempt": attempt, "startTime": EARLIER, "restarts": 1,
            "conditions": [{"type": "Restarting", "status": "True", "reason": "Error",
                            "message": "", "lastTransitionTime": rfc3339(since)}], **extra}


STARTED = copy.deepcopy(SPEC)
POLICY = {"maxRestarts": 2, "backoffSeconds": 10, "stallTimeoutSeconds": 60,
          "startupTimeoutSeconds": 300, "evaluationTimeoutSeconds": 600}
RUNNING_SINCE = NOW - timedelta(seconds=100)


def running_attempt(attempt: int = 1, progress: dict[str, Any] | None = None,
                    **extra: Any) -> dict[str, Any]:
    """A settled Running status of `attempt` (what the operator wrote), with `progress`."""
    status = {**running(attempt), "observedGeneration": 1,
              "message": f"attempt {attempt}: 2 pod(s) running",
              "conditions": [{"type": "Running", "status": "True", "reason": "AllPodsRunning",
                              "message": f"attempt {attempt}: 2 pod(s) running",
                              "lastTransitionTime": rfc3339(RUNNING_SINCE),
                              "observedGeneration": 1}],
              "attempts": [{"attempt": a, "startTime": EARLIER} for a in range(1, attempt + 1)]}
    if progress is not None:
        status["progress"] = progress
    status.update(extra)
    return status


@dataclass
class Case:
    """One row of a decide() table: the view decided on, and the plan expected."""

    job: JobState
    pods: list[PodView] = field(default_factory=list)
    started: dict[str, Any] | None = None
    case: str = ""
    actions: list[type] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # expected values in the patch
    writes: set[str] = field(default_factory=set)  # exactly the status keys it patches
    events: list[str] = field(default_factory=list)  # exactly these event reasons
    requeue: float | None = None  # exactly (None: no timer)
    refusal: Refusal | None = None  # the API server refuses to create the pods
    conflict: Refusal | None = None  # an object the job creates is owned by another
    created: list[str] = field(default_factory=list)  # exactly the pods it creates, in order
    exports: list[PodView] = field(default_factory=list)  # the export pods (spec.output)


REFUSED = ('create Pod ns/demo-1-0: HTTP 403 Forbidden: pods "demo-1-0" is forbidden: '
           'pod rejected: RuntimeClass "gvisr" not found')
OK = json.dumps({"status": "succeeded", "globalStep": 50,
                 "metrics": {"eval_accuracy": 0.9, "note": "x"}, "finalModel": "/output/final"})


def stepped(step: int, seconds_ago: float, attempt: int = 1, activity: str = "training"
            ) -> dict[str, Any]:
    return {"globalStep": step, "attempt": attempt, "activity": activity,
            "lastStepTime": rfc3339(NOW - timedelta(seconds=seconds_ago)),
            "updatedAt": rfc3339(NOW)}


def check(c: Case) -> None:
    """Decide on the row's job and pods; the plan is exactly what the row says."""
    plan = decide(c.job, Observed(pods=tuple(c.pods), started_spec=c.started,
                                  refusal=c.refusal, conflict=c.conflict,
                                  exports=tuple(c.exports)), NOW)
    assert plan.case == c.case
    assert [type(a) for a in plan.actions] == c.actions
    for key, value in c.status.items():
        assert plan.status.get(key) == value, (key, plan.status)
    assert set(plan.status) == c.writes, plan.status
    assert [e.reason for e in plan.events] == c.events
    assert plan.requeue_after == (pytest.approx(c.requeue) if c.requeue is not None else None)
    assert created_pods(plan) == c.created
    check_manifests(plan, c.job, c.started)
    deleted = [n for a in plan.actions if isinstance(a, DeletePods) for n in a.names]
    # only live pods it saw
    assert set(deleted) <= {p.name for p in c.pods + c.exports if not p.deleting}


def created_pods(plan: Plan) -> list[str]:
    return [name for a in plan.actions if isinstance(a, CreatePods) for name in a.names]


JOB_OBJECT_KINDS = ["ServiceAccount", "Role", "RoleBinding", "Service", "PersistentVolumeClaim",
                    "ConfigMap"]


def env(pod: dict[str, Any]) -> dict[str, str | None]:
    """The trainer container's plain environment variables (None: set empty or by reference)."""
    trainer = next(c for c in pod["spec"]["containers"] if c["name"] == naming.TRAINER_CONTAINER)
    return {e["name"]: e.get("value") for e in trainer["env"]}


def check_manifests(plan: Plan, job: JobState, started: dict[str, Any] | None) -> None:
    """What every plan's manifests hold: pods of the plan's attempt, owned by the job, reading
    that attempt from FTJOB_ATTEMPT and writing to the job's claim; the job's objects in
    creation order, the ConfigMap last with the spec the job runs."""
    for action in plan.actions:
        if isinstance(action, CreatePods):
            for manifest in action.pods:
                meta = manifest["metadata"]
                assert meta["namespace"] == job.namespace
                assert meta["labels"][naming.LABEL_JOB] == job.name
                assert meta["ownerReferences"][0]["uid"] == job.uid
                if meta["labels"].get(naming.LABEL_ROLE) == naming.ROLE_EXPORT:
                    # The export pod of try `attempt` (spec.output), no rank of any attempt.
                    assert meta["name"] == naming.export_pod(job.name, action.attempt)
                    assert meta["labels"][naming.LABEL_EXPORT_TRY] == str(action.attempt)
                    assert naming.LABEL_RANK not in meta["labels"]
                    assert manifest["spec"]["containers"][0]["command"] == list(
                        contract.EXPORT_COMMAND)
                else:
                    rank = int(meta["labels"][naming.LABEL_RANK])
                    assert meta["name"] == naming.pod(job.name, action.attempt, rank)
                    assert meta["labels"][naming.LABEL_ATTEMPT] == str(action.attempt)
                    assert env(manifest)[contract.ENV_ATTEMPT] == str(action.attempt)
                claims = [v["persistentVolumeClaim"]["claimName"]
                          for v in manifest["spec"]["volumes"] if "persistentVolumeClaim" in v]
                assert claims == [naming.claim(job.name)]  # every attempt resumes from it
        elif isinstance(action, EnsureJobObjects):
            assert [m["kind"] for m in action.manifests] == JOB_OBJECT_KINDS
            config_map = action.manifests[-1]
            doc = json.loads(config_map["data"][contract.JOB_FILE_NAME])
            assert doc["metadata"]["uid"] == job.uid
            assert doc["spec"] == effective_spec(job.spec, started)
