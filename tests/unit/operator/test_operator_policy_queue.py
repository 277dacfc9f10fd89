"""policies/queue.py and kueue.py: a job with spec.scheduling.queueName runs only while
Kueue admits its Workload, stops (checkpointing) when Kueue takes the quota back, gives the
quota back once its pods are gone, and reports PodsReady and Finished to Kueue."""

from __future__ import annotations

from typing import Any

from ftjob_api.contract import rfc3339
from ftjob_operator import kueue
from ftjob_operator.observe import Observed
from ftjob_operator.plan import (CreatePods, DeletePods, EnsureJobObjects, EnsureWorkload,
                                 SetWorkloadActive, UpdateWorkloadStatus)
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import (EARLIER, NOW, STARTED, job, pod, running_attempt,
                                                stepped)

QUEUED = {"scheduling": {"queueName": "team-a"}}
INSUFFICIENT = ("couldn't assign flavors to pod set main: insufficient unused quota for cpu in "
                "flavor default-flavor, 1 more needed")
PREEMPTED = ("Preempted to accommodate a workload (UID: u2, JobUID: j2) due to prioritization "
             "in the ClusterQueue")


def cond(type_: str, status: bool, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": "True" if status else "False", "reason": reason,
            "message": message, "lastTransitionTime": EARLIER, "observedGeneration": 1}


def workload(*conditions: dict[str, Any], admitted_by: str | None = None, active: bool = True,
             owner: str = "uid-1", rv: str = "7", ours: bool = False) -> kueue.WorkloadView:
    """A Workload of a 2-node job; `ours`: made inactive by the operator (spec.suspend)."""
    body = {"metadata": {"name": "finetunejob-demo", "resourceVersion": rv, "generation": 1,
                         "labels": {"finetune.dev/job-name": "demo"},
                         "annotations": {kueue.ANNOTATION_SUSPENDED: "true"} if ours else {},
                         "ownerReferences": [{"uid": owner, "controller": True}]},
            "spec": {"queueName": "team-a", "active": active,
                     "podSets": [{"name": "main", "count": 2}]},
            "status": {"conditions": list(conditions)}}
    if admitted_by:
        body["status"]["admission"] = {"clusterQueue": admitted_by}
    view = kueue.workload_view(body)
    assert view is not None
    return view


PENDING = workload(cond("QuotaReserved", False, "Pending", INSUFFICIENT))
ADMITTED = workload(cond("QuotaReserved", True, "QuotaReserved"), cond("Admitted", True, "Admitted"),
                    admitted_by="cq")


def evicted(reason: str, message: str) -> kueue.WorkloadView:
    return workload(cond("QuotaReserved", True, "QuotaReserved"),
                    cond("Admitted", True, "Admitted"), cond("Evicted", True, reason, message),
                    admitted_by="cq")


def queued_status() -> dict[str, Any]:
    return {"phase": "Pending", "conditions": [cond("Queued", True, "Queued", "queued")]}


def decide_on(status: dict[str, Any], wl: kueue.WorkloadView | None, pods=(), started=None,
              **spec: Any):
    started = {**started, **QUEUED} if started is not None else None  # the spec it ran with
    return decide(job(status, **{**QUEUED, **spec}),
                  Observed(pods=tuple(pods), started_spec=started, workload=wl), NOW)


def kinds(plan) -> list[type]:
    return [type(a) for a in plan.actions]


def test_a_new_queued_job_creates_its_workload_and_no_pod():
    plan = decide_on({}, None)
    assert plan.case == "queued in Kueue" and kinds(plan) == [EnsureWorkload]
    assert plan.status["phase"] == "Pending"
    assert plan.status["message"] == ("queued in Kueue LocalQueue team-a: waiting for Kueue to "
                                      "admit it")
    (queued,) = [c for c in plan.status["conditions"] if c["type"] == "Queued"]
    assert (queued["status"], queued["reason"]) == ("True", "Queued")
    assert [e.reason for e in plan.events] == ["Queued"]
    manifest = plan.actions[0].manifest
    assert manifest["spec"]["queueName"] == "team-a"
    assert manifest["spec"]["podSets"][0]["count"] == 2


