"""The job loops: which copy of a job a loop decides on (job_loops._older): the watch's,
unless it predates the loop's own last status write (the watch lagging after an API outage);
when a job gets a loop, is woken, and loses it (job_loops.JobLoops); kopf runs none of it."""

import asyncio

import kopf
import pytest

from ftjob_operator import handlers, job_loops, watches
from ftjob_operator.job_loops import LEGACY_FINALIZER, JobLoops, _older, wants_loop
from ftjob_operator.plan import JobState
from ftjob_operator.settings import Settings


def job(rv: str) -> dict:
    return {"metadata": {"resourceVersion": rv}, "status": {}}


def test_the_watchs_copy_older_than_the_loops_own_write_is_not_decided_on():
    assert _older(job("41"), job("57"))


def test_the_watchs_copy_as_new_or_newer_is_decided_on():
    assert not _older(job("57"), job("57"))
    assert not _older(job("60"), job("57"))  # e.g. rank 0's progress written since


def test_versions_that_are_not_numbers_leave_the_watchs_copy_in_charge():
    assert not _older(job("a1"), job("b2"))
    assert not _older(job("41"), {"metadata": {}})


def test_the_kept_write_holds_what_a_decision_reads_and_not_the_rest():
    written = {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
               "metadata": {"name": "demo", "namespace": "ns", "uid": "u1", "generation": 3,
                            "resourceVersion": "57", "deletionTimestamp": "2026-01-01T00:00:00Z",
                            "managedFields": [{"manager": "ftjob-operator"}] * 50,
                            "annotations": {"kubectl.kubernetes.io/last-applied": "x" * 4096}},
               "spec": {"task": "text-classification"}, "status": {"phase": "Running"}}
    kept = watches.job_view(written)
    assert JobState.from_body(kept) == JobState.from_body(written)
    assert kept["metadata"] == {"name": "demo", "namespace": "ns", "uid": "u1", "generation": 3,
                                "resourceVersion": "57",
                                "deletionTimestamp": "2026-01-01T00:00:00Z"}
    assert not _older(job("57"), kept) and _older(job("41"), kept)


def test_kopf_keeps_no_state_per_job():
    """No kopf handler watches the jobs (its copy of each job, its per-object workers and its
    finalizer patch were most of the operator's memory and a sixth of its CPU per job): only
    the admission webhook and the operator's start-up, login and clean-up are kopf's."""
    registry = kopf.get_default_registry()
    assert handlers.startup  # the module registered its handlers
    for per_object in (registry._indexing, registry._watching, registry._spawning,
                       registry._changing):
        assert not list(per_object.get_all_handlers())
    assert [h.id for h in registry._webhooks.get_all_handlers()] == ["validate"]


# --------------------------------------------------------------------------- JobLoops


