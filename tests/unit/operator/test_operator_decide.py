"""decide(job, observed, now, settings), the dispatcher: a first start, an attempt adopted after
a crash, the validation gate, pods of another job, and the manifests the plan carries. Each
policy's own cases are in test_operator_policy_<policy>.py."""

from __future__ import annotations

import json

import pytest

from ftjob_api import api, contract
from ftjob_operator import render
from ftjob_operator.policies import started_spec
from ftjob_operator.observe import Observed, PodView
from ftjob_api.contract import rfc3339
from ftjob_operator.plan import CreatePods, EnsureJobObjects
from ftjob_operator.reconcile import decide
from ftjob_operator.settings import Settings
from tests.unit.operator.decide_helpers import NOW, STARTED, Case, check, env, job, pod


CASES: dict[str, Case] = {
    "no children yet -> start attempt 1":
        Case(job(), case="start", actions=[EnsureJobObjects, CreatePods],
             status={"phase": "Pending", "attempt": 1, "startTime": rfc3339(NOW)},
             writes={"attempt", "attempts", "conditions", "message", "observedGeneration", "phase",
                    "startTime", "startedSpecDigest"}, events=["Started"],
             created=["demo-1-0", "demo-1-1"]),
    "pods created before the status (crash) -> adopt that attempt":
        Case(job({"phase": "Restarting", "attempt": 1, "restarts": 1}),
             pods=[pod(0, 2, "Pending"), pod(1, 2, "Pending")], started=STARTED,
             case="pending", status={"attempt": 2, "phase": "Pending"},
             writes={"attempt", "attempts", "conditions", "message", "observedGeneration", "phase",
                    "startTime"}, requeue=1795.0),
    "invalid spec -> Failed InvalidSpec, nothing created":
        Case(job(task="seq2seq"), case="invalid spec", status={"phase": "Failed"},
             writes={"completionTime", "conditions", "message", "observedGeneration", "phase"},
                 events=["InvalidSpec"]),
    "pods of another job with the same name (old uid) are ignored":
        Case(job(), pods=[PodView("demo-1-0", "demo", 1, 0, "other-uid", "Running")],
             case="start", actions=[EnsureJobObjects, CreatePods],
             writes={"attempt", "attempts", "conditions", "message", "observedGeneration", "phase",
                 "startTime", "startedSpecDigest"}, events=["Started"],
             created=["demo-1-0", "demo-1-1"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    check(CASES[name])


def test_the_plan_carries_the_manifests_rendered_with_the_settings() -> None:
    settings = Settings(trainer_image="registry.example/trainer:9", trainer_metrics_port=9400)
    start = job()
    plan = decide(start, Observed(), NOW, settings)
    objects, pods = plan.actions
    assert isinstance(objects, EnsureJobObjects) and isinstance(pods, CreatePods)
    spec = api.parse_spec(start.spec)
    assert list(objects.manifests) == render.render_job_objects(start, spec, start.spec,
                                                                settings)
    digest = started_spec.digest(start, start.spec)
    assert list(pods.pods) == [render.render_pod(start, spec, 1, rank, settings, digest)
                               for rank in (0, 1)]
    # Each pod is told the digest of the job file it mounts (the trainer checks it).
    config_map = objects.manifests[-1]
    document = json.loads(config_map["data"][contract.JOB_FILE_NAME])
    assert env(pods.pods[0])[contract.ENV_JOB_DIGEST] == contract.job_digest(document) == digest
    assert pods.names == ("demo-1-0", "demo-1-1")
    rank0 = pods.pods[0]
    assert rank0["spec"]["containers"][0]["image"] == "registry.example/trainer:9"
    assert env(rank0)[contract.ENV_METRICS_PORT] == "9400"
    # Without settings: the operator's defaults.
    default = decide(start, Observed(), NOW).actions[1]
    assert default.pods[0]["spec"]["containers"][0]["image"] == Settings().trainer_image
