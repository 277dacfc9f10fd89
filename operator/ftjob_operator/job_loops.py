"""One loop per FineTuneJob: observe -> decide -> apply whenever something about the job
changes (the job itself, its pods, ConfigMap or Workload: watches.py calls `JobLoops`) and at
the latest after `requeue_after` / `FTJOB_RESYNC_SECONDS`. Everything a loop decides from
lives in the cluster (status, pods, the ConfigMap), so a restarted operator picks up where it
left off.

`JobLoops` starts a loop for each job the watch shows, wakes it, and stops it when the job
is gone or being deleted. No finalizer is needed for that: nothing is cleaned up on
deletion that ownerReferences do not already collect, and the Lease (leadership.py) fences
every write. Jobs created by an earlier operator, which ran its loops as kopf daemons, still
carry kopf's finalizer: when such a job is deleted its loop takes that finalizer off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ftjob_api import api

from . import k8s, leadership, observe, watches
from .plan import (CreatePods, DeleteJob, DeletePods, EnsureJobObjects, EnsureWorkload, Event,
                   JobState, Plan, RestoreConfigMap, SetWorkloadActive, UpdateWorkloadStatus)
from .reasons import EventType, Reason
from .reconcile import decide
from .settings import Settings

log = logging.getLogger("ftjob_operator")

# The finalizer of operators that ran each job loop as a kopf daemon: taken off on deletion.
LEGACY_FINALIZER = f"{api.GROUP}/operator"
RETRY_BASE_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0
CRASH_MAX_SECONDS = 30.0  # the longest wait before restarting a loop that raised
STOP_SECONDS = 1.0  # a loop told to stop is cancelled if still running after this
# Longest wait for the watches to show the operator's own last writes before deciding
# again anyway (a busy API server can take seconds; deciding on a stale view repeats work).
SETTLE_SECONDS = 10.0

Key = watches.Key


@dataclass
class Context:
    """What every loop shares: the settings, the API, the watches, the Lease (with peering)
    and the Prometheus metrics (when served)."""
    config: Settings
    kube: k8s.Kube
    watches: watches.Watches
    lease: leadership.Leadership | None = None
    metrics: dict[str, Any] | None = None


@dataclass
class Loop:
    """One job's loop: the uid it serves, what wakes it, what stops it."""
    uid: str
    waker: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class JobLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Log lines of one job's loop, prefixed with the job as kopf's object loggers did."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[{self.extra['job']}] {msg}", kwargs


def wants_loop(job: Mapping[str, Any] | None) -> bool:
    """A job needs a loop unless it is gone, or being deleted without the old finalizer."""
    if job is None:
        return False
    meta = job.get("metadata") or {}
    return not meta.get("deletionTimestamp") or LEGACY_FINALIZER in (meta.get("finalizers") or ())


def current(jobs: Mapping[Key, tuple[Any, ...]], key: Key, uid: str | None = None
            ) -> dict[str, Any] | None:
    """The job `key` as the watch shows it now (only if its uid is `uid`, when given)."""
    for view in jobs.get(key, ()):
        if uid is None or (view.get("metadata") or {}).get("uid") == uid:
            return view
    return None


class JobLoops:
    """The loops of all the jobs the watch shows: `jobs_changed` and `children_changed` are
    the watches' callbacks (on the event loop)."""

    def __init__(self, context: Context):
        self.context = context
        self.loops: dict[Key, Loop] = {}

    def jobs_changed(self, keys: set[Key]) -> None:
        for key in keys:
            self._follow(key)

    def children_changed(self, keys: set[Key]) -> None:
        # Called after the index holds the new state: a loop woken earlier would decide on
        # the old state and then sleep until the resync (measured: p50 latency 3.7 s -> 34 s
        # in benchmarks/operator_scale.py).
        for key in keys:
            loop = self.loops.get(key)
            if loop is not None:
                loop.waker.set()

    async def stop(self) -> None:
        """Stop every loop (the operator is shutting down)."""
        tasks = [loop.task for loop in self.loops.values() if loop.task is not None]
        for key, loop in list(self.loops.items()):
            self._stop(key, loop)
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_SECONDS * 2)

    def _follow(self, key: Key) -> None:
        job = current(self.context.watches.jobs, key)
        uid = str((job or {}).get("metadata", {}).get("uid") or "")
        loop = self.loops.get(key)
        if loop is not None and (not wants_loop(job) or loop.uid != uid):
            self._stop(key, loop)  # gone, deleted, or replaced by a new job of that name
            loop = None
        if loop is not None:
            loop.waker.set()
        elif wants_loop(job):
            loop = self.loops[key] = Loop(uid)
            loop.task = asyncio.get_running_loop().create_task(
                self._supervise(key, loop), name=f"job {key[0]}/{key[1]}")

    def _stop(self, key: Key, loop: Loop) -> None:
        if self.loops.get(key) is loop:
            del self.loops[key]
        loop.stopped.set()
        loop.waker.set()
        if loop.task is not None and not loop.task.done():
            # A loop in the middle of a request stops at its end, or is cancelled: each
            # action is re-derived from the status by the next decision, as after a crash.
            asyncio.get_running_loop().call_later(STOP_SECONDS, loop.task.cancel)

    async def _supervise(self, key: Key, loop: Loop) -> None:
        """Run the loop; restart it (after a growing pause) if it raises."""
        crashes = 0
        try:
            while not loop.stopped.is_set():
                try:
                    await run_job(self.context, key, loop)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - a bug must not end the job's loop for good
                    crashes += 1
                    delay = min(RETRY_BASE_SECONDS * 2 ** crashes, CRASH_MAX_SECONDS)
                    log.exception("[%s/%s] the job's loop failed; restarting it in %.1fs",
                                  key[0], key[1], delay)
                    await _sleep(loop, delay, wake_early=False)
        finally:
            if self.loops.get(key) is loop:
                del self.loops[key]