def test_a_waiting_job_says_why_in_kueues_words_and_creates_nothing():
    plan = decide_on(queued_status(), PENDING)
    assert plan.actions == [] and plan.events == []
    assert plan.status["message"] == f"queued in Kueue LocalQueue team-a: {INSUFFICIENT}"


def test_admitted_starts_the_first_attempt_and_says_so():
    plan = decide_on(queued_status(), ADMITTED)
    assert plan.case == "start" and kinds(plan) == [EnsureJobObjects, CreatePods]
    (queued,) = [c for c in plan.status["conditions"] if c["type"] == "Queued"]
    assert (queued["status"], queued["reason"]) == ("False", "Admitted")
    assert queued["message"] == "admitted by Kueue ClusterQueue cq"
    assert [e.reason for e in plan.events] == ["Started", "Admitted"]


def test_all_ranks_ready_tells_kueue_pods_ready_once():
    status = running_attempt(1, stepped(3, 1))
    plan = decide_on(status, ADMITTED, [pod(0, ready=True), pod(1, ready=True)], STARTED)
    (update,) = [a for a in plan.actions if isinstance(a, UpdateWorkloadStatus)]
    assert update.resource_version == "7"
    (ready,) = [c for c in update.status["conditions"] if c["type"] == "PodsReady"]
    assert (ready["status"], ready["reason"]) == ("True", "Started")
    assert ready["lastTransitionTime"] == rfc3339(NOW)
    # Kueue's own conditions are carried over as they were (a merge patch replaces the list).
    assert [c for c in update.status["conditions"] if c["type"] != "PodsReady"] == list(
        ADMITTED.conditions)

    said = workload(*ADMITTED.conditions, cond("PodsReady", True, "Started"), admitted_by="cq")
    plan = decide_on(status, said, [pod(0, ready=True), pod(1, ready=True)], STARTED)
    assert not any(isinstance(a, UpdateWorkloadStatus) for a in plan.actions)
    # One rank not Ready yet: nothing to say (an absent PodsReady reads as WaitForStart).
    plan = decide_on(status, ADMITTED, [pod(0, ready=True), pod(1)], STARTED)
    assert not any(isinstance(a, UpdateWorkloadStatus) for a in plan.actions)


def test_preempted_stops_the_pods_like_a_suspend_and_keeps_the_quota_until_they_are_gone():
    status = running_attempt(1, stepped(12, 1))
    plan = decide_on(status, evicted("Preempted", PREEMPTED), [pod(0), pod(1)], STARTED)
    assert plan.case == "suspend, waiting for the checkpoint"
    assert kinds(plan) == [DeletePods]  # no release while pods run
    assert plan.status["phase"] == "Suspended"
    assert [e.reason for e in plan.events] == ["Suspended", "EvictedByQueue"]
    assert f"Kueue (Preempted: {PREEMPTED})" in plan.events[1].message


def test_once_the_pods_are_gone_the_checkpoint_is_checked_and_the_quota_given_back():
    status = running_attempt(1, stepped(12, 1), phase="Suspended",
                             checkpoint={"latest": {"step": 12, "path": "/output/checkpoint-12"}})
    plan = decide_on(status, evicted("Preempted", PREEMPTED), [], STARTED)
    assert plan.case == "suspended, checkpoint checked"
    (record,) = plan.status["attempts"]
    assert record["reason"] == "Suspended" and record.get("stepsLost", 0) == 0
    saved = [c for c in plan.status["conditions"] if c["type"] == "SuspendCheckpointSaved"]
    assert saved[0]["status"] == "True"
    (release,) = plan.actions
    assert isinstance(release, UpdateWorkloadStatus)
    assert release.status["admission"] is None
    by_type = {c["type"]: c for c in release.status["conditions"]}
    assert (by_type["QuotaReserved"]["status"], by_type["QuotaReserved"]["reason"]) == (
        "False", "Pending")
    assert (by_type["Admitted"]["status"], by_type["Admitted"]["reason"]) == (
        "False", "NoReservation")
    # Preempted: Kueue requeues at once; Evicted stays True until it admits it again.
    assert (by_type["Requeued"]["status"], by_type["Requeued"]["reason"]) == ("True", "Preempted")
    assert by_type["Evicted"]["status"] == "True"
    # Not Ready for the next admission (a stale True would switch waitForPodsReady off).
    assert (by_type["PodsReady"]["status"], by_type["PodsReady"]["reason"]) == (
        "False", "WaitForStart")


