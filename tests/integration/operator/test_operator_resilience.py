"""Convergence: the operator stopped mid-restart, and 10% of API requests failing."""

from __future__ import annotations

import time

import pytest

from ftjob_operator import contract, naming
from tests.conftest import never, wait_for
from tests.integration.operator.helpers import (NS, PodCreations, create_job, manifest,
                                                phase_is, pod_names, pods, run_all, status,
                                                summary)


def _running(kube, attempt: int = 1, timeout: float = 20):
    wait_for(lambda: len(pods(kube, attempt=attempt)) == 2, timeout=timeout,
             what=f"attempt {attempt} pods")
    run_all(kube, attempt=attempt)
    wait_for(lambda: status(kube).get("phase") == "Running"
             and status(kube).get("attempt") == attempt, timeout=timeout,
             what=f"attempt {attempt} running")


def _succeed(kube, attempt: int) -> None:
    kube.kubelet.terminate(NS, naming.pod("demo", attempt, 1), 0)
    kube.kubelet.terminate(NS, naming.pod("demo", attempt, 0), 0, message=summary(
        status="succeeded", globalStep=5, metrics={"eval_loss": 0.25}))


def test_operator_stopped_mid_restart_converges_without_duplicates(kube, run_operator):
    created = PodCreations(kube)
    create_job(kube, manifest())
    with run_operator():
        _running(kube)
        # Rank 1 of the next attempt cannot be created: the restart stops half-way.
        unblock = kube.faults.block(lambda verb, res, name: verb == "create" and res == "pods"
                                    and name == naming.pod("demo", 2, 1))
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 0), 1)
        wait_for(lambda: pod_names(kube) == ["demo-2-0"], what="half-created attempt 2")
    # The operator is gone with attempt 2 half-created; a new one must finish the job.
    unblock()
    with run_operator():
        _running(kube, attempt=2)
        st = status(kube)
        assert st["restarts"] == 1
        _succeed(kube, 2)
        wait_for(phase_is(kube, "Succeeded"))
    assert created.duplicates() == []
    assert sorted(created.names) == ["demo-1-0", "demo-1-1", "demo-2-0", "demo-2-1"]


def test_operator_restarted_while_old_pods_terminate(kube, run_operator):
    created = PodCreations(kube)
    create_job(kube, manifest())
    with run_operator():
        _running(kube)
        # Deletions fail: the failed attempt's pods cannot be removed yet.
        unblock = kube.faults.block(lambda verb, res, name: verb == "delete" and res == "pods")
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 1), 137, reason="OOMKilled")
        wait_for(phase_is(kube, "Restarting"), what="Restarting")
    unblock()
    with run_operator():
        _running(kube, attempt=2)
    assert status(kube)["restarts"] == 1
    assert created.duplicates() == []
    assert not pods(kube, attempt=1)


@pytest.mark.parametrize("seed", [1, 2])
def test_ten_percent_api_errors_reach_the_same_end_state(kube, run_operator, seed):
    kube.faults.seed = seed
    kube.faults.__post_init__()
    kube.faults.rate = 0.10
    created = PodCreations(kube)
    with run_operator():
        create_job(kube, manifest())
        _running(kube, timeout=60)
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 0), 1)
        _running(kube, attempt=2, timeout=60)
        _succeed(kube, 2)
        st = wait_for(phase_is(kube, "Succeeded"), timeout=60)
    assert st["restarts"] == 1 and st["attempt"] == 2
    assert st["metrics"] == {"eval_loss": 0.25}
    assert created.duplicates() == []
    assert sum(kube.faults.injected.values()) > 0, "no fault was injected: the test proves nothing"


def test_next_attempt_waits_until_every_old_pod_is_gone(kube, run_operator):
    """Gang restart: terminating pods still hold the rendezvous names and the GPUs."""
    kube.store.graceful_kinds.add("Pod")
    gone_at: dict[str, float] = {}
    added_at: dict[str, float] = {}

    def hook(etype, rtype, obj):
        if rtype.key == "pods":
            name = obj["metadata"]["name"]
            (gone_at if etype == "DELETED" else added_at if etype == "ADDED" else {})[name] = \
                time.monotonic()

    kube.store.hooks.append(hook)
    with run_operator():
        create_job(kube, manifest())
        _running(kube)
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 1), 1)
        wait_for(lambda: all(p["metadata"].get("deletionTimestamp") for p in pods(kube)),
                 what="attempt 1 pods terminating")
        # The surviving rank checkpoints and exits; every event is a chance to act too early.
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 0), contract.ExitCode.PREEMPTED)
        kube.kubelet.remove(NS, naming.pod("demo", 1, 1))
        never(lambda: pods(kube, attempt=2), seconds=1.0, what="attempt 2 before rank 0 is gone")
        kube.kubelet.remove(NS, naming.pod("demo", 1, 0))
        _running(kube, attempt=2)
    assert min(added_at["demo-2-0"], added_at["demo-2-1"]) > gone_at["demo-1-0"]
    assert status(kube)["restarts"] == 1 and status(kube).get("preemptions", 0) == 0
