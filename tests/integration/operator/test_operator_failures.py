"""Failure classes through the real operator on the real control plane: permanent,
preempted, budget, deadline, invalid, stuck Pending, restart backoff."""

from __future__ import annotations

import pytest
from ftjob_api import contract, naming

from tests.integration.operator.helpers import (TIMEOUT, PodCreations, Real, bring_up,
                                                condition, describe, manifest, objects,
                                                parse_time, phase_is, pod_names, pods, status,
                                                summary, wait_event)
from tests.polling import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def h(cluster) -> Real:
    return Real(cluster)


def failed(h: Real, what: str = "phase Failed") -> dict:
    return wait_for(phase_is(h, "Failed"), TIMEOUT, what=what, describe=lambda: describe(h))


def test_permanent_failure_fails_without_restart(h, run_operator):
    with run_operator():
        h.create_job(manifest())
        bring_up(h)
        message = summary(status="failed", exitCode=11, reason="InvalidData",
                          message="column 'label' not found in /data/train.jsonl")
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 0), contract.ExitCode.INVALID_DATA,
                            message=message)
        st = failed(h)
        assert "column 'label' not found" in st["message"]
        assert st.get("restarts", 0) == 0 and st["attempt"] == 1
        # The healthy rank is stopped; no attempt 2 was ever created.
        wait_for(lambda: pod_names(h) == ["demo-1-0"], TIMEOUT, what="rank 1 deleted",
                 describe=lambda: describe(h))
        assert condition(st, "Failed")["reason"] == "InvalidData"


def test_preemption_restarts_without_using_budget(h, run_operator):
    with run_operator():
        h.create_job(manifest(restartPolicy={"maxRestarts": 0, "backoffSeconds": 0}))
        bring_up(h)
        # Like a real kubelet, keep the pods until their containers have exited.
        for rank in (0, 1):
            h.kubelet.hold(h.ns, naming.pod("demo", 1, rank))
        h.kubelet.disrupt(h.ns, naming.pod("demo", 1, 1))
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 1), contract.ExitCode.PREEMPTED)
        # The peer sees its rendezvous break; that must not be charged to the budget either.
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 0),
                            contract.ExitCode.DISTRIBUTED_TIMEOUT)
        for rank in (0, 1):
            h.kubelet.remove(h.ns, naming.pod("demo", 1, rank))
        st = bring_up(h, attempt=2)
        assert st.get("restarts", 0) == 0
        assert st["preemptions"] == 1
        wait_event(h, "Preempted")


def test_budget_exhausted_fails_naming_last_failure(h, run_operator):
    with run_operator():
        h.create_job(manifest(restartPolicy={"maxRestarts": 1, "backoffSeconds": 0}))
        bring_up(h)
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 0), 1)
        bring_up(h, attempt=2)
        h.kubelet.terminate(h.ns, naming.pod("demo", 2, 1), 137, reason="OOMKilled")
        st = failed(h)
        assert st["restarts"] == 1
        assert "restart budget exhausted" in st["message"]
        assert "rank 1 (pod demo-2-1) failed: OOMKilled" in st["message"]
        assert not pods(h, attempt=3)


def test_invalid_spec_fails_with_field_message_and_no_children(h, run_operator):
    with run_operator():
        h.create_job(manifest(task="seq2seq"))  # seq2seq needs dataset.targetColumn
        st = failed(h)
        cond = condition(st, "InvalidSpec")
        assert cond["status"] == "True"
        assert "spec.dataset.targetColumn: required for task seq2seq" in cond["message"]
        assert cond["observedGeneration"] == 1
        assert not pods(h)
        assert not objects(h, "configmaps") and not objects(h, "services")
        assert wait_event(h, "InvalidSpec").count("InvalidSpec") == 1


def test_active_deadline_fails_the_job(h, run_operator):
    created = PodCreations(h)
    try:
        with run_operator():
            h.create_job(manifest(activeDeadlineSeconds=2))
            st = failed(h, "deadline")
            assert condition(st, "Failed")["reason"] == "DeadlineExceeded"
            wait_for(lambda: not pods(h), TIMEOUT, what="pods deleted",
                     describe=lambda: describe(h))
        # The watch thread lags the API: once it has seen both deletions it has seen every
        # creation before them.
        wait_for(lambda: all(n in created.deleted_at for n in ("demo-1-0", "demo-1-1")),
                 TIMEOUT, what="the pod watch to see both pods deleted",
                 describe=lambda: f"created {created.names}, deleted {created.deleted_at}")
        assert sorted(created.names) == ["demo-1-0", "demo-1-1"]  # it did start
    finally:
        created.stop()


def test_stuck_pending_fails_after_timeout(h, run_operator):
    """The real scheduler keeps pods that fit no node Pending with its reason; after
    `pendingTimeoutSeconds` (30 s at least) the job fails and names it. Each pod asks for
    more CPU than the test node has (tests/controlplane/nodes.py: 32)."""
    with run_operator():
        h.create_job(manifest(resources={**manifest()["spec"]["resources"], "cpu": "64"},
                              restartPolicy={"pendingTimeoutSeconds": 30}))
        wait_for(lambda: len(pods(h)) == 2, TIMEOUT, what="two pods")
        wait_for(lambda: any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                             and "Insufficient cpu" in c.get("message", "")
                             for p in pods(h) for c in (p.get("status") or {}).get(
                                 "conditions") or []),
                 TIMEOUT, what="the scheduler to find no room", describe=lambda: describe(h))
        st = failed(h, "pending timeout")
        assert condition(st, "Failed")["reason"] == "PendingTimeout"
        assert "0/1 nodes are available" in st["message"], st["message"]


def test_restart_waits_for_the_backoff(h, run_operator):
    with run_operator():
        h.create_job(manifest(restartPolicy={"maxRestarts": 2, "backoffSeconds": 2}))
        bring_up(h)
        h.kubelet.evict(h.ns, naming.pod("demo", 1, 0))
        st = wait_for(phase_is(h, "Restarting"), TIMEOUT, what="Restarting")
        bring_up(h, attempt=2)
    assert st["restarts"] == 1
    restarting = condition(st, "Restarting")
    assert restarting["reason"] == "Evicted"
    assert "node had memory pressure" in st["message"]
    # Both times are whole seconds (the operator's condition, the API server's stamp).
    created = next(p for p in pods(h, attempt=2) if p["metadata"]["name"] == "demo-2-0")
    waited = (parse_time(created["metadata"]["creationTimestamp"])
              - parse_time(restarting["lastTransitionTime"])).total_seconds()
    assert waited >= 2.0, waited
