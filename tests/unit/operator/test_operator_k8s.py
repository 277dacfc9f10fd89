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
                  else kube.raw if name in k8s.RawRequests.PATHS or hasattr(kube.raw, name)
                  else kube.core)
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
    kube = _kube(delete_pod=_api_error(404))
    assert await kube.delete_pod("ns", "demo-1-0") is None  # already gone
    kube = _kube(delete_pod=_api_error(409))
    with pytest.raises(k8s.TransientApiError, match="delete Pod ns/demo-1-0: HTTP 409"):
        await kube.delete_pod("ns", "demo-1-0")
    kube = _kube(delete_namespaced_custom_object=urllib3.exceptions.ProtocolError("reset"))
    with pytest.raises(k8s.TransientApiError, match="delete FineTuneJob ns/demo: ProtocolError"):
        await kube.delete_job("ns", "demo")
    kube = _kube(patch_job_status={"status": {"phase": "Running"}})
    assert await kube.patch_status("ns", "demo", {"phase": "Running"}) == {
        "status": {"phase": "Running"}}
    kube = _kube(patch_job_status=_api_error(404))
    assert await kube.patch_status("ns", "demo", {}) is None  # the job is gone
    kube = _kube(patch_job_status=_api_error(500))
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


@pytest.fixture
def api_server():
    """A local HTTP server standing in for the API server: it records each request (method,
    path, headers, body) and answers with the next (status, JSON) of `answers`."""
    import http.server
    import threading

    from kubernetes import client

    seen: list[dict] = []
    answers: list[tuple[int, dict]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            seen.append({"method": self.command, "path": self.path,
                         "headers": {k.lower(): v for k, v in self.headers.items()}, "body": self.rfile.read(length)})
            status, body = answers.pop(0)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_PATCH = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configuration = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    configuration.api_key = {"authorization": "s3cret"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    try:
        yield client.ApiClient(configuration), seen, answers
    finally:
        server.shutdown()


def test_raw_requests_send_the_body_as_it_is_with_the_clients_auth(api_server):
    api_client, seen, answers = api_server
    raw = k8s.RawRequests(api_client)
    answers += [(201, {"kind": "Pod"}), (200, {"status": {"phase": "Running"}}),
                (200, {"kind": "Status"})]
    answer = raw.create_namespaced_pod("ns", POD, _request_timeout=(5, 30))
    assert json.loads(answer.data) == {"kind": "Pod"}
    answer.release_conn()
    patched = raw.patch_job_status("demo", "ns", {"status": {"phase": "Running"}})
    assert json.loads(patched.data) == {"status": {"phase": "Running"}}
    raw.delete_pod("demo-1-0", "ns").release_conn()
    create, patch, delete = seen
    assert (create["method"], create["path"]) == ("POST", "/api/v1/namespaces/ns/pods")
    assert json.loads(create["body"]) == POD
    assert create["headers"]["authorization"] == "Bearer s3cret"
    assert create["headers"]["content-type"] == "application/json"
    assert (patch["method"], patch["path"]) == (
        "PATCH", "/apis/finetune.dev/v1alpha1/namespaces/ns/finetunejobs/demo/status")
    assert patch["headers"]["content-type"] == "application/merge-patch+json"
    assert json.loads(patch["body"]) == {"status": {"phase": "Running"}}
    assert (delete["method"], delete["path"]) == ("DELETE", "/api/v1/namespaces/ns/pods/demo-1-0")
    assert json.loads(delete["body"]) == {"propagationPolicy": "Background"}


def test_raw_requests_raise_like_the_client(api_server):
    api_client, _, answers = api_server
    raw = k8s.RawRequests(api_client)
    answers.append((409, {"kind": "Status", "message": 'rolebindings "x" already exists'}))
    with pytest.raises(ApiException) as refused:
        raw.create_namespaced_role_binding("ns", {})
    assert refused.value.status == 409 and "already exists" in k8s._message(refused.value)
    with pytest.raises(AttributeError):
        raw.create_namespaced_secret  # noqa: B018 - never created


def test_raw_requests_reuse_the_token_until_it_is_refused(api_server):
    api_client, seen, answers = api_server
    raw = k8s.RawRequests(api_client)
    answers += [(201, {}), (401, {"kind": "Status", "message": "Unauthorized"}), (201, {})]
    raw.create_namespaced_event("ns", {}).release_conn()
    api_client.configuration.api_key = {"authorization": "rotated"}
    with pytest.raises(ApiException) as refused:  # within the minute: the token it had
        raw.create_namespaced_event("ns", {})
    assert refused.value.status == 401
    raw.create_namespaced_event("ns", {}).release_conn()  # after a 401: read again
    assert [r["headers"]["authorization"] for r in seen] == [
        "Bearer s3cret", "Bearer s3cret", "Bearer rotated"]


def test_json_past_what_orjson_takes_falls_back_to_json():
    assert k8s.loads(b'{"a": 1}') == {"a": 1}
    assert json.loads(k8s.dumps({"a": 10**30})) == {"a": 10**30}
    assert json.loads(k8s.dumps({1: "x"})) == {"1": "x"}
