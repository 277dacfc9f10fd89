"""decide(job, observed, now), the dispatcher: a first start, an attempt adopted after a crash,
the validation gate and pods of another job. Each policy's own cases are in
test_operator_policy_<policy>.py."""

from __future__ import annotations

import pytest

from ftjob_operator.observe import PodView
from ftjob_operator.reconcile import CreatePods, EnsureJobObjects, rfc3339
from tests.unit.operator.decide_helpers import NOW, STARTED, Case, check, job, pod


CASES: dict[str, Case] = {
    "no children yet -> start attempt 1":
        Case(job(), case="start", actions=[EnsureJobObjects, CreatePods],
             status={"phase": "Pending", "attempt": 1, "startTime": rfc3339(NOW)},
             writes={"attempt", "attempts", "conditions", "message", "observedGeneration", "phase",
                    "startTime"}, events=["Started"]),
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
                 "startTime"}, events=["Started"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    check(CASES[name])
