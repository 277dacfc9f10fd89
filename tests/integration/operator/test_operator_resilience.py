"""Convergence when API requests fail: the operator stopped mid-restart, old pods that cannot
be deleted, and 10% of API requests failing.

These run on the API emulator (tests/kubeemu), not the real control plane: each needs the API
to fail chosen requests on cue (block the create of one pod, every pod delete, or a seeded
10% of all requests, including 504s after the write was applied), which a real API server
cannot be asked to do. Everything else about the operator is tested on the real server.
"""

from __future__ import annotations

import pytest
from ftjob_api import naming

from tests.integration.operator.helpers import (TIMEOUT, Emulated, PodCreations, bring_up,
                                                manifest, phase_is, pod_names, pods, status, succeed)
from tests.polling import wait_for


@pytest.fixture
def h(kube) -> Emulated:
    return Emulated(kube)


def test_operator_stopped_mid_restart_converges_without_duplicates(h, kube,
                                                                   run_emulated_operator):
    created = PodCreations(h)
    h.create_job(manifest())
    with run_emulated_operator():
        bring_up(h)
        # Rank 1 of the next attempt cannot be created: the restart stops half-way.
        unblock = kube.faults.block(lambda verb, res, name: verb == "create" and res == "pods"
                                    and name == naming.pod("demo", 2, 1))
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 0), 1)
        wait_for(lambda: pod_names(h) == ["demo-2-0"], TIMEOUT, what="half-created attempt 2")
    # The operator is gone with attempt 2 half-created; a new one must finish the job.
    unblock()
    with run_emulated_operator():
        st = bring_up(h, attempt=2)
        assert st["restarts"] == 1
        succeed(h, 2, metrics={"eval_loss": 0.25})
        wait_for(phase_is(h, "Succeeded"), TIMEOUT)
    assert created.duplicates() == []
    assert sorted(created.names) == ["demo-1-0", "demo-1-1", "demo-2-0", "demo-2-1"]


def test_operator_restarted_while_old_pods_terminate(h, kube, run_emulated_operator):
    created = PodCreations(h)
    h.create_job(manifest())
    with run_emulated_operator():
        bring_up(h)
        # Deletions fail: the failed attempt's pods cannot be removed yet.
        unblock = kube.faults.block(lambda verb, res, name: verb == "delete" and res == "pods")
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 1), 137, reason="OOMKilled")
        wait_for(phase_is(h, "Restarting"), TIMEOUT, what="Restarting")
    unblock()
    with run_emulated_operator():
        bring_up(h, attempt=2)
    assert status(h)["restarts"] == 1
    assert created.duplicates() == []
    assert not pods(h, attempt=1)


@pytest.mark.parametrize("seed", [1, 2])
def test_ten_percent_api_errors_reach_the_same_end_state(h, kube, run_emulated_operator, seed):
    kube.faults.seed = seed
    kube.faults.__post_init__()
    kube.faults.rate = 0.10
    created = PodCreations(h)
    with run_emulated_operator():
        h.create_job(manifest())
        bring_up(h)
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 0), 1)
        bring_up(h, attempt=2)
        succeed(h, 2, metrics={"eval_loss": 0.25})
        st = wait_for(phase_is(h, "Succeeded"), TIMEOUT)
    assert st["restarts"] == 1 and st["attempt"] == 2
    assert st["metrics"] == {"eval_loss": 0.25}
    assert created.duplicates() == []
    assert sum(kube.faults.injected.values()) > 0, "no fault was injected: the test proves nothing"
