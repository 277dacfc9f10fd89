"""kopf glue: what kopf runs of the operator (start-up, login, clean-up, the admission
webhook's server, peering). The rest is the operator's own: the watches of the jobs and
their children (watches.py) and one loop per FineTuneJob (job_loops.py), started here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from typing import Any

import kopf

from . import admission, job_loops, k8s, leadership, watches
from .settings import Settings, from_env

log = logging.getLogger("ftjob_operator")


def configure_kopf(kopf_settings: kopf.OperatorSettings, settings: Settings) -> None:
    # The operator posts its own Events (k8s.Kube.post_events); not every log line.
    kopf_settings.posting.level = logging.CRITICAL + 10
    kopf_settings.networking.request_timeout = 60
    # After an API outage, kopf's own watches (peering) retry on this schedule (its default
    # grows to 21 s between tries): as long in total (about a minute before kopf gives up),
    # at most 5 s apart.
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
        # The Lease picks the replica that writes and fences its writes (leadership.py);
        # every replica watches, so a standby takes over with its indexes already full.
        memo.leadership = leadership.Leadership(k8s.load_api_client(config),
                                                config.lease_namespace or "", config.peering)
        # Every replica runs the job loops (job_loops.py), which wait for the Lease: the
        # first replica to start takes it and keeps it; the others wait their turn (an older
        # replica is not displaced by a newer one, as in a rolling update).
        memo.leadership.want()
        memo.leadership.start()
        memo.kube.fence = memo.leadership.check
    # The jobs and their children (watches.py); each job's loop (job_loops.py), started and
    # woken by what the watches see (they call back only once started, below).
    loops: job_loops.JobLoops
    memo.watches = watches.Watches(k8s.load_api_client(config), config.namespaces,
                                   lambda keys: loops.jobs_changed(keys),
                                   lambda keys: loops.children_changed(keys),
                                   config.watch_seconds)
    memo.loops = loops = job_loops.JobLoops(job_loops.Context(
        config, memo.kube, memo.watches, memo.leadership, _metrics(config)))
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
    loops = getattr(memo, "loops", None)
    if loops is not None:
        await loops.stop()
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
