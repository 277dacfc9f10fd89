"""The replicas' Lease (leadership.py): when to create, renew, take over or give it up, and
the fence a write passes: open only until the deadline after the last renewal *sent*, on the
replica's own clock, so a replica frozen and woken finds it closed."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from kubernetes.client.exceptions import ApiException

from ftjob_operator import k8s, leadership
from ftjob_operator.leadership import (LEASE_DURATION, RENEW_DEADLINE, Leadership, NotLeading,
                                       Record, Step, next_step)
from ftjob_operator.settings import Settings

ME, OTHER = "replica-a_1", "replica-b_2"


def record(holder: str = OTHER, version: str = "7") -> Record:
    return Record(holder=holder, duration=LEASE_DURATION, version=version)


@pytest.mark.parametrize("rec, unchanged, wanted, step", [
    (None, 0.0, True, Step.CREATE),
    (None, 0.0, False, Step.WAIT),
    (record(ME), 0.0, True, Step.RENEW),
    (record(ME), 0.0, False, Step.RELEASE),  # kopf paused this replica: let the next one have it
    (record(""), 0.0, True, Step.ACQUIRE),  # given up by its holder
    (record(OTHER), LEASE_DURATION - 0.01, True, Step.WAIT),
    (record(OTHER), LEASE_DURATION, True, Step.ACQUIRE),  # its holder silent for the duration
    (record(OTHER), 10 * LEASE_DURATION, False, Step.WAIT),  # nobody here needs it
], ids=["absent", "absent-unwanted", "ours", "ours-unwanted", "released", "held",
        "expired", "expired-unwanted"])
def test_next_step(rec, unchanged, wanted, step):
    assert next_step(rec, ME, unchanged, wanted) is step


class Response:
    def __init__(self, body: dict):
        self.data = json.dumps(body).encode()

    def release_conn(self) -> None:
        pass


class FakeLeases:
    """coordination/v1 Leases in memory, with the API server's optimistic concurrency: a
    replace over another resourceVersion is a 409."""

    def __init__(self):
        self.lease: dict | None = None
        self.version = 0
        self.writes: list[str] = []

    def _stored(self, body: dict) -> Response:
        self.version += 1
        self.lease = json.loads(json.dumps(body))
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(body["spec"]["holderIdentity"])
        return Response(self.lease)

    def read_namespaced_lease(self, name, namespace, **_):
        if self.lease is None:
            raise ApiException(status=404)
        return Response(self.lease)

    def create_namespaced_lease(self, namespace, body, **_):
        if self.lease is not None:
            raise ApiException(status=409)
        return self._stored(body)

    def replace_namespaced_lease(self, name, namespace, body, **_):
        if body["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        return self._stored(body)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(leadership.time, "monotonic", c)
    return c


def replica(leases: FakeLeases, me: str) -> Leadership:
    lead = Leadership(api_client=None, namespace="ftjob-system", name="ftjob", me=me)
    lead._api = leases
    return lead


def test_the_fence_closes_at_the_deadline_after_the_renewal_sent(clock):
    leases = FakeLeases()
    a = replica(leases, ME)
    a.want()
    a._step()  # creates it
    assert leases.writes == [ME] and a.leading()
    clock.now += RENEW_DEADLINE - 0.01
    a.check()
    clock.now += 0.01
    with pytest.raises(NotLeading):
        a.check()
    a._step()  # renews: open again for a deadline from now
    assert leases.writes == [ME, ME]
    a.check()


def test_a_frozen_holder_wakes_fenced_and_the_other_holds_the_lease(clock):
    leases = FakeLeases()
    a, b = replica(leases, ME), replica(leases, OTHER)
    a.want()
    b.want()
    a._step()
    b._step()  # sees a's record: waits
    assert not b.leading()
    clock.now += LEASE_DURATION - 0.01  # a frozen: no renewal since
    b._step()
    assert leases.writes == [ME], "taken over before the whole duration passed"
    clock.now += 0.01
    b._step()
    assert leases.writes == [ME, OTHER] and b.leading()
    assert int(leases.lease["spec"]["leaseTransitions"]) == 1
    # a wakes: its fence is long closed (its clock ran on while it was stopped) ...
    with pytest.raises(NotLeading):
        a.check()
    # ... and its next look finds b's record: it stays fenced and writes nothing.
    a._step()
    assert not a.leading() and leases.writes == [ME, OTHER]


def test_a_renewal_over_a_record_someone_else_wrote_loses(clock):
    leases = FakeLeases()
    a, b = replica(leases, ME), replica(leases, OTHER)
    a.want()
    a._step()
    stale = a._read()  # a read, then froze before its renewal ...
    clock.now += LEASE_DURATION
    b.want()
    b._step()  # first sight of a's record
    clock.now += LEASE_DURATION
    b._step()  # ... b took over meanwhile
    assert leases.writes[-1] == OTHER
    a._write(stale, a._spec(transitions=0, acquired=False))  # the renewal a had prepared
    assert not a.leading() and leases.writes[-1] == OTHER


def test_a_replica_nobody_needs_gives_the_lease_up_and_the_other_takes_it_at_once(clock):
    leases = FakeLeases()
    a, b = replica(leases, ME), replica(leases, OTHER)
    a.want()
    a._step()
    b.want()
    b._step()
    assert not b.leading()
    a.unwant()  # kopf paused a: its job loops stopped
    a._step()
    assert not a.leading() and leases.lease["spec"]["holderIdentity"] == ""
    b._step()  # no need to wait for an expiry
    assert b.leading()


def test_writes_pass_the_fence_on_the_thread_that_sends_them():
    seen: list[str] = []
    leading = False

    def fence() -> None:
        seen.append(threading.current_thread().name)
        if not leading:
            raise NotLeading("not holding Lease ftjob-system/ftjob")

    def patch(*args, **kwargs):
        return Response({"status": {}})

    kube = k8s.Kube(api_client=None, settings=Settings(api_workers=1))
    kube.fence = fence
    try:
        with pytest.raises(NotLeading):
            asyncio.run(kube._call("patch FineTuneJob a/b status", patch))
        # reads are not fenced
        assert asyncio.run(kube._call("read Pod a/b", patch, write=False)) == {"status": {}}
        leading = True
        assert asyncio.run(kube._call("patch FineTuneJob a/b status", patch)) == {"status": {}}
    finally:
        kube.close()
    assert seen and all(name.startswith("ftjob-api") for name in seen), seen
