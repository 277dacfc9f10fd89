"""Kueue on the kind cluster (scripts/kind-up.sh installs it from its release's chart with
kind/kueue/values.yaml: waitForPodsReady 60 s, requeue backoff from 10 s): a queued
FineTuneJob is one Workload the operator keeps, admitted for its whole gang or not at all.

The scenarios share one ClusterQueue of 2 CPUs (`QUOTA`) and run one after another; each
job's ranks ask for 1 CPU (2 ranks: the whole quota), so two jobs never fit together.
Preemption is Kueue's alone: the PriorityClasses do not let the kube-scheduler preempt.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml
from ftjob_api import naming

from . import jobs, kit
from .kit import finished, seed, step_of
from tests.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FIRST, SECOND, LOW, HIGH, GANG = ("e2e-q-first", "e2e-q-second", "e2e-q-low", "e2e-q-high",
                                  "e2e-q-gang")
LOCAL_QUEUE = "e2e"
TIMEOUT = 300
PODS_READY_TIMEOUT = 60  # kind/kueue/values.yaml


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def queue(backend):
    """ResourceFlavor, ClusterQueue (2 CPUs, lower priorities preempted), a LocalQueue in the
    scenarios' namespace and two PriorityClasses; removed at the end."""
    suffix = backend.namespace
    cluster_queue, flavor = f"ftjob-{suffix}", f"ftjob-{suffix}"
    low, high = f"ftjob-{suffix}-low", f"ftjob-{suffix}-high"
    objects = [
        # Node labels every worker has: the pods must carry them (as a GPU flavor's would).
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
         "metadata": {"name": flavor}, "spec": {"nodeLabels": {"kubernetes.io/os": "linux"}}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue",
         "metadata": {"name": cluster_queue},
         "spec": {"namespaceSelector": {"matchLabels": {
                      "kubernetes.io/metadata.name": backend.namespace}},
                  "preemption": {"withinClusterQueue": "LowerPriority"},
                  "resourceGroups": [{"coveredResources": ["cpu"], "flavors": [
                      {"name": flavor, "resources": [{"name": "cpu", "nominalQuota": "2"}]}]}]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
         "metadata": {"name": LOCAL_QUEUE, "namespace": backend.namespace},
         "spec": {"clusterQueue": cluster_queue}},
        *({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
           "metadata": {"name": name}, "value": value, "preemptionPolicy": "Never"}
          for name, value in ((low, 100), (high, 1000))),
    ]
    seed(backend, [FIRST, SECOND, LOW, HIGH, GANG])
    backend.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))

    def active() -> bool:
        got = backend.kubectl("get", "clusterqueue", cluster_queue, "-o",
                              "jsonpath={.status.conditions[?(@.type=='Active')].status}",
                              check=False)
        return got.stdout.strip() == "True"

    wait_for(active, 60, f"ClusterQueue {cluster_queue} to be active")
    try:
        yield {"low": low, "high": high, "cluster_queue": cluster_queue}
    finally:
        for name in (FIRST, SECOND, LOW, HIGH, GANG):
            backend.kubectl("delete", "finetunejob", name, "--wait=false", check=False)
        backend.kubectl("delete", "localqueue", LOCAL_QUEUE, "--wait=false", check=False)
        backend.kubectl("delete", "clusterqueue", cluster_queue, "--wait=false", check=False)
        backend.kubectl("delete", "resourceflavor", flavor, "--wait=false", check=False)
        backend.kubectl("delete", "priorityclass", low, high, "--wait=false", check=False)


def queued_job(name: str, max_steps: int, priority: str | None = None, **training) -> dict:
    job = jobs.training_job(name, max_steps, save_steps=10 * max_steps, **training)
    job["spec"]["resources"]["cpu"] = "1"
    job["spec"]["scheduling"] = {"queueName": LOCAL_QUEUE}
    if priority:
        job["spec"]["scheduling"]["priorityClassName"] = priority
    return job


def workload(backend, job: str) -> dict:
    done = backend.kubectl("get", "workloads.kueue.x-k8s.io", f"finetunejob-{job}", "-o",
                           "json", check=False)
    return yaml.safe_load(done.stdout) if done.returncode == 0 else {}


