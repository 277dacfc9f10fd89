"""Failures -> exit codes, and the files that carry them from the workers to the launcher.

torchrun exits 1 whatever its workers' codes were, so each worker records its classified
failure in a per-rank JSON file; the launcher picks the most significant one and turns it
into the container's exit code and termination message. Everything here except the two
file helpers is pure.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ftjob_api import contract
from ftjob_api.contract import TERMINATION_MESSAGE_LIMIT, ExitCode, exit_reason


class TrainerError(Exception):
    """A failure whose exit code is known where it is raised."""

    code: ExitCode = ExitCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSpec(TrainerError):
    code = ExitCode.INVALID_SPEC


class InvalidData(TrainerError):
    code = ExitCode.INVALID_DATA


class InvalidModel(TrainerError):
    code = ExitCode.INVALID_MODEL


class OutputOwnedByOtherJob(TrainerError):
    """The output folder belongs to another job (another uid): permanent, nothing resumed or
    written, unless the spec says `storage.adoptPreviousOutput: true`."""

    code = ExitCode.OUTPUT_OWNED_BY_OTHER_JOB


class JobFileReplaced(TrainerError):
    """The mounted job file is another job's (a job deleted and created again under the same
    name, its ConfigMap not yet replaced): retryable, the next attempt mounts the new one."""

    code = ExitCode.JOB_FILE_REPLACED


class HubUnreachable(TrainerError):
    """The Hub could not be reached: retryable, unlike a model or data set that is not there."""

    code = ExitCode.UNKNOWN


_NETWORK_PATTERNS = re.compile(
    r"couldn't connect|could not connect|couldn't reach|connection|timed out|"
    r"name or service not known|temporary failure in name resolution|offline mode",
    re.IGNORECASE,
)


def is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return bool(_NETWORK_PATTERNS.search(str(exc)))


@dataclass(frozen=True)
class RankFailure:
    exit_code: int
    reason: str
    message: str
    rank: int = 0
    global_step: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_TIMEOUT_PATTERNS = re.compile(
    r"timed? ?out|timeout|connection reset by peer|connection refused|broken pipe|"
    r"nccl error|gloo.*(?:closed|error)|rendezvous|peer.*(?:closed|lost)",
    re.IGNORECASE,
)


def classify_exception(exc: BaseException, rank: int = 0) -> RankFailure:
    """Map an exception raised in a worker to a RankFailure (pure; no I/O)."""
    message = _short(str(exc) or type(exc).__name__)
    if isinstance(exc, TrainerError):
        code = exc.code
    elif _is_oom(exc):
        code = ExitCode.OUT_OF_MEMORY
    elif _is_distributed_timeout(exc):
        code = ExitCode.DISTRIBUTED_TIMEOUT
    else:
        code = ExitCode.UNKNOWN
        message = _short(f"{type(exc).__name__}: {message}")
    return RankFailure(int(code), exit_reason(code), message, rank)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    oom_type = _torch_attr("OutOfMemoryError")
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _is_distributed_timeout(exc: BaseException) -> bool:
    dist_types = tuple(
        t for t in (_torch_attr("distributed.DistBackendError"),
                    _torch_attr("distributed.DistNetworkError"),
                    _torch_attr("distributed.DistStoreError")) if t is not None
    )
    if dist_types and isinstance(exc, dist_types):
        return True
    return isinstance(exc, RuntimeError) and bool(_TIMEOUT_PATTERNS.search(str(exc)))


def _torch_attr(dotted: str) -> Any:
    try:
        import torch
    except ImportError:  # the launcher may run without torch in tests
        return None
    obj: Any = torch
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _short(text: str, limit: int = 1500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def most_significant(failures: list[RankFailure]) -> RankFailure | None:
    """The failure that explains the run: permanent > preempted > OOM/timeout > unknown.

    Ties go to the lowest rank, so the answer does not depend on file order.
    """
    if not failures:
        return None
    return min(failures, key=lambda f: (contract.exit_significance(f.exit_code), f.rank))


# --------------------------------------------------------------------------- summaries


def success_summary(result: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"status": "succeeded"}
    for key in ("globalStep", "resumedFromStep", "finalModel", "stoppedEarly", "search"):
        if result.get(key) is not None:
            summary[key] = result[key]
    summary["metrics"] = numeric_metrics(result.get("metrics") or {})
    return summary


def failure_summary(failure: RankFailure) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "status": "failed",
        "exitCode": failure.exit_code,
        "reason": failure.reason,
        "message": failure.message,
    }
    if failure.global_step is not None:
        summary["globalStep"] = failure.global_step
    return summary


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Only finite numbers: the operator copies these into status.metrics (map of numbers)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value != value or value in (float("inf"), float("-inf")):
            continue
        out[key] = float(value)
    return out


def encode_summary(summary: dict[str, Any], limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """One JSON line that fits the kubelet's termination-message limit.

    Shrinks the message first, then drops metrics, so status/exitCode always survive.
    """
    line = json.dumps(summary, separators=(",", ":"), sort_keys=True)
    if len(line.encode()) <= limit:
        return line
    trimmed = dict(summary)
    if isinstance(trimmed.get("message"), str):
        overflow = len(line.encode()) - limit
        keep = max(0, len(trimmed["message"]) - overflow - 16)
        trimmed["message"] = trimmed["message"][:keep] + "..."
        line = json.dumps(trimmed, separators=(",", ":"), sort_keys=True)
        if len(line.encode()) <= limit:
            return line
    if "metrics" in trimmed:
        trimmed["metrics"] = {}
        trimmed["metricsTruncated"] = True
    if isinstance(trimmed.get("message"), str):
        trimmed["message"] = trimmed["message"][:200]
    line = json.dumps(trimmed, separators=(",", ":"), sort_keys=True)
    return line[:limit]


# --------------------------------------------------------------------------- files

FAILURE_PREFIX = "failure-rank"
RESULT_FILE = "result.json"


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def write_failure(directory: str | os.PathLike[str], failure: RankFailure) -> Path:
    path = Path(directory) / f"{FAILURE_PREFIX}{failure.rank}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, failure.to_json())
    return path


def read_failures(directory: str | os.PathLike[str]) -> list[RankFailure]:
    failures = []
    for path in sorted(Path(directory).glob(f"{FAILURE_PREFIX}*.json")):
        try:
            data = json.loads(path.read_text())
            failures.append(RankFailure(**data))
        except (OSError, ValueError, TypeError):
            continue  # a rank killed mid-write: the others still tell the story
    return failures
