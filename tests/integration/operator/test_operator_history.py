"""The attempt history and goodput in status, and that they (with the restart budget) survive
an operator restart and a spec edit: they live in the job's status, not in the operator."""

from __future__ import annotations

import pytest
from ftjob_api import naming

from tests.integration.operator.helpers import (TIMEOUT, Real, bring_up, describe, manifest,
                                                phase_is, status, succeed)
from tests.polling import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def h(cluster) -> Real:
    return Real(cluster)


def test_history_and_budget_survive_an_operator_restart_and_a_spec_edit(h, run_operator):
    with run_operator():
        h.create_job(manifest())
        bring_up(h)
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 1), 137, reason="OOMKilled")
        first = wait_for(lambda: (s := status(h)).get("attempt") == 2 and s, TIMEOUT,
                         what="attempt 2", describe=lambda: describe(h))
    record = first["attempts"][0]
    assert record["attempt"] == 1 and record["reason"] == "Failed", first["attempts"]
    assert record["message"] == ("rank 1 (pod demo-1-1) failed: OOMKilled, exit code 137: "
                                 "container out of memory on node ftjob-test-node")
    assert record["endTime"] >= record["startTime"]
    assert first["attempts"][1]["attempt"] == 2 and first["restarts"] == 1

    # A new operator process, and an edit of a field that takes effect while running.
    h.patch_spec({"restartPolicy": {"maxRestarts": 1, "backoffSeconds": 0}})
    with run_operator():
        bring_up(h, attempt=2)
        h.kubelet.terminate(h.ns, naming.pod("demo", 2, 0), 1)
        # The budget (1, already used before the restart) is spent: the job fails.
        final = wait_for(phase_is(h, "Failed"), TIMEOUT, what="Failed",
                         describe=lambda: describe(h))
    assert final["message"].startswith("restart budget exhausted (1 restart(s))")
    assert [a["attempt"] for a in final["attempts"]] == [1, 2]
    assert final["attempts"][0] == record  # unchanged by the restart
    assert final["attempts"][1]["reason"] == "Failed"
    assert final["goodput"]["wallSeconds"] > 0 and final["goodput"]["stepsLost"] == 0


def test_success_is_the_last_record(h, run_operator):
    with run_operator():
        h.create_job(manifest())
        bring_up(h)
        succeed(h, 1)
        final = wait_for(phase_is(h, "Succeeded"), TIMEOUT, what="Succeeded",
                         describe=lambda: describe(h))
    record, = final["attempts"]
    assert record["reason"] == "Succeeded" and record["message"].startswith("training finished")
    assert final["goodput"]["attemptsFolded"] == 0