def wl_condition(wl: dict, type_: str) -> dict:
    return next((c for c in (wl.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), {})


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def live_pods(backend, job: str) -> list[dict]:
    return [p for p in backend.list("pods", f"{naming.LABEL_JOB}={job}")
            if not p["metadata"].get("deletionTimestamp")]


def end(backend, name: str) -> None:
    backend.kubectl("delete", "finetunejob", name, "--wait=true", timeout=180)


def test_a_job_over_the_quota_waits_in_its_queue_until_the_first_finishes(backend, queue):
    backend.apply(queued_job(FIRST, 30))
    kit.wait_status(backend, FIRST, lambda s: s.get("phase") == "Running", "Running", TIMEOUT)
    for pod in live_pods(backend, FIRST):  # placed by the flavor Kueue admitted it with
        assert pod["spec"]["nodeSelector"]["kubernetes.io/os"] == "linux", pod["spec"]
    backend.apply(queued_job(SECOND, 30))

    waiting = kit.wait_status(backend, SECOND, lambda s: "insufficient" in (s.get("message") or ""),
                              "Kueue's reason to wait", 60)
    assert waiting["phase"] == "Pending", waiting
    queued = condition(waiting, "Queued")
    assert queued["status"] == "True" and f"LocalQueue {LOCAL_QUEUE}" in queued["message"], queued
    assert live_pods(backend, SECOND) == []  # no pod while queued: not half a gang, none

    first = kit.wait_status(backend, FIRST, finished, "the end", TIMEOUT)
    assert first["phase"] == "Succeeded" and step_of(first) == 30, first
    second = kit.wait_status(backend, SECOND, lambda s: step_of(s) > 0, "a first step", TIMEOUT)
    admitted = condition(second, "Queued")
    assert admitted["status"] == "False" and queue["cluster_queue"] in admitted["message"]
    # Admitted only once the first job's quota was freed.
    assert _time(admitted["lastTransitionTime"]) >= _time(condition(first, "Succeeded")[
        "lastTransitionTime"]).replace(microsecond=0)
    end(backend, FIRST)
    end(backend, SECOND)


def test_kueue_preemption_suspends_at_a_saved_checkpoint_and_resumes_without_losing_a_step(
        backend, queue):
    max_steps = 200  # long enough that the preemption lands mid-training on a fast machine
    backend.apply(queued_job(LOW, max_steps, queue["low"]))
    before = kit.wait_status(backend, LOW, lambda s: step_of(s) >= 5 or finished(s),
                             "step 5", TIMEOUT)
    assert not finished(before), before
    backend.apply(queued_job(HIGH, 10, queue["high"]))

    suspended = kit.wait_status(
        backend, LOW, lambda s: condition(s, "SuspendCheckpointSaved").get("status") in (
            "True", "False"), "the preempted attempt to be closed", TIMEOUT)
    evicted_at = _time(wl_condition(workload(backend, LOW), "Evicted")["lastTransitionTime"])
    # The quota is given back once every pod is gone (the GPUs free).
    released = wait_for(lambda: (c := wl_condition(workload(backend, LOW), "QuotaReserved")).get(
        "status") == "False" and c, 60, "the preempted job's quota to be given back")
    released_at = _time(released["lastTransitionTime"])
    # Given back with every pod stopped (any still listed, being deleted, has ended).
    still = [p["metadata"]["name"] for p in backend.list("pods", f"{naming.LABEL_JOB}={LOW}")
             if p["status"].get("phase") not in ("Succeeded", "Failed")]
    assert not still, still
    (record,) = [a for a in suspended["attempts"] if a["attempt"] == 1]
    assert record["reason"] == "Suspended" and "Preempted" in record["message"], record
    assert record.get("stepsLost", 0) == 0, record
    assert condition(suspended, "SuspendCheckpointSaved")["status"] == "True", suspended
    saved_step = suspended["checkpoint"]["latest"]["step"]
    assert saved_step == record["lastStep"] >= step_of(before)

    high = kit.wait_status(backend, HIGH, finished, "the high-priority job to end", TIMEOUT)
    assert high["phase"] == "Succeeded", high
    high_admitted_at = _time(wl_condition(workload(backend, HIGH), "QuotaReserved")[
        "lastTransitionTime"])
    assert high_admitted_at >= released_at  # never both on the quota at once

    done = kit.wait_status(backend, LOW, finished, "the preempted job to end", TIMEOUT)
    assert done["phase"] == "Succeeded", done
    assert step_of(done) == max_steps, done  # exactly max_steps: nothing trained twice
    assert done["checkpoint"]["resumedFromStep"] == saved_step, done["checkpoint"]
    assert done.get("restarts", 0) == 0, "a preemption must not spend the restart budget"
    assert sum(a.get("stepsLost", 0) for a in done["attempts"]) == 0, done["attempts"]
    resumed = next(a for a in done["attempts"] if a["attempt"] == 2)
    readmitted = _time(wl_condition(workload(backend, LOW), "Admitted")["lastTransitionTime"])
    print(f"kueue preemption at step {saved_step}: steps lost 0; evicted -> pods gone and "
          f"quota given back {(released_at - evicted_at).total_seconds():.0f} s; -> the "
          f"preemptor admitted {(high_admitted_at - evicted_at).total_seconds():.0f} s; "
          f"re-admitted -> first new step "
          f"{(_time(resumed['firstStepTime']) - readmitted).total_seconds():.0f} s")
    end(backend, HIGH)
    end(backend, LOW)


def test_a_gang_that_cannot_all_start_is_requeued_not_left_half_running(backend, queue):
    """3 ranks, at most one per node, on 2 schedulable workers: rank 2 stays Pending. Kueue's
    waitForPodsReady evicts the Workload; the operator stops the two running ranks too and
    gives the quota back; Kueue requeues it after its backoff."""
    job = queued_job(GANG, 1000)
    job["spec"]["resources"].update(nodes=3, cpu="500m")
    job["spec"]["scheduling"]["affinity"] = {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {naming.LABEL_JOB: GANG}}}]}}
    backend.apply(job)
    kit.wait_status(backend, GANG, lambda s: s.get("attempt") == 1, "attempt 1", TIMEOUT)
    wait_for(lambda: sum(p["status"].get("phase") == "Running"
                         for p in live_pods(backend, GANG)) == 2, TIMEOUT, "2 ranks running")

    evicted = wait_for(lambda: (c := wl_condition(workload(backend, GANG), "Evicted")).get(
        "reason") == "PodsReadyTimeout" and c, PODS_READY_TIMEOUT + 120, "Kueue's eviction")
    closed = kit.wait_status(backend, GANG, lambda s: any(
        a["attempt"] == 1 and a.get("endTime") for a in s.get("attempts") or []),
        "attempt 1 to be closed", 120)
    (record,) = [a for a in closed["attempts"] if a["attempt"] == 1]
    assert record["reason"] == "Suspended" and "PodsReadyTimeout" in record["message"], record
    # Not left half-running: every rank of attempt 1 is gone, the running ones included.
    wait_for(lambda: not [p for p in backend.list("pods", f"{naming.LABEL_JOB}={GANG}")
                          if p["metadata"]["labels"][naming.LABEL_ATTEMPT] == "1"],
             120, "attempt 1's pods to be gone")
    requeued = wait_for(lambda: ((workload(backend, GANG).get("status") or {}).get(
        "requeueState") or {}).get("count"), 60, "Kueue's requeue")
    assert requeued >= 1
    # After the backoff Kueue admits it again, and the operator starts a new attempt.
    again = kit.wait_status(backend, GANG, lambda s: (s.get("attempt") or 0) >= 2,
                            "a new attempt after the requeue", TIMEOUT)
    assert again.get("restarts", 0) == 0, again
    print(f"kueue waitForPodsReady: evicted {evicted['lastTransitionTime']}, requeued "
          f"{requeued} time(s), attempt {again['attempt']} started")
    end(backend, GANG)
