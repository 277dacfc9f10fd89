"""kopf glue: settings at startup, the watches of the children, one loop per FineTuneJob.

Each job gets a kopf daemon that runs observe -> decide -> apply whenever something about
the job changes (its pods, ConfigMap or Workload: watches.py wakes it; itself: kopf's
watch of the jobs) and at the latest
after `requeue_after` / `FTJOB_RESYNC_SECONDS`. Everything it decides from lives in the
cluster (status, pods, the ConfigMap), so a restarted operator picks up where it left off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import random
import time
from datetime import datetime, timezone
from typing import Any

import kopf

from ftjob_api import api, naming

from . import admission, k8s, kueue, leadership, observe, watches
from .reasons import EventType, Reason
from .plan import (CreatePods, DeleteJob, DeletePods, EnsureJobObjects, EnsureWorkload, JobState,
                   Plan, RestoreConfigMap, SetWorkloadActive, UpdateWorkloadStatus)
from .reconcile import decide
from .settings import Settings, from_env

log = logging.getLogger("ftjob_operator")

FINALIZER = f"{api.GROUP}/operator"
RETRY_BASE_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0
# Longest wait for the watches to show the operator's own last writes before deciding
# again anyway (a busy API server can take seconds; deciding on a stale view repeats work).
SETTLE_SECONDS = 10.0


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: the operator has no on.create/on.update handlers, the only readers of
    kopf's (a deep copy of each job, managedFields and status included, at every watch
    event: 3% of the operator's CPU at scale, benchmarks/operator_scale_real.py)."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return kopf.BodyEssence()  # the same as built: no change to react to

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.diffbase_storage = NoDiffBase()
    # Only our own Events (kopf.event below); not every log line of the handlers.
    kopf_settings.posting.level = logging.CRITICAL + 10
    kopf_settings.networking.request_timeout = 60
    # After an API outage, kopf's watch of the jobs retries on this schedule (its default
    # grows to 21 s between tries, which then delays every job's next decision by up to
    # that): as long in total (about a minute before kopf gives up), at most 5 s apart.
    kopf_settings.networking.error_backoffs = (0.5, 1, 2, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5)
    kopf_settings.watching.server_timeout = settings.watch_seconds
    kopf_settings.watching.client_timeout = settings.watch_seconds + 30
    if settings.namespaces and not any(c in ns for ns in settings.namespaces for c in "*?[!"):
        # Exact names need no namespace scan: without this kopf lists namespaces cluster-wide
        # and, where RBAC forbids it, retries for about a minute before watching anything.
        kopf_settings.scanning.disabled = True
    if settings.peering:
        kopf_settings.peering.name = settings.peering
        kopf_settings.peering.mandatory = True
        kopf_settings.peering.lifetime = settings.peering_lifetime
    else:
        kopf_settings.peering.standalone = True


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = from_env(os.environ)
    configure_kopf(settings, config)
    memo.config = config
    memo.kube = k8s.Kube(k8s.load_api_client(config), config)
    memo.leadership = None
    if config.peering:
        # kopf's peering pauses the standbys; the Lease fences the writes (leadership.py).
        memo.leadership = leadership.Leadership(k8s.load_api_client(config),
                                                config.lease_namespace or "", config.peering)
        memo.leadership.start()
        memo.kube.fence = memo.leadership.check
    memo.wakers = {}
    memo.metrics = _metrics(config)
    # The children by server-side label selector (watches.py); the jobs stay on kopf's watch.
    memo.watches = watches.Watches(k8s.load_api_client(config), config.namespaces,
                                   lambda keys: _children_changed(memo, keys),
                                   config.watch_seconds)
    memo.watches.start()
    # The validating webhook's handler lives in admission.py (registered by its import).
    settings.admission.server = admission.webhook_server(
        config, admission.ca_publisher(memo.kube, config.webhook_configuration or ""))
    log.info("ftjob operator started: trainer image %s, namespaces %s", config.trainer_image,
             ",".join(config.namespaces) or "all")
    # What start-up made (modules, the client's models: about 170,000 objects) lives as long
    # as the process: out of the collector's sight, or every full collection walks it all
    # (200 jobs, benchmarks/operator_scale_real.py: 0.57 of the operator's 6 CPU-seconds
    # went to 4 full collections; 0.10 with this).
    gc.freeze()


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """Same sources as kopf's own client login, but honouring $KUBECONFIG at call time."""
    config = k8s.load_configuration()
    header = (config.get_api_key_with_prefix("BearerToken")
              or config.get_api_key_with_prefix("authorization"))
    parts = header.split(" ", 1) if header else []
    scheme, token = ((None, None) if not parts else (None, parts[0]) if len(parts) == 1
                     else (parts[0], parts[1]))
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        trust_env=settings.networking.trust_env,
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    lease = getattr(memo, "leadership", None)
    if lease is not None:
        # No write after this; the Lease given up for the next replica.
        await asyncio.get_running_loop().run_in_executor(None, lease.stop)
    kube = getattr(memo, "kube", None)
    if kube is not None:
        kube.close()
    children = getattr(memo, "watches", None)
    if children is not None:
        children.stop()


