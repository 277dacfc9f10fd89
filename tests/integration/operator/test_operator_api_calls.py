"""The API calls the operator makes, recorded for the chart's RBAC test.

One scenario walks every path that talks to the API (create, restart, suspend/resume,
success, TTL deletion). The union of its calls must equal tests/data/operator-api-calls.json;
when the operator starts making a new call, this test fails until the file is regenerated
with `FTJOB_UPDATE_API_CALLS=1` (and the chart's RBAC then checks the new call).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ftjob_operator import naming
from tests.conftest import wait_for
from tests.integration.operator.helpers import (NS, create_job, get_job, manifest, patch_spec,
                                                phase_is, pods, run_all, status, summary)

RECORD = Path(__file__).resolve().parents[2] / "data" / "operator-api-calls.json"


def _running(kube, attempt: int):
    wait_for(lambda: len(pods(kube, attempt=attempt)) == 2, what=f"attempt {attempt} pods")
    run_all(kube, attempt=attempt)
    wait_for(lambda: status(kube).get("phase") == "Running"
             and status(kube).get("attempt") == attempt, what=f"attempt {attempt} running")


def _records(calls) -> list[dict]:
    unique = {(c.verb, c.group, c.resource, c.subresource, c.namespace) for c in calls}
    return [{"verb": v, "group": g, "resource": r, "subresource": s, "namespace": n}
            for v, g, r, s, n in sorted(unique, key=lambda t: tuple(x or "" for x in t))]


def test_recorded_api_calls_are_current(kube, run_operator):
    with run_operator():
        create_job(kube, manifest(ttlSecondsAfterFinished=0))
        _running(kube, 1)
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 1), 1)
        _running(kube, 2)
        patch_spec(kube, {"suspend": True})
        wait_for(phase_is(kube, "Suspended"))
        wait_for(lambda: not pods(kube))
        patch_spec(kube, {"suspend": False})
        _running(kube, 3)
        kube.kubelet.terminate(NS, naming.pod("demo", 3, 1), 0)
        kube.kubelet.terminate(NS, naming.pod("demo", 3, 0), 0,
                               message=summary(status="succeeded", globalStep=1, metrics={}))
        wait_for(lambda: get_job(kube) is None, what="job deleted after its TTL")
    records = _records(kube.calls)
    document = {
        "description": "Every Kubernetes API call the operator made in its integration tests "
                       "(tests/integration/operator/test_operator_api_calls.py). Regenerate with "
                       "FTJOB_UPDATE_API_CALLS=1; tests/unit/chart/test_chart_rbac.py checks "
                       "the chart's RBAC allows each.",
        "calls": records,
    }
    text = json.dumps(document, indent=2) + "\n"
    if os.environ.get("FTJOB_UPDATE_API_CALLS") == "1":
        RECORD.write_text(text)
    assert RECORD.exists(), f"{RECORD} is missing: run this test with FTJOB_UPDATE_API_CALLS=1"
    recorded = json.loads(RECORD.read_text())["calls"]
    assert recorded == records, (
        f"{RECORD} is stale: the operator's calls changed. Rerun with FTJOB_UPDATE_API_CALLS=1 "
        "and check docs/rbac.md and the chart allow the new calls.")
