"""The operator killed (SIGKILL) at every point of a plan, then started again: the plan
completes exactly once. No pod created twice, none lost, the restart counted once.

A plan is a status write followed by actions (k8s.Kube.record, then carry_out); FTJOB_FAULT_POINTS (faults.py,
set only by tests) makes the operator kill itself right after one of them. The job's life
here passes through the plans that matter: start (objects, then pods), a rank failing (the
restart on record, then the old pods deleted), the restart (the new attempt's pods) and
success.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from ftjob_api import naming

from tests.integration.operator.helpers import (TIMEOUT, PodCreations, Real, describe,
                                                event_reasons, manifest, operator_process, pods,
                                                status, succeed)
from tests.polling import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

POINTS = [
    ("start", "after-status"),
    ("start", "after-EnsureJobObjects"),
    ("start", "after-CreatePods"),
    ("rank failed, gang restart", "after-status"),
    ("rank failed, gang restart", "after-DeletePods"),
    ("restart", "after-status"),
    ("restart", "after-CreatePods"),
    ("succeeded", "after-status"),
]


def kubelet_step(h: Real) -> dict | None:
    """Play the kubelet one step from what the cluster shows (so a healthy operator started
    after a killed one carries on wherever the job got to): run new pods; in attempt 1 fail
    rank 1 once the job is Running; in attempt 2 succeed. Returns the status once Succeeded."""
    st = status(h)
    if st.get("phase") == "Succeeded":
        return st
    live = {p["metadata"]["name"]: (p.get("status") or {}).get("phase")
            for p in pods(h) if not p["metadata"].get("deletionTimestamp")}
    for name, phase in live.items():
        if phase in (None, "Pending"):
            h.kubelet.run(h.ns, name)
    if st.get("phase") != "Running":
        return None
    if st.get("attempt") == 1 and live.get(naming.pod("demo", 1, 1)) == "Running":
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 1), 1)
    elif st.get("attempt") == 2 and {live.get(naming.pod("demo", 2, r)) for r in (0, 1)} == {
            "Running"}:
        succeed(h, 2, metrics={"eval_loss": 0.25})
    return None


def drive(h: Real, proc: subprocess.Popen, log: Path) -> dict | bool:
    """The job to success (its status) or until the operator dies (True)."""
    return wait_for(lambda: proc.poll() is not None or kubelet_step(h), 3 * TIMEOUT,
                    what="the job to succeed or the operator to die",
                    describe=lambda: describe(h) + log.read_text()[-3000:])


@pytest.mark.parametrize("case,point", POINTS, ids=[f"{c}:{p}" for c, p in POINTS])
def test_operator_killed_at_a_fault_point_completes_the_plan_once(cluster, tmp_path, case,
                                                                  point):
    h = Real(cluster)
    created = PodCreations(h)
    log = tmp_path / "operator.log"
    h.create_job(manifest())
    try:
        with operator_process(cluster, log, wait_healthy=False,
                              FTJOB_FAULT_POINTS=f"{case}:{point}") as armed:
            drive(h, armed, log)
            killed = armed.poll() == -signal.SIGKILL
        assert killed, f"the operator never reached {case}:{point}\n{log.read_text()[-3000:]}"
        assert f"fault point {case}:{point} reached" in log.read_text()
        with operator_process(cluster, log) as healthy:
            st = drive(h, healthy, log)
            assert healthy.poll() is None, log.read_text()[-3000:]
    finally:
        created.stop()
    assert st["restarts"] == 1 and st["attempt"] == 2, st
    assert st["metrics"] == {"eval_loss": 0.25}
    assert created.duplicates() == []
    assert sorted(created.names) == ["demo-1-0", "demo-1-1", "demo-2-0", "demo-2-1"]
    # Every transition explained once: the plan's Events are written right after its
    # status, before its actions (a kill between those two writes is the one gap left).
    wanted = sorted(["Started", "Running", "GangRestart", "Restarted", "Running", "Succeeded"])
    wait_for(lambda: sorted(event_reasons(h)) == wanted, TIMEOUT,
             what=f"the events {wanted}", describe=lambda: str(sorted(event_reasons(h))))
