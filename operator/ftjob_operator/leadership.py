"""One writer among the replicas: a coordination.k8s.io Lease, and a fence on every write.

Every replica watches the jobs and runs their loops (job_loops.py); only the one holding
the Lease writes. As client-go's leader election does, a write is sent only while the last
renewal this replica *sent* is younger than `RENEW_DEADLINE` on its own monotonic clock (a
replica frozen past it (SIGSTOP, a paused VM, a long stall) finds it stale on waking: the
clock ran on). Another replica takes the Lease over only after it has seen the same record,
unchanged, for the Lease's whole duration, which is longer than the deadline: by then the
old holder has stopped writing, whatever it believes. (kopf's peering, a liveness heuristic
rather than a lock, pauses nothing of the operator's.)

Each replica wants the Lease from its start (handlers.startup) until it stops gracefully,
when it gives the Lease up so the next one can take it at once. Its
renewals run on a thread of their own with their own connection, so a busy event loop or a
full API worker pool does not cost the Lease.

What is left: a write already past the fence when the process freezes is sent when it wakes
(client-go has the same window, microseconds wide).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("ftjob_operator.leadership")

LEASE_DURATION = 15.0  # seconds another replica waits on an unchanged record (client-go's)
RENEW_DEADLINE = 10.0  # the holder writes only this long after sending its last renewal
RETRY_PERIOD = 2.0  # seconds between two looks at the Lease
REQUEST_TIMEOUT = (2, 5)  # (connect, read): a renewal slower than this is no renewal


class NotLeading(Exception):
    """This replica may not write now: it does not hold the Lease, or its last renewal is
    older than the deadline."""


class Step(enum.Enum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # ours
    ACQUIRE = "acquire"  # free, or its holder has been silent for the whole duration
    RELEASE = "release"  # ours, and no job loop wants it
    WAIT = "wait"


@dataclass(frozen=True)
class Record:
    """The Lease as read: who holds it and for how long; `version`: its resourceVersion."""
    holder: str
    duration: float
    version: str
    transitions: int = 0

    @staticmethod
    def from_lease(lease: dict[str, Any]) -> Record:
        spec = lease.get("spec") or {}
        return Record(holder=spec.get("holderIdentity") or "",
                      duration=float(spec.get("leaseDurationSeconds") or LEASE_DURATION),
                      version=str((lease.get("metadata") or {}).get("resourceVersion") or ""),
                      transitions=int(spec.get("leaseTransitions") or 0))


def next_step(record: Record | None, me: str, unchanged_for: float, wanted: bool) -> Step:
    """What to do with the Lease (pure). `unchanged_for`: seconds this replica has seen
    `record` without a change (its own clock, from the first read that showed it)."""
    if record is None:
        return Step.CREATE if wanted else Step.WAIT
    if record.holder == me:
        return Step.RENEW if wanted else Step.RELEASE
    if not wanted:
        return Step.WAIT
    if not record.holder or unchanged_for >= record.duration:
        return Step.ACQUIRE
    return Step.WAIT


def identity() -> str:
    """This replica's name in the Lease: its pod (or host), and a random tail, so that a
    restarted process never mistakes its predecessor's record for its own."""
    host = os.environ.get("POD_ID") or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}_{uuid.uuid4().hex[:8]}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leadership:
    """The Lease `name` in `namespace`, kept by a thread; `check()` is the fence."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str,
                 me: str | None = None):
        self.namespace, self.name = namespace, name
        self.me = me or identity()
        self._api = client.CoordinationV1Api(api_client)
        self._held_until = 0.0  # monotonic; writes only before this
        self._wanted = 0  # job loops that want to write
        self._seen: tuple[str, float] | None = None  # (resourceVersion, first seen at)
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._was_leading = False

    # ------------------------------------------------------------------ the fence

    def leading(self) -> bool:
        return time.monotonic() < self._held_until

    def check(self) -> None:
        """Raise NotLeading unless this replica may write now (called right before each
        write is sent, on the thread that sends it)."""
        if not self.leading():
            raise NotLeading(f"not holding Lease {self.namespace}/{self.name} "
                             f"(as {self.me})")

    async def wait_leading(self) -> None:
        """Until this replica holds the Lease (the caller's demand makes it try)."""
        while not self.leading():
            assert self._changed is not None, "start() first"
            self._changed.clear()
            self._poke.set()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=RETRY_PERIOD)
            except asyncio.TimeoutError:
                pass

    def want(self) -> None:
        self._wanted += 1
        self._poke.set()

    def unwant(self) -> None:
        self._wanted -= 1
        if self._wanted == 0:
            self._poke.set()

    # ------------------------------------------------------------------ the thread

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="ftjob-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop writing, then give the Lease up so another replica need not wait for it to
        expire (a graceful shutdown: SIGTERM)."""
        self._held_until = 0.0
        self._stop.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(timeout=REQUEST_TIMEOUT[0] + REQUEST_TIMEOUT[1] + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any blip
                log.warning("Lease %s/%s: %s: %s", self.namespace, self.name,
                            type(exc).__name__, exc)
            self._notify()
            self._poke.wait(RETRY_PERIOD)
            self._poke.clear()
        if self._seen is not None:
            try:
                self._release()
            except Exception as exc:  # noqa: BLE001 - best effort: it expires anyway
                log.warning("Lease %s/%s: not released: %s", self.namespace, self.name, exc)

    def _notify(self) -> None:
        leading = self.leading()
        if leading != self._was_leading:
            log.info("%s Lease %s/%s as %s", "holding" if leading else "lost",
                     self.namespace, self.name, self.me)
            self._was_leading = leading
        if self._loop is not None and self._changed is not None:
            try:
                self._loop.call_soon_threadsafe(self._changed.set)
            except RuntimeError:  # the loop is closed: the operator is stopping
                pass

    def _step(self) -> None:
        lease = self._read()
        record = None if lease is None else Record.from_lease(lease)
        seen_at = time.monotonic()  # after the answer: not before the holder's write
        if record is None:
            self._seen = None
        elif self._seen is None or self._seen[0] != record.version:
            self._seen = (record.version, seen_at)
        if record is None or record.holder != self.me:
            self._held_until = 0.0
        unchanged = 0.0 if self._seen is None else seen_at - self._seen[1]
        step = next_step(record, self.me, unchanged, self._wanted > 0)
        if step is Step.CREATE:
            self._write(None, self._spec(transitions=0))
        elif step is Step.RENEW:
            self._write(lease, self._spec(transitions=record.transitions, acquired=False))
        elif step is Step.ACQUIRE:
            self._write(lease, self._spec(transitions=record.transitions + 1))
        elif step is Step.RELEASE:
            self._release(lease)

    def _spec(self, transitions: int, acquired: bool = True) -> dict[str, Any]:
        now = _now()
        spec = {"holderIdentity": self.me, "leaseDurationSeconds": int(LEASE_DURATION),
                "renewTime": now, "leaseTransitions": transitions}
        if acquired:
            spec["acquireTime"] = now
        return spec

    def _write(self, lease: dict[str, Any] | None, spec: dict[str, Any]) -> None:
        """Create or replace the Lease (replace: only over the version read, so two
        replicas never both win); on success the fence opens until the deadline, counted
        from before the request was sent."""
        sent = time.monotonic()
        try:
            if lease is None:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace},
                        "spec": spec}
                written = _json(self._api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=REQUEST_TIMEOUT,
                    _preload_content=False))
            else:
                body = {**lease, "spec": {**(lease.get("spec") or {}), **spec}}
                written = _json(self._api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=REQUEST_TIMEOUT,
                    _preload_content=False))
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote it first: read again
                self._held_until = 0.0
                self._seen = None
                return
            raise
        self._held_until = sent + RENEW_DEADLINE
        self._seen = (str(written["metadata"]["resourceVersion"]), time.monotonic())

    def _release(self, lease: dict[str, Any] | None = None) -> None:
        self._held_until = 0.0
        lease = self._read() if lease is None else lease
        if lease is None or Record.from_lease(lease).holder != self.me:
            return
        body = {**lease, "spec": {**lease["spec"], "holderIdentity": "",
                                  "leaseDurationSeconds": 1, "renewTime": _now()}}
        try:
            _json(self._api.replace_namespaced_lease(self.name, self.namespace, body,
                                                     _request_timeout=REQUEST_TIMEOUT,
                                                     _preload_content=False))
        except ApiException as exc:
            if exc.status != 409:
                raise
        log.info("released Lease %s/%s", self.namespace, self.name)
        self._seen = None

    def _read(self) -> dict[str, Any] | None:
        try:
            return _json(self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT,
                _preload_content=False))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.data
    finally:
        response.release_conn()
    return json.loads(data)
