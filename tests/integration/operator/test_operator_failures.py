"""Failure classes through the real operator: permanent, preempted, budget, deadline, invalid."""

from __future__ import annotations

import time

from ftjob_operator import contract, naming
from tests.conftest import wait_for
from tests.integration.operator.helpers import (NS, bring_up, PodCreations, wait_event, condition, create_job, manifest,
                                                objects, phase_is, pod_names, pods,
                                                status, summary)


def test_permanent_failure_fails_without_restart(kube, run_operator):
    with run_operator():
        create_job(kube, manifest())
        bring_up(kube)
        message = summary(status="failed", exitCode=11, reason="InvalidData",
                          message="column 'label' not found in /data/train.jsonl")
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 0), contract.ExitCode.INVALID_DATA,
                               message=message)
        st = wait_for(phase_is(kube, "Failed"), what="phase Failed")
        assert "column 'label' not found" in st["message"]
        assert st.get("restarts", 0) == 0 and st["attempt"] == 1
        # The healthy rank is stopped; no attempt 2 was ever created.
        wait_for(lambda: pod_names(kube) == ["demo-1-0"], what="rank 1 deleted")
        assert condition(st, "Failed")["reason"] == "InvalidData"


def test_preemption_restarts_without_using_budget(kube, run_operator):
    with run_operator():
        create_job(kube, manifest(restartPolicy={"maxRestarts": 0, "backoffSeconds": 0}))
        bring_up(kube)
        kube.kubelet.disrupt(NS, naming.pod("demo", 1, 1))
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 1), contract.ExitCode.PREEMPTED)
        # The peer sees its rendezvous break; that must not be charged to the budget either.
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 0), contract.ExitCode.DISTRIBUTED_TIMEOUT)
        bring_up(kube, attempt=2)
        st = status(kube)
        assert st.get("restarts", 0) == 0
        assert st["preemptions"] == 1
        wait_event(kube, "Preempted")


def test_budget_exhausted_fails_naming_last_failure(kube, run_operator):
    with run_operator():
        create_job(kube, manifest(restartPolicy={"maxRestarts": 1, "backoffSeconds": 0}))
        bring_up(kube)
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 0), 1)
        bring_up(kube, attempt=2)
        kube.kubelet.terminate(NS, naming.pod("demo", 2, 1), 137, reason="OOMKilled")
        st = wait_for(phase_is(kube, "Failed"), what="phase Failed")
        assert st["restarts"] == 1
        assert "restart budget exhausted" in st["message"]
        assert "rank 1 (pod demo-2-1) failed: OOMKilled" in st["message"]
        assert not pods(kube, attempt=3)


def test_invalid_spec_fails_with_field_message_and_no_children(kube, run_operator):
    with run_operator():
        body = manifest(task="seq2seq")  # seq2seq needs dataset.targetColumn
        create_job(kube, body)
        st = wait_for(phase_is(kube, "Failed"), what="phase Failed")
        cond = condition(st, "InvalidSpec")
        assert cond["status"] == "True"
        assert "spec.dataset.targetColumn: required for task seq2seq" in cond["message"]
        assert cond["observedGeneration"] == 1
        assert not pods(kube)
        assert not objects(kube, "configmaps") and not objects(kube, "services")
        assert wait_event(kube, "InvalidSpec").count("InvalidSpec") == 1


def test_active_deadline_fails_the_job(kube, run_operator):
    created = PodCreations(kube)
    with run_operator():
        create_job(kube, manifest(activeDeadlineSeconds=2))
        st = wait_for(phase_is(kube, "Failed"), what="deadline")
        assert condition(st, "Failed")["reason"] == "DeadlineExceeded"
        assert sorted(created.names) == ["demo-1-0", "demo-1-1"]  # it did start
        wait_for(lambda: not pods(kube), what="pods deleted")


def test_stuck_pending_fails_after_timeout(kube, run_operator):
    # pendingTimeoutSeconds has a floor of 30s in the API; shorten by backdating the pod.
    with run_operator():
        create_job(kube, manifest(restartPolicy={"pendingTimeoutSeconds": 30}))
        wait_for(lambda: len(pods(kube)) == 2)
        kube.kubelet.pending(NS, naming.pod("demo", 1, 1), "0/3 nodes are available")
        store, ptype = kube.store, kube.store.type_of("", "pods")
        with store._lock:  # age the pod as if it had waited 31 seconds
            obj = store.objects[(ptype.key, NS, naming.pod("demo", 1, 1))]
            obj["metadata"]["creationTimestamp"] = "2000-01-01T00:00:00Z"
        kube.kubelet.pending(NS, naming.pod("demo", 1, 1), "0/3 nodes are available: gpu")
        st = wait_for(phase_is(kube, "Failed"), what="pending timeout")
        assert condition(st, "Failed")["reason"] == "PendingTimeout"
        assert "0/3 nodes are available" in st["message"]


def test_restart_waits_for_the_backoff(kube, run_operator):
    restarting: list[tuple[float, dict]] = []
    created_at: dict[str, float] = {}

    def hook(etype, rtype, obj):
        if rtype.key == "pods" and etype == "ADDED":
            created_at[obj["metadata"]["name"]] = time.monotonic()
        if rtype.plural == "finetunejobs" and (obj.get("status") or {}).get("phase") == "Restarting":
            restarting.append((time.monotonic(), obj["status"]))

    kube.store.hooks.append(hook)
    with run_operator():
        create_job(kube, manifest(restartPolicy={"maxRestarts": 2, "backoffSeconds": 2}))
        bring_up(kube)
        kube.kubelet.evict(NS, naming.pod("demo", 1, 0))
        bring_up(kube, attempt=2)
    since, st = restarting[0]
    assert created_at["demo-2-0"] - since >= 2.0
    assert st["restarts"] == 1
    assert condition(st, "Restarting")["reason"] == "Evicted"
    assert "node had memory pressure" in st["message"]
