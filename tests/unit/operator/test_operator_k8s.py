"""k8s.py error classes, the actuator carrying out a plan's manifests, and the daemon's "the
watches show my last plan" check."""

from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from ftjob_operator import k8s
from ftjob_operator.job_loops import _reflected
from ftjob_operator.observe import PodView, started_spec_view
from ftjob_operator.plan import (CreatePods, DeleteJob, DeletePods, EnsureJobObjects, JobRef,
                                 Plan, RestoreConfigMap)
from ftjob_operator.settings import Settings


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


class _Response:
    def __init__(self, body: dict) -> None:
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


def _answers(outcome):
    """A client method that returns `outcome` as JSON, or raises it."""
    def call(*args, **kwargs):
        if isinstance(outcome, Exception):
            raise outcome
        return _Response(outcome)
    return call


_MADE: list[k8s.Kube] = []


@pytest.fixture(autouse=True)
def _close_kubes():
    yield
    while _MADE:
        _MADE.pop().close()


def _kube(**methods) -> k8s.Kube:
    from kubernetes import client

    kube = k8s.Kube(client.ApiClient(), Settings(api_workers=1))
    _MADE.append(kube)
    for name, outcome in methods.items():
        target = (kube.custom if "custom_object" in name
                  else kube.raw if name in k8s.RawCreates.PATHS else kube.core)
        setattr(target, name, _answers(outcome))
    return kube


POD = {"kind": "Pod", "metadata": {"name": "demo-1-0", "namespace": "ns"}}


def _api_error(status: int) -> ApiException:
    return ApiException(status=status, reason="x")


async def test_every_call_tolerates_only_its_own_status_and_names_what_failed():
    kube = _kube(create_namespaced_pod=POD)
    assert await kube.create(POD) is True
    kube = _kube(create_namespaced_pod=_api_error(409))
    assert await kube.create(POD) is False  # already there
    kube = _kube(create_namespaced_pod=_api_error(403))
    with pytest.raises(k8s.RejectedError, match="create Pod ns/demo-1-0: HTTP 403"):
        await kube.create(POD)
    kube = _kube(delete_namespaced_pod=_api_error(404))
    assert await kube.delete_pod("ns", "demo-1-0") is None  # already gone
    kube = _kube(delete_namespaced_pod=_api_error(409))
    with pytest.raises(k8s.TransientApiError, match="delete Pod ns/demo-1-0: HTTP 409"):
        await kube.delete_pod("ns", "demo-1-0")
    kube = _kube(delete_namespaced_custom_object=urllib3.exceptions.ProtocolError("reset"))
    with pytest.raises(k8s.TransientApiError, match="delete FineTuneJob ns/demo: ProtocolError"):
        await kube.delete_job("ns", "demo")
    kube = _kube(patch_namespaced_custom_object_status={"status": {"phase": "Running"}})
    assert await kube.patch_status("ns", "demo", {"phase": "Running"}) == {
        "status": {"phase": "Running"}}
    kube = _kube(patch_namespaced_custom_object_status=_api_error(404))
    assert await kube.patch_status("ns", "demo", {}) is None  # the job is gone
    kube = _kube(patch_namespaced_custom_object_status=_api_error(500))
    with pytest.raises(k8s.TransientApiError, match="patch FineTuneJob ns/demo status"):
        await kube.patch_status("ns", "demo", {})


OWNED_POD = {**POD, "metadata": {**POD["metadata"], "ownerReferences": [
    {"kind": "FineTuneJob", "name": "demo", "uid": "u1", "controller": True}]}}


def _owned_by(uid: str | None) -> dict:
    refs = [{"kind": "FineTuneJob", "name": "demo", "uid": uid, "controller": True}] if uid \
        else []
    return {**POD, "metadata": {**POD["metadata"], "ownerReferences": refs}}


async def test_already_exists_is_success_only_for_the_jobs_own_object():
    kube = _kube(create_namespaced_pod=_api_error(409), read_namespaced_pod=_owned_by("u1"))
    assert await kube.create(OWNED_POD) is False  # an earlier try made it
    kube = _kube(create_namespaced_pod=_api_error(409), read_namespaced_pod=_owned_by("u0"))
    with pytest.raises(k8s.OwnedByOtherError, match=r"Pod demo-1-0 already exists and is owned "
                                                    r"by FineTuneJob demo \(uid u0\)"):
        await kube.create(OWNED_POD)
    kube = _kube(create_namespaced_pod=_api_error(409), read_namespaced_pod=_owned_by(None))
    with pytest.raises(k8s.OwnedByOtherError, match="owned by no owner"):
        await kube.create(OWNED_POD)
    kube = _kube(create_namespaced_pod=_api_error(409), read_namespaced_pod=_api_error(404))
    with pytest.raises(k8s.TransientApiError, match="it existed, then was gone"):
        await kube.create(OWNED_POD)


async def test_a_config_map_is_restored_with_a_patch_of_its_whole_data():
    calls = []
    kube = _kube()

    def patch(name, namespace, body, **kwargs):
        calls.append((name, namespace, body, kwargs.get("_content_type")))
        return _Response({})

    kube.core.patch_namespaced_config_map = patch
    manifest = {"kind": "ConfigMap", "metadata": {"name": "demo-job", "namespace": "ns"},
                "data": {"job.json": "{}"}}
    await kube.carry_out(Plan("started spec restored", actions=[RestoreConfigMap(manifest)]),
                         JobRef("demo", "ns", "u1"))
    assert calls == [("demo-job", "ns", [{"op": "add", "path": "/data",
                                          "value": {"job.json": "{}"}}],
                      "application/json-patch+json")]


