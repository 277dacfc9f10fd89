"""The operator watches only what is ftjob's: pods and ConfigMaps by server-side label
selector, so other people's objects never reach it (benchmarks/operator_foreign.py measures
what that saves: docs/benchmarks.md)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from ftjob_api import naming

from tests.controlplane.install import create_namespace, delete_namespace
from tests.integration.operator.helpers import (TIMEOUT, Real, bring_up, manifest, phase_is,
                                                parse_time, settled_audit_events, succeed)
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

FOREIGN = 100  # of each kind: enough that a stream of everything would show in the log


@pytest.fixture
def foreign_ns(cluster):
    """Another team's namespace with pods and 16 KiB ConfigMaps that are not ftjob's, though
    they carry ftjob's job label (a selector on that label alone would take them)."""
    from kubernetes import client

    ns = f"other-{uuid.uuid4().hex[:6]}"
    create_namespace(cluster.plane, ns, restricted=False)
    core = client.CoreV1Api(cluster.session.api_client)
    for i in range(FOREIGN):
        labels = {"app": "web", naming.LABEL_JOB: "demo"}
        core.create_namespaced_pod(ns, {
            "metadata": {"name": f"web-{i}", "labels": labels},
            "spec": {"schedulerName": "nobody",  # stays Pending, untouched
                     "containers": [{"name": "web", "image": "example/web:1"}]}})
        core.create_namespaced_config_map(ns, {
            "metadata": {"name": f"settings-{i}", "labels": labels},
            "data": {"payload": "x" * 16 * 1024}})
    yield ns
    delete_namespace(cluster.plane, ns)


def test_pods_and_config_maps_are_listed_and_watched_by_label_only(cluster, foreign_ns,
                                                                   run_operator):
    h = Real(cluster)
    started = datetime.now(UTC)
    with run_operator():
        h.create_job(manifest())
        bring_up(h)
        succeed(h, 1, metrics={"eval_loss": 0.5})
        wait_for(phase_is(h, "Succeeded"), TIMEOUT, what="Succeeded")
    calls = [e for e in settled_audit_events(h, user=cluster.session.operator_account)
             if (e.get("objectRef") or {}).get("resource") in ("pods", "configmaps")
             and e["verb"] in ("list", "watch")
             and parse_time(e["requestReceivedTimestamp"]) >= started]
    seen = {(e["objectRef"]["resource"], e["verb"]) for e in calls}
    assert {("pods", "list"), ("pods", "watch"), ("configmaps", "list"),
            ("configmaps", "watch")} <= seen, seen
    selectors = {(e["objectRef"]["resource"],
                  tuple(parse_qs(urlsplit(e["requestURI"]).query).get("labelSelector", [])))
                 for e in calls}
    wanted = f"{naming.LABEL_MANAGED_BY}={naming.MANAGER}"
    assert selectors == {("pods", (wanted,)), ("configmaps", (wanted,))}, selectors