def test_a_pods_ready_timeout_gives_the_quota_back_for_kueues_backoff():
    status = {**running_attempt(1), "phase": "Suspended"}
    status["attempts"] = [{"attempt": 1, "startTime": EARLIER, "endTime": EARLIER,
                           "reason": "Suspended"}]
    plan = decide_on(status, evicted("PodsReadyTimeout", "Exceeded the PodsReady timeout"), [])
    (release,) = [a for a in plan.actions if isinstance(a, UpdateWorkloadStatus)]
    requeued = next(c for c in release.status["conditions"] if c["type"] == "Requeued")
    assert (requeued["status"], requeued["reason"]) == ("False", "PodsReadyTimeout")
    assert "phase" not in plan.status  # Suspended, as it was
    assert plan.status["message"].startswith("queued in Kueue LocalQueue team-a")


def test_readmitted_resumes_in_a_new_attempt_no_restart_counted():
    status = {"phase": "Suspended", "attempt": 1, "startTime": EARLIER,
              "attempts": [{"attempt": 1, "startTime": EARLIER, "endTime": EARLIER,
                            "reason": "Suspended"}],
              "conditions": [cond("Queued", True, "Queued", "queued")]}
    plan = decide_on(status, ADMITTED, [], STARTED)
    assert plan.case == "resume" and kinds(plan) == [CreatePods]
    assert plan.status["attempt"] == 2 and "restarts" not in plan.status


def test_spec_suspend_deactivates_the_workload_after_its_status_patch():
    ready = workload(*ADMITTED.conditions, cond("PodsReady", True, "Started"), admitted_by="cq")
    plan = decide_on(running_attempt(1), ready, [pod(0), pod(1)], STARTED, suspend=True)
    assert kinds(plan) == [DeletePods, UpdateWorkloadStatus, SetWorkloadActive]
    # The status patch names the resourceVersion read; the spec patch would change it first.
    assert plan.actions[1].resource_version == "7" and plan.actions[2].active is False


def test_only_a_workload_the_operator_deactivated_is_made_active_again():
    """Kueue deactivates a Workload past its requeuing limit (an admin may too): that one
    stays inactive, and the job waits; the operator's own (spec.suspend) is undone."""
    deactivated = workload(cond("QuotaReserved", False, "Pending", "inactive"), active=False)
    plan = decide_on(queued_status(), deactivated)
    assert not any(isinstance(a, SetWorkloadActive) for a in plan.actions)
    assert plan.status.get("phase", "Pending") == "Pending" and not kinds(plan)
    ours = workload(cond("QuotaReserved", False, "Pending", "inactive"), active=False, ours=True)
    (active,) = [a for a in decide_on(queued_status(), ours).actions
                 if isinstance(a, SetWorkloadActive)]
    assert active.active is True


def test_a_finished_job_marks_its_workload_finished_once():
    done = {"phase": "Succeeded", "message": "trained", "attempt": 1}
    plan = decide_on(done, ADMITTED)
    (update,) = [a for a in plan.actions if isinstance(a, UpdateWorkloadStatus)]
    finished = next(c for c in update.status["conditions"] if c["type"] == "Finished")
    assert (finished["status"], finished["reason"], finished["message"]) == (
        "True", "Succeeded", "trained")
    said = workload(*ADMITTED.conditions, cond("Finished", True, "Succeeded"), admitted_by="cq")
    assert not any(isinstance(a, UpdateWorkloadStatus) for a in decide_on(done, said).actions)


def test_a_job_without_a_queue_ignores_kueue():
    plan = decide(job({}), Observed(), NOW)
    assert plan.case == "start" and not any(
        isinstance(a, EnsureWorkload | UpdateWorkloadStatus) for a in plan.actions)


