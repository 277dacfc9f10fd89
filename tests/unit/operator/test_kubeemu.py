"""The emulated Kubernetes API behaves like the real one where the operator depends on it.

Driven through the official kubernetes client, as the operator (under kopf) and the
benchmarks use it.
"""

from __future__ import annotations

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from ftjob_api.crd import build_crd
from tests.kubeemu import Emulator, Faults

NS = "team-a"


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    with Emulator(crds=[build_crd()]) as e:
        path = e.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", namespace=NS)
        e.kubeconfig_path = str(path)
        yield e


@pytest.fixture
def api(emu):
    return client.ApiClient(config.new_client_from_config(emu.kubeconfig_path).configuration)


def _job(name: str) -> dict:
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name}, "spec": {"task": "causal-lm"},
            "status": {"phase": "Sneaky"}}


def _cm(name: str, labels: dict | None = None, owner: dict | None = None) -> dict:
    meta: dict = {"name": name, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
                                    "name": owner["metadata"]["name"],
                                    "uid": owner["metadata"]["uid"]}]
    return {"metadata": meta, "data": {"k": "v"}}


def test_create_assigns_identity_and_answers_201(api):
    custom = client.CustomObjectsApi(api)
    created = custom.create_namespaced_custom_object("finetune.dev", "v1alpha1", NS,
                                                     "finetunejobs", _job("identity"))
    meta = created["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert meta["generation"] == 1 and meta["namespace"] == NS
    assert "status" not in created  # status is only writable through /status
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object("finetune.dev", "v1alpha1", NS, "finetunejobs",
                                               _job("identity"))
    assert err.value.status == 409


def test_status_subresource_and_generation(api):
    custom = client.CustomObjectsApi(api)
    args = ("finetune.dev", "v1alpha1", NS, "finetunejobs", "gen")
    custom.create_namespaced_custom_object(*args[:4], _job("gen"))
    out = custom.patch_namespaced_custom_object_status(*args, {"status": {"phase": "Running"},
                                                               "spec": {"task": "seq2seq"}})
    assert out["status"] == {"phase": "Running"} and out["spec"]["task"] == "causal-lm"
    assert out["metadata"]["generation"] == 1
    out = custom.patch_namespaced_custom_object(*args, {"spec": {"task": "seq2seq"},
                                                        "status": {"phase": "Bad"}})
    assert out["status"] == {"phase": "Running"} and out["metadata"]["generation"] == 2
    out = custom.patch_namespaced_custom_object(*args, {"metadata": {"labels": {"a": "b"}}})
    assert out["metadata"]["generation"] == 2  # metadata changes do not bump generation


def test_failed_json_patch_test_answers_422(api):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, _cm("patchme"))
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_config_map("patchme", NS, [
            {"op": "test", "path": "/data/k", "value": "other"},
            {"op": "replace", "path": "/data/k", "value": "new"}])
    assert err.value.status == 422


def test_label_and_field_selectors(api):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(NS, _cm("sel-a", {"tier": "a", "x": "1"}))
    core.create_namespaced_config_map(NS, _cm("sel-b", {"tier": "b"}))
    names = lambda **kw: sorted(i.metadata.name for i in core.list_namespaced_config_map(NS, **kw).items
                                if i.metadata.name.startswith("sel-"))
    assert names(label_selector="tier=a") == ["sel-a"]
    assert names(label_selector="tier in (a,b),!x") == ["sel-b"]
    assert names(label_selector="tier!=a") == ["sel-b"]
    assert names(field_selector="metadata.name=sel-b") == ["sel-b"]


def test_owner_reference_garbage_collection_and_orphaning(api):
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    for name, policy in (("gc-bg", "Background"), ("gc-fg", "Foreground"), ("gc-or", "Orphan")):
        owner = custom.create_namespaced_custom_object("finetune.dev", "v1alpha1", NS,
                                                       "finetunejobs", _job(name))
        core.create_namespaced_config_map(NS, _cm(f"{name}-child", owner=owner))
        custom.delete_namespaced_custom_object("finetune.dev", "v1alpha1", NS, "finetunejobs",
                                               name, propagation_policy=policy)
        remaining = [i.metadata.name for i in core.list_namespaced_config_map(NS).items]
        assert (f"{name}-child" in remaining) == (policy == "Orphan"), policy


def test_finalizers_hold_deletion_until_removed(api):
    core = client.CoreV1Api(api)
    body = _cm("final")
    body["metadata"]["finalizers"] = ["example.com/keep"]
    core.create_namespaced_config_map(NS, body)
    core.delete_namespaced_config_map("final", NS)
    held = core.read_namespaced_config_map("final", NS)
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("final", NS, {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("final", NS)
    assert err.value.status == 404


def test_namespaces_are_separate(api):
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("ns-one", _cm("same"))
    core.create_namespaced_config_map("ns-two", _cm("same"))  # no conflict across namespaces
    assert [i.metadata.name for i in core.list_namespaced_config_map("ns-one").items] == ["same"]


def test_watch_resumes_from_resource_version(api):
    core = client.CoreV1Api(api)
    listing = core.list_namespaced_config_map(NS)
    core.create_namespaced_config_map(NS, _cm("after-list", {"w": "1"}))
    stream = watch.Watch().stream(core.list_namespaced_config_map, NS, label_selector="w=1",
                                  resource_version=listing.metadata.resource_version,
                                  timeout_seconds=2)
    events = [(e["type"], e["object"].metadata.name) for e in stream]
    assert events == [("ADDED", "after-list")]


def test_faults_are_seeded_and_counted(emu, api):
    core = client.CoreV1Api(api)
    emu.handler.faults = Faults(rate=0.5, seed=7, kinds=("server_error",))
    try:
        statuses = []
        for _ in range(20):
            try:
                core.list_namespaced_config_map(NS)
                statuses.append(200)
            except ApiException as exc:
                statuses.append(exc.status)
    finally:
        injected = emu.handler.faults.injected["server_error"]
        emu.handler.faults = Faults()
    assert set(statuses) == {200, 500} and statuses.count(500) == injected


def test_timeout_fault_applies_the_write_then_answers_504(emu, api):
    core = client.CoreV1Api(api)
    emu.handler.faults = Faults(rate=1.0, kinds=("timeout",), delay=0.0)
    try:
        with pytest.raises(ApiException) as err:
            core.create_namespaced_config_map(NS, _cm("ambiguous"))
    finally:
        emu.handler.faults = Faults()
    assert err.value.status == 504
    assert core.read_namespaced_config_map("ambiguous", NS).metadata.name == "ambiguous"


def test_requests_are_recorded_for_rbac(emu, api):
    client.CoreV1Api(api).list_namespaced_pod(NS, label_selector="x=y")
    call = emu.calls[-1]
    assert (call.verb, call.group, call.resource, call.namespace) == ("list", "", "pods", NS)


def test_kubelet_helpers_drive_pod_status(emu):
    pods = emu.store.type_of("", "pods")
    emu.store.create(pods, NS, {"metadata": {"name": "p"}, "spec": {"containers": []}})
    assert emu.kubelet.run(NS, "p")["status"]["phase"] == "Running"
    emu.kubelet.terminate(NS, "p", 30, message='{"status": "failed"}')
    status = emu.store.get(pods, NS, "p")["status"]
    assert status["phase"] == "Failed"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 30 and terminated["message"] == '{"status": "failed"}'
