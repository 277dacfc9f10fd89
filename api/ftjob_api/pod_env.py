"""The trainer's fixed environment, from a job's spec: one builder for a pod (`render`, in the
operator) and for `ftjob run --local` (the trainer's `local.py`).

Pure: each side passes what only it knows (the job's identity in the cluster, the attempt,
the operator's defaults, the mounted files) and adds its own variables around the result.
"""

from __future__ import annotations

from . import api, contract


def metrics_port(spec: api.FineTuneJobSpec, default: int | None = None) -> int | None:
    """Rank 0's Prometheus port: the job's `monitoring.metricsPort`, else `default`; None
    when off (0 turns off a default)."""
    port = spec.monitoring.metrics_port
    return (default if port is None else port) or None


def progress_interval(spec: api.FineTuneJobSpec, default: int | None = None) -> int | None:
    """Seconds between progress writes: the job's `monitoring.progressIntervalSeconds`, else
    `default` (None: the trainer's own default)."""
    return spec.monitoring.progress_interval_seconds or default


def trainer_env(spec: api.FineTuneJobSpec, *, job_file: str, output_dir: str, job_name: str,
                reporter: str, namespace: str | None = None, job_uid: str | None = None,
                job_digest: str | None = None,
                attempt: int | None = None, termination_log: str | None = None,
                hf_home: str | None = None, metrics_port_default: int | None = None,
                progress_interval_default: int | None = None,
                deepspeed_config: str | None = None) -> dict[str, str]:
    """The contract variables (`contract.ENV_*`) the trainer reads, by name, in the order a
    pod lists them; one whose value is None is left out. `hf_home`: the Hub cache (a pod
    sets it; a local run keeps the user's). `deepspeed_config`: the file
    `spec.deepspeed.configMapRef` is mounted as (pods only)."""
    interval = progress_interval(spec, progress_interval_default)
    port = metrics_port(spec, metrics_port_default)
    values: dict[str, str | None] = {
        contract.ENV_JOB_FILE: job_file,
        contract.ENV_OUTPUT_DIR: output_dir,
        contract.ENV_JOB_NAME: job_name,
        contract.ENV_NAMESPACE: namespace,
        contract.ENV_JOB_UID: job_uid,
        contract.ENV_JOB_DIGEST: job_digest,
        contract.ENV_ATTEMPT: None if attempt is None else str(attempt),
        contract.ENV_REPORTER: reporter,
        contract.ENV_PROGRESS_INTERVAL: None if interval is None else str(interval),
        contract.ENV_TERMINATION_LOG: termination_log,
        "HF_HOME": hf_home,
        contract.ENV_METRICS_PORT: None if port is None else str(port),
        contract.ENV_DEEPSPEED_CONFIG: deepspeed_config,
    }
    return {name: value for name, value in values.items() if value is not None}