def test_a_workload_of_another_job_of_the_same_name_is_not_read():
    from ftjob_operator.observe import observe
    from ftjob_operator.plan import JobRef
    other = workload(owner="uid-old")
    seen = observe(JobRef("demo", "ns", "uid-1"), {}, {}, None, {("ns", "demo"): [other]})
    assert seen.workload is None
    seen = observe(JobRef("demo", "ns", "uid-1"), {}, {}, None, {("ns", "demo"): [ADMITTED]})
    assert seen.workload is ADMITTED


def test_rank0_succeeding_while_evicted_ends_the_job_instead_of_suspending_it():
    """Kueue's eviction landed at the last step: the trainer finished (rank 0 exited 0), so
    the job succeeds; suspending it would resume a finished run."""
    import json
    summary = json.dumps({"status": "succeeded", "globalStep": 40, "metrics": {},
                          "finalModel": "/output/final"})
    status = running_attempt(1, stepped(40, 1), phase="Suspended")
    plan = decide_on(status, evicted("Preempted", PREEMPTED),
                     [pod(0, phase="Succeeded", termination_message=summary, exit_code=0),
                      pod(1, phase="Succeeded", exit_code=0)], STARTED)
    assert plan.case == "succeeded" and plan.status["phase"] == "Succeeded"
    assert not any(isinstance(a, CreatePods) for a in plan.actions)


def test_pods_of_a_job_admitted_with_a_flavor_carry_its_node_labels_and_tolerations():
    """As Kueue's integrations do: the pods go where the quota they use is."""
    body = {"metadata": {"name": "finetunejob-demo", "resourceVersion": "7",
                         "labels": {"finetune.dev/job-name": "demo"},
                         "ownerReferences": [{"uid": "uid-1", "controller": True}]},
            "spec": {"queueName": "team-a"},
            "status": {"conditions": list(ADMITTED.conditions), "admission": {
                "clusterQueue": "cq", "podSetAssignments": [
                    {"name": "main", "flavors": {"cpu": "spot", "nvidia.com/gpu": "a100"}}]}}}
    admitted = kueue.workload_view(body)
    assert admitted.flavors == ("a100", "spot")
    gpu = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    flavors = {
        "a100": [kueue.flavor_placement({"spec": {"nodeLabels": {"gpu": "a100"},
                                                  "tolerations": [gpu]}})],
        "spot": [kueue.flavor_placement({"spec": {"nodeLabels": {"pool": "spot"}}})],
        "h100": [kueue.flavor_placement({"spec": {"nodeLabels": {"gpu": "h100"}}})]}
    from ftjob_operator.observe import observe
    from ftjob_operator.plan import JobRef
    seen = observe(JobRef("demo", "ns", "uid-1"), {}, {}, None,
                   {("ns", "demo"): [admitted]}, flavors)
    plan = decide(job(queued_status(), **QUEUED), seen, NOW)
    (create,) = [a for a in plan.actions if isinstance(a, CreatePods)]
    for pod_manifest in create.pods:
        assert pod_manifest["spec"]["nodeSelector"] == {"gpu": "a100", "pool": "spot"}
        assert pod_manifest["spec"]["tolerations"].count(gpu) == 1


def test_waiting_in_the_queue_does_not_count_against_active_deadline_seconds():
    long_ago = {**queued_status(), "phase": "Suspended", "attempt": 1, "startTime": EARLIER,
                "attempts": [{"attempt": 1, "startTime": EARLIER, "endTime": EARLIER,
                              "reason": "Suspended"}]}
    plan = decide_on(long_ago, PENDING, activeDeadlineSeconds=10)  # started 100 s ago
    assert plan.case == "queued in Kueue" and plan.requeue_after is None
    admitted = decide_on(long_ago, ADMITTED, activeDeadlineSeconds=10)
    assert admitted.case == "deadline exceeded"  # running again: the deadline applies


def test_a_workload_the_api_refuses_is_said_in_the_status():
    from ftjob_operator.observe import Refusal
    refused = Refusal(NOW, "create Workload finetunejob-demo: PriorityClass urgent not found")
    plan = decide(job({}, **QUEUED), Observed(refusal=refused), NOW)
    assert plan.status["message"] == (
        "queued in Kueue LocalQueue team-a: its Workload cannot be created: create Workload "
        "finetunejob-demo: PriorityClass urgent not found")