# --------------------------------------------------------------------------- indexes
# The children (pods, started-spec ConfigMaps, Workloads) are in memo.watches (watches.py):
# kopf cannot pass a label selector to the server.


# Kueue's ResourceFlavors (cluster-scoped, a handful, not ours): their node labels and
# tolerations go on the pods of a job admitted with them.
@kopf.index(kueue.GROUP, kueue.VERSION, "resourceflavors")
def ftjob_flavors(body: kopf.Body, name: str, **_: Any) -> dict[Any, Any]:
    return {name: kueue.flavor_placement(dict(body))}


# --------------------------------------------------------------------------- wake-ups
# Called after the index holds the new state (watches.py updates it, then calls back; kopf
# calls the job's event handler after its own state): a loop woken earlier would decide on
# the old state and then sleep until the resync (measured: p50 latency 3.7 s -> 34 s in
# benchmarks/operator_scale.py).


def _wake(memo: kopf.Memo, namespace: str | None, job: str | None) -> None:
    waker = getattr(memo, "wakers", {}).get((namespace, job))
    if waker is not None:
        waker.set()


def _children_changed(memo: kopf.Memo, keys: set[tuple[str, str]]) -> None:
    for namespace, job in keys:
        _wake(memo, namespace, job)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def job_changed(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    # async: kopf runs a plain function in its thread pool, a hop per event of every job
    _wake(memo, namespace, name)


# --------------------------------------------------------------------------- the job loop


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_timeout=1.0,
             initial_delay=None)
async def run_job(body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, stopped: kopf.DaemonStopped,
                  logger: logging.Logger, ftjob_flavors: kopf.Index, **_: Any) -> None:
    key = (meta["namespace"], meta["name"])
    waker = memo.wakers.setdefault(key, asyncio.Event())
    config: Settings = memo.config
    kube: k8s.Kube = memo.kube
    children: watches.Watches = memo.watches
    # Decide only once every child kind has been listed (kopf does the same for indexes).
    await children.synced()
    ftjob_pods, ftjob_started_specs = children.pods, children.started_specs
    ftjob_workloads = children.workloads
    failures = 0
    ignored: list[str] = []
    refusals = observe.Refusals()  # the API server's refusals to create, as this loop saw them
    written: dict[str, Any] | None = None  # the job as this loop's last status write left it
    lease: leadership.Leadership | None = getattr(memo, "leadership", None)
    if lease is not None:
        lease.want()
    try:
        while not stopped:
            waker.clear()
            if meta.get("deletionTimestamp"):
                return
            if lease is not None and not lease.leading():
                await lease.wait_leading()
                continue  # decide on what the watches show now, not before the wait
            source: Any = body
            if written is not None and _older(body, written):
                # kopf's watch of the job lags behind this loop's own write (e.g. reconnecting
                # after an API outage): decide on the job as the server holds it, rather than
                # repeat the last plan and its events on the copy kopf still shows.
                source = written
            else:
                written = None
            job, ignored = _readable_job(source, ignored, logger)
            started = time.monotonic()
            plan = decide(job, observe.observe(job, ftjob_pods, ftjob_started_specs, refusals,
                                               ftjob_workloads, ftjob_flavors),
                          datetime.now(timezone.utc), config)
            try:
                # The status and Events first, kept even when an action then fails: the
                # retry decides from the new status and does not explain it again.
                recorded = await kube.record(plan, job)
                acts = kube.acts_after(plan, recorded)
                written = _as_decided(recorded) if recorded else written
                del recorded  # the whole job as written: not held while this loop waits
                if acts:
                    await kube.carry_out(plan, job)
            except leadership.NotLeading as exc:
                logger.warning("%s: %s not written; deciding again once leading", exc,
                               plan.case)
                continue
            except (k8s.TransientApiError, k8s.RejectedError) as exc:
                failures += 1
                delay = _refused(exc, failures, plan, refusals, body, logger)
                await _sleep(waker, stopped, delay, wake_early=False)
                continue
            failures = 0
            refusals.cleared()
            _record(memo, plan, time.monotonic() - started)
            if plan.status:
                logger.info("%s: %s", plan.case, plan.status.get("message") or plan.status)
            if plan.status or plan.actions:
                # Decide again only once the watches show what we just did, so the next
                # decision does not start from the state we just replaced (and repeat it).
                await _until(lambda: _reflected(plan, key, body, ftjob_pods,
                                                ftjob_started_specs, ftjob_workloads),
                             waker, stopped, max(SETTLE_SECONDS, config.resync_seconds))
                continue
            wait = config.resync_seconds
            if plan.requeue_after is not None:
                wait = min(wait, max(plan.requeue_after, 0.05))
            await _sleep(waker, stopped, wait)
    finally:
        if lease is not None:
            lease.unwant()
        memo.wakers.pop(key, None)


