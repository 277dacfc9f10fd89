"""policies/pending.py: starting an attempt's pods, pods missing or stuck Pending, and pods the
API server refuses to create, within and past pendingTimeoutSeconds."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ftjob_operator.observe import Observed, PodView, Refusal
from ftjob_api.contract import rfc3339
from ftjob_operator.plan import CreatePods, DeletePods, EnsureJobObjects
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import EARLIER, NOW, REFUSED, STARTED, Case, check, job, pod


OWNED = ("ServiceAccount demo-trainer already exists and is owned by no owner, not by this "
         "job")


CASES: dict[str, Case] = {
    "status written but pods missing (crash mid-create) -> create missing, ensure objects":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER}), pods=[pod(0, phase="Pending")],
             case="create missing pods", actions=[EnsureJobObjects, CreatePods],
             writes={"attempts", "conditions", "message", "observedGeneration",
                     "startedSpecDigest"}, requeue=1795.0,
             created=["demo-1-1"]),
    "some pods pending -> Pending":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER}),
             pods=[pod(0), pod(1, phase="Pending")], started=STARTED, case="pending",
             writes={"attempts", "conditions", "message", "observedGeneration"}, requeue=1795.0),
    "stuck pending past the limit -> Failed":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             pods=[pod(0), PodView("demo-1-1", "demo", 1, 1, "uid-1", "Pending",
                                   NOW - timedelta(seconds=31))],
             started=STARTED, case="pending timeout", actions=[DeletePods],
             status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["PendingTimeout"]),
    "pod creation refused within pendingTimeoutSeconds -> Pending, saying why":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             started=STARTED, refusal=Refusal(NOW - timedelta(seconds=10), REFUSED),
             case="create missing pods", actions=[CreatePods],
             writes={"attempts", "conditions", "message", "observedGeneration"},
             requeue=20.0,  # wakes when the refusals' allowance ends
             created=["demo-1-0", "demo-1-1"]),
    "pod creation refused past pendingTimeoutSeconds -> Failed":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             started=STARTED, refusal=Refusal(NOW - timedelta(seconds=30), REFUSED),
             case="pod creation rejected", status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["PodCreationRejected"]),
    "refused pod of rank 1 past the limit -> Failed, rank 0 deleted":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             pods=[pod(0, phase="Pending")], started=STARTED,
             refusal=Refusal(NOW - timedelta(seconds=31), REFUSED),
             case="pod creation rejected", actions=[DeletePods], status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                    "observedGeneration", "phase"}, events=["PodCreationRejected"]),
    "a stale refusal once every pod exists -> ignored":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             pods=[pod(0, phase="Pending"), pod(1, phase="Pending")], started=STARTED,
             refusal=Refusal(NOW - timedelta(seconds=31), REFUSED), case="pending",
             writes={"attempts", "conditions", "message", "observedGeneration"}, requeue=25.0),
    "an object of the job's name owned by another, within pendingTimeoutSeconds -> Pending, "
    "waiting":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             conflict=Refusal(NOW - timedelta(seconds=10), OWNED),
             case="create missing pods", actions=[EnsureJobObjects, CreatePods],
             writes={"attempts", "conditions", "message", "observedGeneration",
                     "startedSpecDigest"},
             requeue=20.0,  # wakes when the allowance ends
             created=["demo-1-0", "demo-1-1"]),
    "an object of the job's name owned by another, past pendingTimeoutSeconds -> Failed":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             conflict=Refusal(NOW - timedelta(seconds=30), OWNED),
             case="object owned by another", status={"phase": "Failed"},
             writes={"attempts", "completionTime", "conditions", "goodput", "message",
                     "observedGeneration", "phase"}, events=["ObjectOwnedByOther"]),
    "a stale conflict once the objects and pods exist -> ignored":
        Case(job({"phase": "Pending", "attempt": 1, "startTime": EARLIER},
                 restartPolicy={"pendingTimeoutSeconds": 30}),
             pods=[pod(0, phase="Pending"), pod(1, phase="Pending")], started=STARTED,
             conflict=Refusal(NOW - timedelta(seconds=31), OWNED), case="pending",
             writes={"attempts", "conditions", "message", "observedGeneration"}, requeue=25.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    check(CASES[name])


def test_refused_pod_creation_is_in_the_status_until_it_goes_through():
    pending = job({"phase": "Pending", "attempt": 1, "startTime": EARLIER, "conditions": []},
                  restartPolicy={"pendingTimeoutSeconds": 30})
    since = NOW - timedelta(seconds=10)
    plan = decide(pending, Observed((), STARTED, Refusal(since, REFUSED)), NOW)
    text = ("attempt 1: the API server has refused to create the pods since "
            f"{rfc3339(since)} (the job fails after pendingTimeoutSeconds, 30s): {REFUSED}")
    assert plan.status["message"] == text
    refused = next(c for c in plan.status["conditions"] if c["type"] == "PodCreationRejected")
    assert (refused["status"], refused["reason"], refused["message"]) == ("True", "ApiRejected",
                                                                         text)
    # The same refusal again: nothing new to write, the creates are retried.
    settled = job({**pending.status, **plan.status}, restartPolicy={"pendingTimeoutSeconds": 30})
    again = decide(settled, Observed((), STARTED, Refusal(since, REFUSED)),
                   NOW + timedelta(seconds=5))
    assert again.status == {} and [type(a) for a in again.actions] == [CreatePods]
    assert again.actions[0].names == ("demo-1-0", "demo-1-1")  # retried as rendered before
    assert again.actions == plan.actions
    # The cause went away (the RuntimeClass was created): the pods exist, the job waits as usual.
    created = decide(settled, Observed((pod(0, phase="Pending"), pod(1, phase="Pending")),
                                       STARTED), NOW + timedelta(seconds=5))
    assert created.case == "pending" and created.status["message"] == \
        "attempt 1: waiting for 2 pod(s) to run"
    cleared = next(c for c in created.status["conditions"] if c["type"] == "PodCreationRejected")
    assert (cleared["status"], cleared["reason"]) == ("False", "PodsCreated")
    # Failed at the end of the allowance, naming the refusal.
    failed = decide(settled, Observed((), STARTED, Refusal(since, REFUSED)),
                    since + timedelta(seconds=30))
    assert failed.status["phase"] == "Failed"
    cond = next(c for c in failed.status["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "PodCreationRejected"
    assert cond["message"] == ("the API server refused to create the pods for longer than "
                               f"pendingTimeoutSeconds (30s): {REFUSED}")


def test_an_object_owned_by_another_is_named_in_the_status_until_it_goes():
    """A create found `demo-trainer` made by hand (or an older job's objects still being
    garbage-collected): the OwnershipConflict condition names it and its owner; it clears once
    the creates go through, and the job fails at the end of pendingTimeoutSeconds."""
    pending = job({"phase": "Pending", "attempt": 1, "startTime": EARLIER, "conditions": []},
                  restartPolicy={"pendingTimeoutSeconds": 30})
    since = NOW - timedelta(seconds=10)
    plan = decide(pending, Observed((), None, conflict=Refusal(since, OWNED)), NOW)
    text = (f"attempt 1: waiting since {rfc3339(since)} (the job fails after "
            f"pendingTimeoutSeconds, 30s): {OWNED}")
    assert plan.status["message"] == text
    conds = {c["type"]: c for c in plan.status["conditions"]}
    assert (conds["OwnershipConflict"]["status"], conds["OwnershipConflict"]["reason"],
            conds["OwnershipConflict"]["message"]) == ("True", "ObjectOwnedByOther", OWNED)
    settled = job({**pending.status, **plan.status}, restartPolicy={"pendingTimeoutSeconds": 30})
    cleared = decide(settled, Observed((pod(0, phase="Pending"), pod(1, phase="Pending")),
                                       STARTED), NOW + timedelta(seconds=5))
    cond = next(c for c in cleared.status["conditions"] if c["type"] == "OwnershipConflict")
    assert (cond["status"], cond["reason"]) == ("False", "ObjectsOwned")
    failed = decide(settled, Observed((), None, conflict=Refusal(since, OWNED)),
                    since + timedelta(seconds=30))
    cond = next(c for c in failed.status["conditions"] if c["type"] == "Failed")
    assert (failed.status["phase"], cond["reason"]) == ("Failed", "ObjectOwnedByOther")
    assert cond["message"] == f"for longer than pendingTimeoutSeconds (30s): {OWNED}"
