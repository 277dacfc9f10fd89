"""Operator settings, read once from the environment at startup.

Builders and the decision function never read the environment themselves: they get a
`Settings` value. The Helm chart sets these variables; docs/operator.md lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ftjob_api import contract
from ftjob_api.validation import Allowed

DEFAULT_TRAINER_IMAGE = "ghcr.io/ftjob/trainer:0.1.0"


class SettingsError(ValueError):
    """An environment variable with a value the operator cannot use."""


@dataclass(frozen=True)
class Settings:
    trainer_image: str = DEFAULT_TRAINER_IMAGE
    trainer_image_pull_policy: str = "IfNotPresent"
    trainer_image_pull_secrets: tuple[str, ...] = ()  # Secrets the training pods pull with
    # Defaults of a job's `spec.monitoring`: rank 0's Prometheus port (None: off) and the
    # least seconds between two progress writes.
    trainer_metrics_port: int | None = None
    trainer_progress_interval: int = 5
    storage_class: str | None = None  # default StorageClass of created claims
    storage_size: str | None = None  # default claim size when the spec leaves the default
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    log_level: str = "INFO"
    log_format: str = "text"
    peering: str | None = None  # kopf peering name; None runs standalone
    # How long a replica counts as alive in kopf's peering after its last keep-alive (kopf
    # sends keep-alives 5-10 s before it runs out); the hand-over follows the Lease.
    peering_lifetime: int = 30
    # Where the replicas' Lease lives (leadership.py; with peering only): the operator's
    # own namespace (the chart passes the pod's).
    lease_namespace: str | None = None
    liveness_port: int = 8080
    metrics_port: int | None = None
    # Longest wait between two looks at a job when nothing happens (timers, lost events).
    resync_seconds: float = 30.0
    # Concurrent blocking API calls (the kubernetes client is synchronous).
    api_workers: int = 16
    # Validating admission webhook (docs/operator.md): served when a port is set.
    webhook_port: int | None = None
    webhook_addr: str | None = None  # listen address; None: every interface
    webhook_hosts: tuple[str, ...] = ()  # names/IPs the API server calls (self-signed SANs)
    webhook_cert_dir: str | None = None  # tls.crt and tls.key (cert-manager); None: self-signed
    webhook_configuration: str | None = None  # ValidatingWebhookConfiguration to put the CA into
    # The webhook refuses a job whose author may not read the Secrets, ConfigMaps and claims
    # it references, or create pods (admission.check_access).
    check_reference_access: bool = True
    # What jobs may ask of their pods beyond the defaults (validation.Allowed): proxy
    # variables, RuntimeClasses, prefixes of pod annotation keys.
    allow_proxy_env: bool = False
    allowed_runtime_classes: tuple[str, ...] = ()
    allowed_annotation_prefixes: tuple[str, ...] = ()
    # Longest a watch request stays open before the server closes it and the operator
    # resumes it from the last version seen (Kubernetes picks 5-10 minutes for its own).
    watch_seconds: int = 300
    # Test-only (faults.py): points of a plan where the operator kills itself.
    fault_points: frozenset[str] = frozenset()

    @property
    def allowed(self) -> Allowed:
        """What validation lets a job do under these settings (webhook and operator)."""
        return Allowed(proxy_env=self.allow_proxy_env,
                       runtime_classes=self.allowed_runtime_classes,
                       annotation_prefixes=self.allowed_annotation_prefixes)


_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected an integer, got {raw!r}") from None
    return value


def _port(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    value = _int(env, name, default)
    if value is not None and not 0 < value < 65536:
        raise SettingsError(f"{name}: port out of range: {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false", "1", "0"):
        raise SettingsError(f"{name}: expected true or false, got {raw!r}")
    return raw in ("true", "1")


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of names; empty entries are ignored."""
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


