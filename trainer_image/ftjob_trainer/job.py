"""What a worker is asked to do: the mounted job file plus the environment, parsed once.

The operator mounts `{"metadata": {...}, "spec": {...}}` at $FTJOB_JOB_FILE; `ftjob run
--local` writes the same file. The spec is parsed with the API models and re-validated, so
a spec the operator accepted but this image cannot run fails with INVALID_SPEC and the
field names, not with a traceback.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ftjob_api import api, contract
from ftjob_api.problems import errors
from ftjob_api.validation import UNCHECKED, validate_spec

from .exits import InvalidSpec, JobFileReplaced

ENV_DEEPSPEED_CONFIG = contract.ENV_DEEPSPEED_CONFIG  # set by the operator with configMapRef
# Launcher-internal variables (not part of the operator contract: the launcher sets them).
ENV_STOP_FILE = contract.ENV_STOP_FILE  # exists once a graceful stop was requested
ENV_RESULT_DIR = contract.ENV_RESULT_DIR  # per-rank failure files and rank 0's result
# In ENV_RESULT_DIR once training began: a stop from then on saves a checkpoint (stopping.py)
TRAINING_STARTED = "training-started"

REPORTERS = ("kubernetes", "console", "none")


@dataclass(frozen=True)
class JobContext:
    name: str
    namespace: str | None
    spec: api.FineTuneJobSpec
    output_dir: Path
    attempt: int = 0  # written with status.progress (stall detection tells attempts apart)
    reporter: str = "none"
    progress_interval: float = 5.0
    metrics_port: int | None = None
    deepspeed_config: Path | None = None
    uid: str | None = None  # the job's uid ($FTJOB_JOB_UID, else the job file's); owns the output
    adopted_from_job_uid: str | None = None  # the output folder's previous owner, once adopted


def load_context(env: Mapping[str, str]) -> JobContext:
    job_file = env.get(contract.ENV_JOB_FILE) or str(
        Path(contract.JOB_FILE_MOUNT_DIR) / contract.JOB_FILE_NAME
    )
    document = read_job_file(job_file)
    uid = check_uid(document, env.get(contract.ENV_JOB_UID) or None, job_file)
    check_digest(document, env.get(contract.ENV_JOB_DIGEST) or None, job_file)
    # The operator's policy checks (guarded variables, RuntimeClasses, annotations) ran
    # before it started the job, under its settings, which the trainer does not know.
    problems = errors(validate_spec(document["spec"], allowed=UNCHECKED))
    if problems:
        raise InvalidSpec(f"{job_file}: " + "; ".join(str(p) for p in problems)
                          + _newer_operator_hint(problems))
    spec = api.parse_spec(document["spec"])

    metadata = document.get("metadata")
    metadata = {k: v for k, v in metadata.items() if isinstance(v, str) and v} \
        if isinstance(metadata, dict) else {}
    return JobContext(
        name=env.get(contract.ENV_JOB_NAME) or metadata.get("name") or "job",
        namespace=env.get(contract.ENV_NAMESPACE) or metadata.get("namespace"),
        spec=spec,
        output_dir=Path(env.get(contract.ENV_OUTPUT_DIR) or contract.DEFAULT_OUTPUT_DIR),
        attempt=_int(env, contract.ENV_ATTEMPT, 0) or 0,
        reporter=_reporter(env),
        progress_interval=_float(env, contract.ENV_PROGRESS_INTERVAL, 5.0),
        metrics_port=_int(env, contract.ENV_METRICS_PORT, None),
        deepspeed_config=_path(env, ENV_DEEPSPEED_CONFIG),
        uid=uid,
    )


def check_uid(document: dict, expected: str | None, job_file: str) -> str | None:
    """The job's uid: `expected` ($FTJOB_JOB_UID, set in every pod), which the job file must
    carry too; else the file's own (a local run), or None when neither says.

    A pod of a job deleted and created again under the same name can mount the old job's
    ConfigMap while it is being replaced: JobFileReplaced (retryable) instead of running
    another job's spec."""
    metadata = document.get("metadata")
    found = metadata.get("uid") if isinstance(metadata, dict) else None
    found = found if isinstance(found, str) and found else None
    if expected is not None and found != expected:
        raise JobFileReplaced(
            f"{job_file}: the job file is job uid {found or '(none)'}'s, this pod's job is uid "
            f"{expected} (the job's ConfigMap is being replaced: a job deleted and created "
            "again under the same name); the next attempt mounts the new one")
    return expected or found


def check_digest(document: dict, expected: str | None, job_file: str) -> None:
    """The job file must be the one the pod was created for ($FTJOB_JOB_DIGEST, set by the
    operator from status.startedSpecDigest's spec): someone with ConfigMap rights changed it,
    and the operator puts it back. JobFileReplaced (retryable) instead of running a spec
    nobody started."""
    if expected is not None and contract.job_digest(document) != expected:
        raise JobFileReplaced(
            f"{job_file}: the job file is not the spec this pod was created for ({expected}); "
            "its ConfigMap was changed after the job started and the operator puts it back; "
            "the next attempt mounts it")


def read_job_file(job_file: str) -> dict:
    """The mounted job document, or InvalidSpec naming the file and what is wrong with it."""
    try:
        raw = Path(job_file).read_bytes()
    except OSError as exc:
        raise InvalidSpec(f"{job_file}: cannot read the job file: {exc.strerror}") from exc
    if not raw.strip():
        raise InvalidSpec(f"{job_file}: the job file is empty")
    try:
        document = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise InvalidSpec(f"{job_file}: not UTF-8 JSON: {exc.reason} at byte {exc.start}") from exc
    except ValueError as exc:  # json.JSONDecodeError: message, line and column
        raise InvalidSpec(f"{job_file}: not valid JSON (truncated?): {exc}") from exc
    except RecursionError as exc:
        raise InvalidSpec(f"{job_file}: not valid JSON: nested too deeply") from exc
    if not isinstance(document, dict) or not isinstance(document.get("spec"), dict):
        raise InvalidSpec(f"{job_file}: expected an object with a `spec` mapping")
    return document


def _newer_operator_hint(problems: list) -> str:
    """Unknown fields in a file the operator wrote: the operator is newer than this image."""
    if not any(p.message.startswith("unknown field") for p in problems):
        return ""
    from ftjob_api import __version__

    return (f" (this trainer image knows the FineTuneJob fields of ftjob {__version__}; a newer "
            "operator wrote this job: use the trainer image of the operator's release)")


def _reporter(env: Mapping[str, str]) -> str:
    value = env.get(contract.ENV_REPORTER, "none") or "none"
    if value not in REPORTERS:
        raise InvalidSpec(f"{contract.ENV_REPORTER}={value!r}: use one of {', '.join(REPORTERS)}")
    return value


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidSpec(f"{name}={raw!r}: expected an integer") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise InvalidSpec(f"{name}={raw!r}: expected a number of seconds") from exc
    if not math.isfinite(value) or value < 0:
        raise InvalidSpec(f"{name}={raw!r}: expected a number of seconds")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name)
    return Path(raw) if raw else None


def world_rank() -> int:
    return int(os.environ.get("RANK", "0"))
