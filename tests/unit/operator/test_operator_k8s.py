"""k8s.py error classes and the daemon's "the watches show my last plan" check."""

from __future__ import annotations

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from ftjob_operator import k8s
from ftjob_operator.handlers import _reflected
from ftjob_operator.observe import PodView
from ftjob_operator.reconcile import CreatePods, DeletePods, EnsureJobObjects, Plan


@pytest.mark.parametrize("status,cls", [
    (409, k8s.TransientApiError), (429, k8s.TransientApiError), (500, k8s.TransientApiError),
    (504, k8s.TransientApiError), (403, k8s.RejectedError), (422, k8s.RejectedError),
])
def test_api_errors_are_classified(status, cls):
    exc = ApiException(status=status, reason="x")
    exc.body = '{"message": "pods \\"a\\" is forbidden: exceeded quota"}'
    classified = k8s._classify(exc, "create Pod ns/a")
    assert isinstance(classified, cls)
    assert str(classified).startswith(f"create Pod ns/a: HTTP {status}")
    if cls is k8s.RejectedError:
        assert "exceeded quota" in str(classified)


def test_network_errors_are_transient():
    classified = k8s._classify(urllib3.exceptions.ReadTimeoutError(None, "/", "timed out"), "x")
    assert isinstance(classified, k8s.TransientApiError)


def _pod(name: str, deleting: bool = False) -> PodView:
    attempt, rank = (int(x) for x in name.split("-")[1:])
    return PodView(name=name, job="demo", attempt=attempt, rank=rank, deleting=deleting)


KEY = ("ns", "demo")


def test_reflected_waits_for_status_pods_and_config_map():
    plan = Plan("start", actions=[EnsureJobObjects({}), CreatePods(1, (0, 1), {})],
                status={"phase": "Pending", "attempt": 1})
    body = {"status": {"phase": "Pending", "attempt": 1, "progress": {"globalStep": 3}}}
    pods = {KEY: [_pod("demo-1-0"), _pod("demo-1-1")]}
    assert _reflected(plan, KEY, body, pods, {KEY: [{"data": {}}]})
    assert not _reflected(plan, KEY, {"status": {"phase": "Pending"}}, pods, {KEY: [{}]})
    assert not _reflected(plan, KEY, body, {KEY: [_pod("demo-1-0")]}, {KEY: [{}]})
    assert not _reflected(plan, KEY, body, pods, {})


def test_reflected_accepts_deleting_or_gone_pods():
    plan = Plan("restart", actions=[DeletePods(("demo-1-0", "demo-1-1"))])
    assert _reflected(plan, KEY, {}, {KEY: [_pod("demo-1-0", deleting=True)]}, {})
    assert not _reflected(plan, KEY, {}, {KEY: [_pod("demo-1-1")]}, {})