def from_env(env: Mapping[str, str]) -> Settings:
    """Build settings from an environment mapping (pass `os.environ`)."""
    pull = env.get("FTJOB_TRAINER_IMAGE_PULL_POLICY", "").strip() or "IfNotPresent"
    if pull not in _PULL_POLICIES:
        raise SettingsError(
            f"FTJOB_TRAINER_IMAGE_PULL_POLICY: expected one of {', '.join(_PULL_POLICIES)}, "
            f"got {pull!r}"
        )
    level = (env.get("FTJOB_LOG_LEVEL", "").strip() or "INFO").upper()
    if level not in _LEVELS:
        raise SettingsError(f"FTJOB_LOG_LEVEL: expected one of {', '.join(_LEVELS)}, got {level!r}")
    fmt = env.get("FTJOB_LOG_FORMAT", "").strip() or "text"
    if fmt not in ("text", "json"):
        raise SettingsError(f"FTJOB_LOG_FORMAT: expected text or json, got {fmt!r}")
    resync_raw = env.get("FTJOB_RESYNC_SECONDS", "").strip()
    try:
        resync = float(resync_raw) if resync_raw else 30.0
    except ValueError:
        raise SettingsError(f"FTJOB_RESYNC_SECONDS: expected seconds, got {resync_raw!r}") from None
    if resync <= 0:
        raise SettingsError(f"FTJOB_RESYNC_SECONDS: must be positive, got {resync_raw!r}")
    namespaces = _names(env, "FTJOB_NAMESPACES")
    trainer_metrics_port = _int(env, "FTJOB_TRAINER_METRICS_PORT", 0) or None
    why = contract.metrics_port_problem(trainer_metrics_port) if trainer_metrics_port else None
    if why:
        raise SettingsError(f"FTJOB_TRAINER_METRICS_PORT: {why}")
    interval = _int(env, "FTJOB_TRAINER_PROGRESS_INTERVAL", 5)
    if not 1 <= interval <= 60:
        raise SettingsError(f"FTJOB_TRAINER_PROGRESS_INTERVAL: expected 1-60 seconds, got "
                            f"{interval}")
    peering_lifetime = _int(env, "FTJOB_PEERING_LIFETIME", 30)
    if not 15 <= peering_lifetime <= 300:
        raise SettingsError(f"FTJOB_PEERING_LIFETIME: expected 15-300 seconds, got "
                            f"{peering_lifetime}")
    peering = env.get("FTJOB_PEERING", "").strip() or None
    lease_namespace = env.get("FTJOB_LEASE_NAMESPACE", "").strip() or None
    if peering and not lease_namespace:
        raise SettingsError("FTJOB_LEASE_NAMESPACE: required with FTJOB_PEERING (the "
                            "namespace of the replicas' Lease; the chart sets the pod's own)")
    watch_seconds = _int(env, "FTJOB_WATCH_SECONDS", 300)
    if not 1 <= watch_seconds <= 3600:
        raise SettingsError(f"FTJOB_WATCH_SECONDS: expected 1-3600 seconds, got {watch_seconds}")
    return Settings(
        trainer_image=env.get("FTJOB_TRAINER_IMAGE", "").strip() or DEFAULT_TRAINER_IMAGE,
        trainer_image_pull_policy=pull,
        trainer_image_pull_secrets=_names(env, "FTJOB_TRAINER_IMAGE_PULL_SECRETS"),
        trainer_metrics_port=trainer_metrics_port,
        trainer_progress_interval=interval,
        storage_class=env.get("FTJOB_STORAGE_CLASS", "").strip() or None,
        storage_size=env.get("FTJOB_STORAGE_SIZE", "").strip() or None,
        namespaces=namespaces,
        log_level=level,
        log_format=fmt,
        peering=peering,
        peering_lifetime=peering_lifetime,
        lease_namespace=lease_namespace,
        liveness_port=_port(env, "FTJOB_LIVENESS_PORT", 8080) or 8080,
        metrics_port=_port(env, "FTJOB_METRICS_PORT", None),
        resync_seconds=resync,
        api_workers=_int(env, "FTJOB_API_WORKERS", 16) or 16,
        webhook_port=_int(env, "FTJOB_WEBHOOK_PORT", None),
        webhook_addr=env.get("FTJOB_WEBHOOK_ADDR", "").strip() or None,
        webhook_hosts=_names(env, "FTJOB_WEBHOOK_HOSTS"),
        webhook_cert_dir=env.get("FTJOB_WEBHOOK_CERT_DIR", "").strip() or None,
        webhook_configuration=env.get("FTJOB_WEBHOOK_CONFIGURATION", "").strip() or None,
        check_reference_access=_bool(env, "FTJOB_WEBHOOK_CHECK_REFERENCE_ACCESS", True),
        allow_proxy_env=_bool(env, "FTJOB_ALLOW_PROXY_ENV", False),
        allowed_runtime_classes=_names(env, "FTJOB_ALLOWED_RUNTIME_CLASSES"),
        allowed_annotation_prefixes=_names(env, "FTJOB_ALLOWED_ANNOTATION_PREFIXES"),
        watch_seconds=watch_seconds,
        # `;`-separated: the case names (plan.Case) hold commas.
        fault_points=frozenset(p.strip() for p in env.get("FTJOB_FAULT_POINTS", "").split(";")
                               if p.strip()),
    )