async def run_job(context: Context, key: Key, loop: Loop) -> None:
    """Decide and act until the job is gone (or deleted) or the loop is stopped."""
    config, kube, children, lease = (context.config, context.kube, context.watches,
                                     context.lease)
    logger = JobLogger(log, {"job": f"{key[0]}/{key[1]}"})
    # Decide only once every kind has been listed.
    await children.synced()
    failures = 0
    ignored: list[str] = []
    refusals = observe.Refusals()  # the API server's refusals to create, as this loop saw them
    written: dict[str, Any] | None = None  # the job as this loop's last status write left it
    # The replica wants the Lease from start-up (handlers.startup); the loop only waits for it.
    while not loop.stopped.is_set():
        loop.waker.clear()
        body = current(children.jobs, key, loop.uid)
        if body is None:
            return  # gone (JobLoops stops this loop too)
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp") and not wants_loop(body):
            return
        if lease is not None and not lease.leading():
            await lease.wait_leading()
            continue  # decide on what the watches show now, not before the wait
        plan: Plan | None = None
        try:
            if meta.get("deletionTimestamp"):
                seen = list(meta.get("finalizers") or ())
                await kube.remove_finalizer(key[0], key[1], LEGACY_FINALIZER, seen)
                # Until the watch shows the list changed: without it (the loop ends
                # above), or changed by someone else in between, which refused the patch
                # (it tests the list it read): sent again on the new list.
                await _until(lambda: _finalizers(current(children.jobs, key, loop.uid))
                             != seen, loop, SETTLE_SECONDS)
                continue
            source: dict[str, Any] = body
            if written is not None and _older(body, written):
                # The watch of the job lags behind this loop's own write (e.g.
                # reconnecting after an API outage): decide on the job as the server
                # holds it, rather than repeat the last plan and its events on the copy
                # the watch still shows.
                source = written
            else:
                written = None
            job, ignored = _readable_job(source, ignored, logger)
            started = time.monotonic()
            plan = decide(job, observe.observe(job, children.pods, children.started_specs,
                                               refusals, children.workloads,
                                               children.flavors),
                          datetime.now(timezone.utc), config)
            # The status and Events first, kept even when an action then fails: the
            # retry decides from the new status and does not explain it again.
            recorded = await kube.record(plan, job)
            acts = kube.acts_after(plan, recorded)
            written = watches.job_view(recorded) if recorded else written
            del recorded  # the whole job as written: not held while this loop waits
            if acts:
                await kube.carry_out(plan, job)
        except leadership.NotLeading as exc:
            logger.warning("%s: %s not written; deciding again once leading", exc,
                           plan.case if plan else "the finalizer's removal")
            continue
        except (k8s.TransientApiError, k8s.RejectedError) as exc:
            failures += 1
            delay = await _refused(exc, failures, plan, refusals, kube, body, logger)
            await _sleep(loop, delay, wake_early=False)
            continue
        failures = 0
        refusals.cleared()
        assert plan is not None  # decided: only the deletion path returns without one
        _record(context.metrics, plan, time.monotonic() - started)
        if plan.status:
            logger.info("%s: %s", plan.case, plan.status.get("message") or plan.status)
        if plan.status or plan.actions:
            # Decide again only once the watches show what we just did, so the next
            # decision does not start from the state we just replaced (and repeat it).
            await _until(lambda: _reflected(plan, key, current(children.jobs, key) or {},
                                            children.pods, children.started_specs,
                                            children.workloads),
                         loop, max(SETTLE_SECONDS, config.resync_seconds))
            continue
        wait = config.resync_seconds
        if plan.requeue_after is not None:
            wait = min(wait, max(plan.requeue_after, 0.05))
        await _sleep(loop, wait)


def _finalizers(job: Mapping[str, Any] | None) -> list[str] | None:
    return None if job is None else list((job.get("metadata") or {}).get("finalizers") or ())


def _older(body: Mapping[str, Any], written: Mapping[str, Any]) -> bool:
    """Whether the watch's copy of the job predates `written` (the server's answer to this
    loop's last status write). resourceVersions are etcd revisions, which only grow; where
    one is not a number (another store), the watch's copy is taken as current."""
    mine = str((written.get("metadata") or {}).get("resourceVersion") or "")
    seen = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return mine.isdigit() and seen.isdigit() and int(seen) < int(mine)