def _as_decided(job: dict[str, Any]) -> dict[str, Any]:
    """What a decision reads of a job (JobState.from_body, deletion, resourceVersion): the
    job a status write returned is kept until kopf's copy catches up, without the rest
    (managedFields are most of it), in every job loop at once."""
    meta = job.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in ("name", "namespace", "uid", "generation",
                                              "resourceVersion", "deletionTimestamp")
                         if k in meta},
            "spec": job.get("spec"), "status": job.get("status")}


def _older(body: kopf.Body, written: dict[str, Any]) -> bool:
    """Whether kopf's copy of the job predates `written` (the server's answer to this loop's
    last status write). resourceVersions are etcd revisions, which only grow; where one is
    not a number (another store), kopf's copy is taken as current, as before."""
    mine = str((written.get("metadata") or {}).get("resourceVersion") or "")
    seen = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return mine.isdigit() and seen.isdigit() and int(seen) < int(mine)


def _refused(exc: Exception, failures: int, plan: Plan, refusals: observe.Refusals,
             body: kopf.Body, logger: logging.Logger) -> float:
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
        kopf.event(body, type=EventType.WARNING, message=str(exc),
                   reason=Reason.OBJECT_OWNED_BY_OTHER if owned else Reason.API_REJECTED)
    if owned:
        refusals.conflicted(str(exc), datetime.now(timezone.utc))
    elif isinstance(exc, k8s.CreateRejectedError):
        refusals.refused(str(exc), datetime.now(timezone.utc))
    if (owned or isinstance(exc, k8s.CreateRejectedError)) and plan.requeue_after is not None:
        delay = min(delay, max(plan.requeue_after, 0.05))  # e.g. when the allowance ends
    logger.warning("%s; retrying in %.1fs", exc, delay)
    return delay


def _readable_job(body: kopf.Body, ignored: list[str], logger: logging.Logger
                  ) -> tuple[JobState, list[str]]:
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


async def _sleep(waker: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float,
                 wake_early: bool = True) -> None:
    if stopped:
        return
    try:
        if wake_early:
            await asyncio.wait_for(waker.wait(), timeout=seconds)
        else:
            await asyncio.sleep(seconds)
    except asyncio.TimeoutError:
        pass


def _reflected(plan: Plan, key: tuple[str, str], body: kopf.Body, pods_index: kopf.Index,
               specs_index: kopf.Index, workloads_index: kopf.Index | None = None) -> bool:
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
            # Until kopf's copy shows the deletion, a decision would delete (and explain) it
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


async def _until(done: Any, waker: asyncio.Event, stopped: kopf.DaemonStopped,
                 timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not stopped and not done():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        waker.clear()
        await _sleep(waker, stopped, left)


# --------------------------------------------------------------------------- metrics


_METRICS: dict[str, Any] = {}  # one registry per process, even if the operator restarts in it


def _metrics(config: Settings) -> dict[str, Any] | None:
    if config.metrics_port is None:
        return None
    try:
        import prometheus_client as prom
    except ImportError:
        log.warning("FTJOB_METRICS_PORT is set but prometheus-client is not installed")
        return None
    if _METRICS:
        return _METRICS
    _METRICS.update({
        "decisions": prom.Counter("ftjob_operator_decisions_total",
                                  "Reconcile decisions by case", ["case"]),
        "latency": prom.Histogram("ftjob_operator_decision_seconds",
                                  "Time to decide and apply one plan"),
    })
    prom.start_http_server(config.metrics_port)
    return _METRICS


def _record(memo: kopf.Memo, plan: Plan, seconds: float) -> None:
    metrics = getattr(memo, "metrics", None)
    if metrics:
        metrics["decisions"].labels(case=plan.case).inc()
        metrics["latency"].observe(seconds)
