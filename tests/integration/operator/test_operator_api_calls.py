"""The API calls the operator makes, as the real API server's audit log records them, for the
chart's RBAC test.

The operator runs as the chart's ServiceAccount in the chart's default mode (all namespaces,
one ClusterRole), so the API server itself refuses any call the chart does not allow: no
request of this scenario may be answered 403. One scenario walks every path that talks to
the API (create, restart, suspend/resume, success, TTL deletion). The union of its calls
(the test's namespace written as `team-a`) must equal tests/data/operator-api-calls.json;
when the operator starts making a new call, this test fails until the file is regenerated
with `FTJOB_UPDATE_API_CALLS=1` (and tests/unit/chart/test_chart_rbac.py then checks the
chart's RBAC against the new call for every chart mode).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ftjob_api import naming

from tests.integration.operator.helpers import (TIMEOUT, Real, bring_up, describe, get_job,
                                                manifest, parse_time, phase_is, pods,
                                                settled_audit_events, succeed)
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

RECORD = Path(__file__).resolve().parents[2] / "data" / "operator-api-calls.json"
RECORDED_NAMESPACE = "team-a"


def _records(events: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    unique = set()
    for event in events:
        ref = event["objectRef"]
        ns = ref.get("namespace") or None
        unique.add((event["verb"], ref.get("apiGroup") or "", ref["resource"],
                    ref.get("subresource") or None,
                    RECORDED_NAMESPACE if ns == namespace else ns))
    return [{"verb": v, "group": g, "resource": r, "subresource": s, "namespace": n}
            for v, g, r, s, n in sorted(unique, key=lambda t: tuple(x or "" for x in t))]


def test_recorded_api_calls_are_current(cluster, run_operator):
    h = Real(cluster)
    started = datetime.now(UTC)
    with run_operator():
        h.create_job(manifest(ttlSecondsAfterFinished=0))
        bring_up(h, 1)
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 1), 1)
        bring_up(h, 2)
        h.patch_spec({"suspend": True})
        wait_for(phase_is(h, "Suspended"), TIMEOUT, what="Suspended")
        wait_for(lambda: not pods(h), TIMEOUT, what="pods deleted", describe=lambda: describe(h))
        h.patch_spec({"suspend": False})
        bring_up(h, 3)
        succeed(h, 3, globalStep=1)
        wait_for(lambda: get_job(h) is None, TIMEOUT, what="job deleted after its TTL")
    # The server logs a request after answering it: wait for the log to catch up.
    events = [e for e in settled_audit_events(h, user=cluster.session.operator_account)
              if e.get("objectRef")  # not discovery (/api, /apis: non-resource URLs)
              and parse_time(e["requestReceivedTimestamp"]) >= started
              and (e["objectRef"].get("namespace") or cluster.ns) == cluster.ns]
    assert events, "no request by the operator's ServiceAccount in the audit log"
    refused = sorted({f"{e['verb']} {e['objectRef']}" for e in events
                      if (e.get("responseStatus") or {}).get("code") == 403})
    assert refused == [], "the API server refused the operator (chart RBAC):\n" + "\n".join(
        refused)
    records = _records(events, cluster.ns)
    document = {
        "description": "Every Kubernetes API call the operator made in its integration tests "
                       "(tests/integration/operator/test_operator_api_calls.py), from the API "
                       "server's audit log. Regenerate with FTJOB_UPDATE_API_CALLS=1; "
                       "tests/unit/chart/test_chart_rbac.py checks the chart's RBAC allows each.",
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