async def _refused(exc: Exception, failures: int, plan: Plan | None,
                   refusals: observe.Refusals, kube: k8s.Kube, body: Mapping[str, Any],
                   logger: logging.LoggerAdapter) -> float:  # type: ignore[type-arg]
    """A plan the API did not take: note a refused create (or an object owned by another)
    for the next decision, a Warning Event at the first failure; the delay before trying
    again."""
    delay = min(RETRY_BASE_SECONDS * 2 ** (failures - 1), RETRY_MAX_SECONDS)
    delay *= random.uniform(0.8, 1.2)
    throttled = getattr(exc, "retry_after", None)
    if throttled is not None:
        delay = max(delay, throttled)  # a 429's Retry-After: as long as the server asks
    owned = isinstance(exc, k8s.OwnedByOtherError)
    if isinstance(exc, k8s.RejectedError) and failures == 1:
        reason = Reason.OBJECT_OWNED_BY_OTHER if owned else Reason.API_REJECTED
        with contextlib.suppress(leadership.NotLeading):  # the next leader explains it
            await kube.post_events(JobState.from_body(dict(body)),
                                   [Event(EventType.WARNING, reason, str(exc))])
    if owned:
        refusals.conflicted(str(exc), datetime.now(timezone.utc))
    elif isinstance(exc, k8s.CreateRejectedError):
        refusals.refused(str(exc), datetime.now(timezone.utc))
    if ((owned or isinstance(exc, k8s.CreateRejectedError)) and plan is not None
            and plan.requeue_after is not None):
        delay = min(delay, max(plan.requeue_after, 0.05))  # e.g. when the allowance ends
    logger.warning("%s; retrying in %.1fs", exc, delay)
    return delay


def _readable_job(body: Mapping[str, Any], ignored: list[str],
                  logger: logging.LoggerAdapter) -> tuple[JobState, list[str]]:  # type: ignore[type-arg]
    """The job with only the status fields the operator can read, and the names of the
    others (logged once per change, not at every wake-up)."""
    job = JobState.from_body(dict(body))
    status, dropped = observe.sane_status(job.status)
    if dropped:
        job = dataclasses.replace(job, status=status)
    if dropped and dropped != ignored:
        logger.warning("status fields %s hold values the operator cannot read (written by "
                       "another client?); deciding without them", ", ".join(dropped))
    return job, dropped


async def _sleep(loop: Loop, seconds: float, wake_early: bool = True) -> None:
    """Up to `seconds`; until woken (when `wake_early`) or stopped."""
    if loop.stopped.is_set():
        return
    wake = loop.waker if wake_early else loop.stopped
    try:
        await asyncio.wait_for(wake.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass


def _reflected(plan: Plan, key: Key, body: Mapping[str, Any], pods_index: Mapping[Key, Any],
               specs_index: Mapping[Key, Any],
               workloads_index: Mapping[Key, Any] | None = None) -> bool:
    """Whether the operator's own view (watch-fed) already shows the plan's effects."""
    status = body.get("status") or {}
    if any(status.get(k) != v for k, v in plan.status.items()):
        return False
    pods = {p.name: p for p in pods_index.get(key, ())}
    for action in plan.actions:
        if isinstance(action, CreatePods):
            if not set(action.names) <= set(pods):
                return False
        elif isinstance(action, DeletePods):
            if any(n in pods and not pods[n].deleting for n in action.names):
                return False
        elif isinstance(action, DeleteJob):
            # Until the watch shows the deletion, a decision would delete (and explain) it
            # again: the TTL's Deleted Event posted twice.
            if not (body.get("metadata") or {}).get("deletionTimestamp"):
                return False
        elif isinstance(action, EnsureJobObjects):
            if not specs_index.get(key):
                return False
        elif isinstance(action, RestoreConfigMap):
            if not any(view.data == action.manifest["data"]
                       for view in specs_index.get(key, ())):
                return False
        elif isinstance(action, EnsureWorkload | SetWorkloadActive | UpdateWorkloadStatus):
            uid = (body.get("metadata") or {}).get("uid")
            workloads = [w for w in (workloads_index or {}).get(key, ())
                         if uid is None or w.owner_uid == uid]
            if not workloads:
                return False
            if isinstance(action, SetWorkloadActive) and any(
                    w.active != action.active for w in workloads):
                return False
            if isinstance(action, UpdateWorkloadStatus) and any(
                    w.resource_version == action.resource_version for w in workloads):
                return False
    return True


async def _until(done: Any, loop: Loop, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not loop.stopped.is_set() and not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        loop.waker.clear()
        await _sleep(loop, left)


def _record(metrics: dict[str, Any] | None, plan: Plan, seconds: float) -> None:
    if metrics:
        metrics["decisions"].labels(case=plan.case).inc()
        metrics["latency"].observe(seconds)
