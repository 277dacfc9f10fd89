"""watches.py without a cluster: the index (list, events, relist) and one stream's list/watch
loop against a scripted API (410 Gone relists, Retry-After is waited, bookmarks move the
version, a broken stream resumes from the last version)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from ftjob_api import naming
from ftjob_operator import observe, watches
from ftjob_operator.observe import PodView
from kubernetes.client.exceptions import ApiException


def pod(name: str, job: str = "demo", ns: str = "a", phase: str = "Pending",
        rv: str = "1") -> dict[str, Any]:
    attempt, rank = name.rsplit("-", 2)[-2:]
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                         "labels": {naming.LABEL_MANAGED_BY: naming.MANAGER,
                                    naming.LABEL_JOB: job, naming.LABEL_ATTEMPT: attempt,
                                    naming.LABEL_RANK: rank}},
            "status": {"phase": phase}}


def names(index: watches.Index, key: tuple[str, str]) -> list[str]:
    return sorted(v.name for v in index.get(key, ()))


# --------------------------------------------------------------------------- the index


def event(index: watches.Index, event_type: str, body: dict[str, Any]) -> set:
    """A watch event as the stream files it: the entry made (on its thread), then put."""
    return index.put(*index.entry(event_type, body))


def test_index_groups_views_by_job_and_reports_changed_keys():
    index = watches.Index(watches.pod_entry)
    assert index.replace([pod("demo-1-0"), pod("demo-1-1"), pod("other-1-0", "other")]) == {
        ("a", "demo"), ("a", "other")}
    assert names(index, ("a", "demo")) == ["demo-1-0", "demo-1-1"]
    assert all(isinstance(v, PodView) for v in index[("a", "demo")])
    assert event(index, "MODIFIED", pod("demo-1-0", phase="Running", rv="2")) == {("a", "demo")}
    assert {v.name: v.phase for v in index[("a", "demo")]}["demo-1-0"] == "Running"
    assert event(index, "DELETED", pod("other-1-0", "other")) == {("a", "other")}
    assert ("a", "other") not in index and index.get(("a", "other"), ()) == ()


def test_an_event_that_changes_nothing_the_view_holds_wakes_nobody():
    index = watches.Index(watches.pod_entry)
    index.replace([pod("demo-1-0")])
    # A new resourceVersion with the same phase: the PodView is equal, no key changed.
    assert event(index, "MODIFIED", pod("demo-1-0", rv="7")) == set()


def test_relist_drops_what_vanished_during_a_gap_and_only_in_its_namespace():
    index = watches.Index(watches.pod_entry)
    index.replace([pod("demo-1-0", ns="a"), pod("demo-1-1", ns="a")], "a")
    index.replace([pod("demo-1-0", ns="b")], "b")
    # After a 410 the list of namespace a lacks demo-1-1 (deleted while nobody watched).
    assert index.replace([pod("demo-1-0", ns="a")], "a") == {("a", "demo")}
    assert names(index, ("a", "demo")) == ["demo-1-0"]
    assert names(index, ("b", "demo")) == ["demo-1-0"]  # another namespace's list: untouched


def test_objects_without_a_view_are_not_indexed():
    index = watches.Index(watches.started_spec_entry)
    spec = {"metadata": {"name": naming.config_map("demo"), "namespace": "a",
                         "labels": {naming.LABEL_JOB: "demo"}}, "data": {"spec": "{}"}}
    stray = {"metadata": {"name": "notes", "namespace": "a",
                          "labels": {naming.LABEL_JOB: "demo"}}, "data": {}}
    assert index.replace([spec, stray]) == {("a", "demo")}
    assert index[("a", "demo")] == (observe.started_spec_view(spec),)
    assert index[("a", "demo")][0].data == spec["data"]  # the data only, not the metadata
    # Relabelled so that it no longer has a view: it leaves the index.
    assert event(index, "MODIFIED", {**spec, "metadata": {**spec["metadata"], "labels": {}}}) == {
        ("a", "demo")}
    assert ("a", "demo") not in index


# --------------------------------------------------------------------------- one stream


class Response:
    def __init__(self, data: bytes = b"", lines: list[dict[str, Any]] | None = None,
                 broken: bool = False):
        self.data = data
        self._lines = lines or []
        self._broken = broken

    def stream(self, amt=None, decode_content=False):
        for line in self._lines:
            yield (json.dumps(line) + "\n").encode()
        if self._broken:
            raise ConnectionResetError("connection reset by peer")

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


def listing(rv: str, *items: dict[str, Any]) -> Response:
    return Response(json.dumps({"metadata": {"resourceVersion": rv},
                                "items": list(items)}).encode())


def throttled(seconds: str) -> ApiException:
    exc = ApiException(status=429, reason="Too Many Requests")
    exc.headers = {"Retry-After": seconds}
    return exc


class ScriptedApi:
    """Answers each call with the next scripted response (or raises it); records the calls;
    stops the stream when the script runs out."""

    def __init__(self, script: list[Any]):
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []
        self.stream: watches.Stream | None = None

    def __call__(self, namespace, **params):
        self.calls.append({"namespace": namespace, **params})
        if not self.script:
            self.stream.stopped.set()
            return Response()
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def run_stream(script: list[Any], monkeypatch) -> tuple[ScriptedApi, watches.Stream,
                                                       watches.Index, list[float]]:
    api = ScriptedApi(script)
    index = watches.Index(watches.pod_entry)
    waits: list[float] = []
    stream = watches.Stream(watches.Kind("pods", api, watches.pod_entry), "a",
                            deliver=lambda call: call(), index=index,
                            on_change=lambda keys: None, on_listed=lambda: None,
                            watch_seconds=300)
    api.stream = stream
    stream.stopped = _RecordingEvent(waits)
    monkeypatch.setattr(watches.random, "uniform", lambda a, b: 1.0)
    runner = threading.Thread(target=stream.run)
    runner.start()
    runner.join(timeout=10)
    assert not runner.is_alive(), "the stream did not stop when its script ran out"
    return api, stream, index, waits


class _RecordingEvent(threading.Event):
    """A stop event whose waits return at once and are recorded (no real sleeping)."""

    def __init__(self, waits: list[float]):
        super().__init__()
        self.waits = waits

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return self.is_set()


def test_lists_with_the_selector_then_watches_from_the_list_version(monkeypatch):
    api, stream, index, _ = run_stream([
        listing("10", pod("demo-1-0")),
        Response(lines=[{"type": "MODIFIED", "object": pod("demo-1-0", phase="Running",
                                                            rv="11")},
                        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}]),
    ], monkeypatch)
    first, watch, resumed = api.calls[:3]
    assert first["label_selector"] == watches.SELECTOR and "watch" not in first
    assert watch["watch"] is True and watch["resource_version"] == "10"
    assert watch["label_selector"] == watches.SELECTOR and watch["allow_watch_bookmarks"]
    # The stream ended (the server's timeout): it resumes from the bookmark's version.
    assert resumed["watch"] is True and resumed["resource_version"] == "15"
    assert [v.phase for v in index[("a", "demo")]] == ["Running"]
    assert stream.relists == 0


def test_410_gone_in_the_stream_relists_and_drops_what_vanished(monkeypatch):
    api, stream, index, _ = run_stream([
        listing("10", pod("demo-1-0"), pod("demo-1-1")),
        Response(lines=[{"type": "ERROR", "object": {"code": 410, "reason": "Expired",
                                                     "message": "too old resource version"}}]),
        listing("40", pod("demo-1-0", phase="Failed", rv="38")),
    ], monkeypatch)
    assert [c.get("watch") for c in api.calls[:3]] == [None, True, None]
    assert stream.relists == 1
    assert {v.name: v.phase for v in index[("a", "demo")]} == {"demo-1-0": "Failed"}
    assert api.calls[3]["resource_version"] == "40"


def test_a_broken_stream_resumes_from_the_last_version_seen(monkeypatch):
    api, stream, _, waits = run_stream([
        listing("10"),
        Response(lines=[{"type": "ADDED", "object": pod("demo-1-0", rv="12")}], broken=True),
    ], monkeypatch)
    assert api.calls[2]["watch"] is True and api.calls[2]["resource_version"] == "12"
    assert stream.relists == 0 and waits[0] == pytest.approx(watches.RETRY_BASE_SECONDS)


def test_throttling_waits_as_long_as_retry_after_says(monkeypatch):
    api, _, _, waits = run_stream([throttled("3"), listing("10")], monkeypatch)
    assert waits[0] == 3.0
    assert [c.get("watch") for c in api.calls[:2]] == [None, None]  # the list, tried again


def test_a_kind_the_server_lacks_counts_as_listed_and_is_looked_for_again(monkeypatch):
    listed: list[bool] = []
    api = ScriptedApi([ApiException(status=404, reason="Not Found"), listing("3")])
    stream = watches.Stream(watches.Kind("workloads", api, watches.workload_entry), None,
                            deliver=lambda call: call(), index=watches.Index(
                                watches.workload_entry),
                            on_change=lambda keys: None, on_listed=lambda: listed.append(True),
                            watch_seconds=300)
    waits: list[float] = []
    api.stream, stream.stopped = stream, _RecordingEvent(waits)
    stream.run()
    assert listed == [True]  # once: the jobs do not wait for Kueue to be installed
    assert waits[0] == watches.ABSENT_KIND_SECONDS


def test_watches_of_a_namespace_pattern_keep_only_matching_namespaces():
    class Client:  # kinds() only needs something to build the API objects from
        pass

    seen: list[set] = []
    w = watches.Watches(Client(), ("team-*",), seen.append, seen.append)
    assert {s.namespace for s in w.streams} == {None}  # cluster-wide, filtered here
    jobs = next(s for s in w.streams if s.kind.name == "finetunejobs")
    assert jobs.keep("team-a") and not jobs.keep("kube-system")
    flavors = next(s for s in w.streams if s.kind.name == "resourceflavors")
    assert flavors.keep("")  # cluster-scoped: no namespace to match
    exact = watches.Watches(Client(), ("a", "b"), seen.append, seen.append)
    namespaced = ("finetunejobs", "pods", "configmaps", "workloads")
    assert sorted((s.kind.name, s.namespace) for s in exact.streams) == sorted(
        [(k, ns) for k in namespaced for ns in ("a", "b")] + [("resourceflavors", None)])


def test_jobs_and_flavors_are_listed_without_a_label_selector_the_children_with_one():
    class Client:
        pass

    by_name = {k.name: k for k in watches.kinds(Client())}
    assert by_name["finetunejobs"].selector is None  # every job is the operator's
    assert by_name["resourceflavors"].selector is None  # Kueue's, read by name
    assert {by_name[k].selector for k in ("pods", "configmaps", "workloads")} == {
        watches.SELECTOR}


def test_the_jobs_index_keeps_what_a_decision_reads_of_a_job():
    body = {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u1", "generation": 3,
                         "resourceVersion": "57", "finalizers": ["finetune.dev/operator"],
                         "managedFields": [{"manager": "kubectl"}] * 50,
                         "annotations": {"kubectl.kubernetes.io/last-applied": "x" * 4096}},
            "spec": {"task": "text-classification"}, "status": {"phase": "Running"}}
    index = watches.Index(watches.job_entry)
    assert index.put(*index.entry("ADDED", body)) == {("ns", "demo")}
    (kept,) = index[("ns", "demo")]
    assert kept == {"metadata": {"name": "demo", "namespace": "ns", "uid": "u1",
                                 "generation": 3, "resourceVersion": "57",
                                 "finalizers": ["finetune.dev/operator"]},
                    "spec": body["spec"], "status": body["status"]}
    # The same view again (e.g. a resync): nothing to wake a loop for.
    assert index.put(*index.entry("MODIFIED", body)) == set()
    assert index.put(*index.entry("DELETED", body)) == {("ns", "demo")}
    assert ("ns", "demo") not in index


def test_flavors_are_kept_by_name_as_their_placement():
    index = watches.Index(watches.flavor_entry)
    index.put(*index.entry("ADDED", {"metadata": {"name": "a100"},
                                     "spec": {"nodeLabels": {"gpu": "a100"}}}))
    (placement,) = index["a100"]
    assert placement.node_labels == (("gpu", "a100"),)