def _manifest(kind: str, name: str) -> dict:
    return {"kind": kind, "metadata": {"name": name, "namespace": "ns"}, "spec": {"x": name}}


async def test_apply_writes_the_status_then_creates_and_deletes_what_the_plan_carries():
    done: list[tuple] = []
    kube = _kube()

    async def create(manifest):
        done.append(("create", manifest["kind"], manifest["metadata"]["name"]))
        return True

    async def patch_status(ns, name, status):
        done.append(("status", ns, name, status))
        return {"status": status}

    async def delete_pod(ns, name):
        done.append(("delete", ns, name))

    async def delete_job(ns, name):
        done.append(("delete job", ns, name))

    kube.create, kube.patch_status = create, patch_status
    kube.delete_pod, kube.delete_job = delete_pod, delete_job
    objects = (_manifest("ServiceAccount", "demo"), _manifest("ConfigMap", "demo-job"))
    pods = (_manifest("Pod", "demo-2-0"), _manifest("Pod", "demo-2-1"))
    plan = Plan("restart", actions=[DeletePods(("demo-1-0",)), EnsureJobObjects(objects),
                                    CreatePods(2, pods), DeleteJob()],
                status={"attempt": 2})
    recorded = await kube.record(plan, JobRef("demo", "ns", "u1"))
    assert kube.acts_after(plan, recorded)
    await kube.carry_out(plan, JobRef("demo", "ns", "u1"))
    assert done == [("status", "ns", "demo", {"attempt": 2}), ("delete", "ns", "demo-1-0"),
                    ("create", "ServiceAccount", "demo"), ("create", "ConfigMap", "demo-job"),
                    ("create", "Pod", "demo-2-0"), ("create", "Pod", "demo-2-1"),
                    ("delete job", "ns", "demo")]

    async def gone(ns, name, status):
        return None

    done.clear()
    kube.patch_status = gone
    recorded = await kube.record(plan, JobRef("demo", "ns", "u1"))
    assert recorded is None and not kube.acts_after(plan, recorded)  # the job is gone
    assert done == []


def _pod(name: str, deleting: bool = False) -> PodView:
    attempt, rank = (int(x) for x in name.split("-")[1:])
    return PodView(name=name, job="demo", attempt=attempt, rank=rank, deleting=deleting)


KEY = ("ns", "demo")


def test_reflected_waits_for_status_pods_and_config_map():
    pods = (_manifest("Pod", "demo-1-0"), _manifest("Pod", "demo-1-1"))
    plan = Plan("start", actions=[EnsureJobObjects((_manifest("ConfigMap", "demo-job"),)),
                                  CreatePods(1, pods)],
                status={"phase": "Pending", "attempt": 1})
    body = {"status": {"phase": "Pending", "attempt": 1, "progress": {"globalStep": 3}}}
    pods = {KEY: [_pod("demo-1-0"), _pod("demo-1-1")]}
    config_map = started_spec_view({"data": {}})
    assert _reflected(plan, KEY, body, pods, {KEY: [config_map]})
    assert not _reflected(plan, KEY, {"status": {"phase": "Pending"}}, pods, {KEY: [config_map]})
    assert not _reflected(plan, KEY, body, {KEY: [_pod("demo-1-0")]}, {KEY: [config_map]})
    assert not _reflected(plan, KEY, body, pods, {})


def test_reflected_waits_for_the_restored_config_map():
    manifest = {**_manifest("ConfigMap", "demo-job"), "data": {"job.json": "{}"}}
    plan = Plan("started spec restored", actions=[RestoreConfigMap(manifest)])
    changed = started_spec_view({"data": {"job.json": "{\"x\": 1}"}})
    assert not _reflected(plan, KEY, {}, {}, {KEY: [changed]})
    assert _reflected(plan, KEY, {}, {}, {KEY: [started_spec_view({"data": {"job.json": "{}"}})]})


def test_reflected_accepts_deleting_or_gone_pods():
    plan = Plan("restart", actions=[DeletePods(("demo-1-0", "demo-1-1"))])
    assert _reflected(plan, KEY, {}, {KEY: [_pod("demo-1-0", deleting=True)]}, {})
    assert not _reflected(plan, KEY, {}, {KEY: [_pod("demo-1-1")]}, {})


class _StubApiClient:
    """param_serialize / call_api as the kubernetes client has them, answering `status`."""

    def __init__(self, status: int):
        self.status, self.serialized = status, []

    def param_serialize(self, **kwargs):
        self.serialized.append(kwargs)
        return ("POST", "https://api" + kwargs["resource_path"], kwargs["header_params"],
                kwargs["body"], None)

    def call_api(self, method, url, headers, body, post, _request_timeout=None):
        stub = self

        class Answer:
            status = stub.status
            data = b'{"kind": "Status", "message": "pods \\"demo-1-0\\" already exists"}'
            reason = "Conflict"
            headers: dict = {}
            response = _Response({"kind": "Pod"})

            def read(self):
                return self.data

            def getheaders(self):
                return {}

        return Answer()


def test_raw_creates_post_the_manifest_as_it_is_and_raise_like_the_client():
    api_client = _StubApiClient(201)
    answer = k8s.RawCreates(api_client).create_namespaced_pod("ns", POD)
    sent = api_client.serialized[0]
    assert sent["resource_path"] == "/api/v1/namespaces/ns/pods" and sent["body"] is POD
    assert json.loads(answer.data) == {"kind": "Pod"}
    with pytest.raises(ApiException) as refused:
        k8s.RawCreates(_StubApiClient(409)).create_namespaced_role_binding("ns", {})
    assert refused.value.status == 409
    with pytest.raises(AttributeError):
        k8s.RawCreates(api_client).create_namespaced_secret  # noqa: B018 - never created