def body(name="demo", uid="u1", rv="1", deleting=False, finalizers=()):
    meta = {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": rv}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if finalizers:
        meta["finalizers"] = list(finalizers)
    return {"metadata": meta, "spec": {}, "status": {}}


def test_a_job_needs_a_loop_unless_gone_or_deleted_without_the_old_finalizer():
    assert wants_loop(body())
    assert not wants_loop(None)
    assert not wants_loop(body(deleting=True))
    assert not wants_loop(body(deleting=True, finalizers=["example.com/keep"]))
    assert wants_loop(body(deleting=True, finalizers=[LEGACY_FINALIZER]))  # to take it off


class FakeWatches:
    def __init__(self):
        self.jobs = watches.Index(watches.job_entry)

    def show(self, kind, obj):
        return self.jobs.put(*self.jobs.entry(kind, obj))


@pytest.fixture
def runs(monkeypatch):
    """run_job replaced by one that records each start and wake-up and runs until stopped
    (or raises, for a job named `crash`, the first time)."""
    seen: list[tuple[str, str]] = []

    async def run_job(context, key, loop):
        seen.append(("start", loop.uid))
        if key[1] == "crash" and seen.count(("start", loop.uid)) == 1:
            raise RuntimeError("a bug")
        while not loop.stopped.is_set():
            await loop.waker.wait()
            loop.waker.clear()
            if not loop.stopped.is_set():
                seen.append(("woken", loop.uid))
        seen.append(("stopped", loop.uid))

    monkeypatch.setattr(job_loops, "run_job", run_job)
    monkeypatch.setattr(job_loops, "RETRY_BASE_SECONDS", 0.001)
    return seen


async def until(condition, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def test_loops_start_wake_and_stop_with_the_job(runs):
    w = FakeWatches()
    loops = JobLoops(job_loops.Context(None, None, w))
    loops.jobs_changed(w.show("ADDED", body()))
    await until(lambda: ("start", "u1") in runs)
    loops.jobs_changed(w.show("MODIFIED", body(rv="2")))
    await until(lambda: ("woken", "u1") in runs)
    loops.children_changed({("ns", "demo")})
    await until(lambda: runs.count(("woken", "u1")) == 2)
    loops.children_changed({("ns", "other")})  # no such job: nothing happens
    loops.jobs_changed(w.show("DELETED", body(rv="3")))
    await until(lambda: ("stopped", "u1") in runs)
    assert runs == [("start", "u1"), ("woken", "u1"), ("woken", "u1"), ("stopped", "u1")]
    assert loops.loops == {}


async def test_a_new_job_of_the_same_name_gets_a_new_loop(runs):
    w = FakeWatches()
    loops = JobLoops(job_loops.Context(None, None, w))
    loops.jobs_changed(w.show("ADDED", body(uid="u1")))
    await until(lambda: ("start", "u1") in runs)
    # Deleted and created again between two events: the watch shows only the new uid.
    loops.jobs_changed(w.show("MODIFIED", body(uid="u2", rv="5")))
    await until(lambda: ("stopped", "u1") in runs and ("start", "u2") in runs)
    assert loops.loops[("ns", "demo")].uid == "u2"
    await loops.stop()
    assert ("stopped", "u2") in runs and loops.loops == {}


async def test_a_deleted_job_keeps_its_loop_only_while_the_old_finalizer_is_on(runs):
    w = FakeWatches()
    loops = JobLoops(job_loops.Context(None, None, w))
    loops.jobs_changed(w.show("ADDED", body(deleting=True, finalizers=[LEGACY_FINALIZER])))
    await until(lambda: ("start", "u1") in runs)
    loops.jobs_changed(w.show("MODIFIED", body(rv="2", deleting=True,
                                               finalizers=["example.com/keep"])))
    await until(lambda: ("stopped", "u1") in runs)
    loops.jobs_changed(w.show("ADDED", body(name="plain", uid="u3", deleting=True)))
    await asyncio.sleep(0.01)
    assert ("start", "u3") not in runs and loops.loops == {}


async def test_a_loop_that_raises_is_restarted(runs):
    w = FakeWatches()
    loops = JobLoops(job_loops.Context(None, None, w))
    loops.jobs_changed(w.show("ADDED", body(name="crash")))
    await until(lambda: runs.count(("start", "u1")) == 2)
    assert loops.loops[("ns", "crash")].task is not None
    await loops.stop()


async def test_the_old_finalizer_is_taken_off_again_when_the_list_changed_meanwhile(
        monkeypatch):
    """The removal tests the finalizers it read; when someone changed them in between (the
    API server answers 422, tolerated), the loop sends it again on the list the watch shows
    next, and ends once the watch shows the old finalizer gone."""
    w = FakeWatches()
    sent: list[list[str]] = []

    async def synced():
        pass

    class Kube:
        async def remove_finalizer(self, namespace, name, finalizer, finalizers):
            sent.append(finalizers)
            if len(sent) == 1:  # refused: someone added one meanwhile
                w.show("MODIFIED", body(rv="3", deleting=True,
                                        finalizers=[LEGACY_FINALIZER, "a/b", "c/d"]))
            else:
                w.show("MODIFIED", body(rv="4", deleting=True, finalizers=["a/b", "c/d"]))
            loops.jobs_changed({("ns", "demo")})

    w.synced = synced
    loops = JobLoops(job_loops.Context(Settings(), Kube(), w))
    loops.jobs_changed(w.show("ADDED", body(rv="2", deleting=True,
                                            finalizers=[LEGACY_FINALIZER, "a/b"])))
    await until(lambda: ("ns", "demo") not in loops.loops)
    assert sent == [[LEGACY_FINALIZER, "a/b"], [LEGACY_FINALIZER, "a/b", "c/d"]]
