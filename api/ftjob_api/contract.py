"""The contract between the operator and the trainer container.

The operator renders pods that set these environment variables and mounts; the trainer
reads them, reports progress into `status.progress` / `status.checkpoint`, and ends with
one of these exit codes and a one-line JSON summary in the termination-message file. The
operator classifies the exit code to decide between failing, restarting and resuming.
Documented for users in docs/exit-codes.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from enum import IntEnum


def rfc3339(moment: datetime | float) -> str:
    """A status timestamp (`progress.updatedAt`, `attempts[].startTime`...): UTC, whole
    seconds, `Z`. Takes a datetime or seconds since the epoch (`time.time()`)."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- environment

ENV_JOB_FILE = "FTJOB_JOB_FILE"  # JSON {"metadata": {name, namespace, uid}, "spec": {...}}
ENV_OUTPUT_DIR = "FTJOB_OUTPUT_DIR"  # output_dir on the job's volume
ENV_JOB_NAME = "FTJOB_JOB_NAME"
ENV_NAMESPACE = "FTJOB_NAMESPACE"
ENV_JOB_UID = "FTJOB_JOB_UID"
ENV_JOB_DIGEST = "FTJOB_JOB_DIGEST"  # job_digest() of the job file the pod was created for
ENV_ATTEMPT = "FTJOB_ATTEMPT"
ENV_TERMINATION_LOG = "FTJOB_TERMINATION_LOG"  # default /dev/termination-log
ENV_REPORTER = "FTJOB_REPORTER"  # "kubernetes" | "console" | "none"
ENV_PROGRESS_INTERVAL = "FTJOB_PROGRESS_INTERVAL"  # seconds between progress writes
ENV_METRICS_PORT = "FTJOB_METRICS_PORT"  # Prometheus port on rank 0; unset = off
ENV_DEEPSPEED_CONFIG = "FTJOB_DEEPSPEED_CONFIG"  # file of spec.deepspeed.configMapRef, mounted
# The export pod's (spec.output; see EXPORT_COMMAND below), empty on the training pods.
ENV_PUSH_CONFIG = "FTJOB_PUSH_CONFIG"  # file: spec.output.oci.pushSecretRef's .dockerconfigjson
ENV_REGISTRY_CA = "FTJOB_REGISTRY_CA"  # file: spec.output.oci.caConfigMapRef's CA bundle
ENV_GOODPUT = "FTJOB_GOODPUT"  # JSON: status.goodput as training ended, for the model card
# A user's switch (the one FTJOB_* variable `spec.env` may set): "1" shows the full reports
# that are otherwise cut to one line (torchrun's failure report, the CLI's tracebacks).
ENV_DEBUG = "FTJOB_DEBUG"
USER_SETTABLE_ENV = frozenset({ENV_DEBUG})


def debugging(env: Mapping[str, str]) -> bool:
    """Whether FTJOB_DEBUG asks for the full reports ("", unset and "0" do not)."""
    return env.get(ENV_DEBUG, "") not in ("", "0")
# Set by ftjob-launch for its ranks (the launcher overwrites whatever the pod has).
ENV_STOP_FILE = "FTJOB_STOP_FILE"  # exists once a graceful stop was requested
ENV_RESULT_DIR = "FTJOB_RESULT_DIR"  # per-rank failure files and rank 0's result
# The trainer's fault injection for the project's own tests (ftjob_trainer/testing.py).
ENV_TEST_MODE = "FTJOB_TEST_MODE"
ENV_TEST_HANG_AT_STEP = "FTJOB_TEST_HANG_AT_STEP"
ENV_TEST_HANG_RANK = "FTJOB_TEST_HANG_RANK"

# Every FTJOB_* variable the trainer image reads (its training pods' and its export pod's,
# spec.output). Each pod sets all of them explicitly
# (empty when ftjob has nothing to set; the trainer treats empty as unset): explicit `env`
# wins over `envFrom`, so a user ConfigMap or Secret in `spec.podTemplate.envFrom` can
# never supply one, the test hooks included.
TRAINER_ENV = (
    ENV_JOB_FILE, ENV_OUTPUT_DIR, ENV_JOB_NAME, ENV_NAMESPACE, ENV_JOB_UID, ENV_JOB_DIGEST,
    ENV_ATTEMPT,
    ENV_TERMINATION_LOG, ENV_REPORTER, ENV_PROGRESS_INTERVAL, ENV_METRICS_PORT,
    ENV_DEEPSPEED_CONFIG, ENV_STOP_FILE, ENV_RESULT_DIR, ENV_TEST_MODE, ENV_TEST_HANG_AT_STEP,
    ENV_TEST_HANG_RANK, ENV_DEBUG, ENV_PUSH_CONFIG, ENV_REGISTRY_CA, ENV_GOODPUT,
)

# Variables users may not set in `spec.env`: ftjob's own, and those torchrun, NCCL,
# DeepSpeed and the Hugging Face cache get from the operator or the launcher.
RESERVED_ENV = frozenset(
    {
        "MASTER_ADDR",
        "MASTER_PORT",
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "NODE_RANK",
        "TORCHELASTIC_RUN_ID",
        "PET_NNODES",
        "PET_NPROC_PER_NODE",
        "PET_NODE_RANK",
        "PET_MASTER_ADDR",
        "PET_MASTER_PORT",
        "NCCL_SOCKET_IFNAME",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING",
        "DS_ACCELERATOR",
        "HF_TOKEN",
        "HF_HOME",
    }
)
RESERVED_ENV_PREFIX = "FTJOB_"


def is_reserved_env(name: str) -> bool:
    if name in USER_SETTABLE_ENV:
        return False
    return name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIX)


# Variables that change where credentials go or what code loads: the Hub endpoint the token
# is sent to, the dynamic loader's and the interpreter's search paths and preloads, the
# NVIDIA container runtime's device and capability requests. Refused in `spec.env` and as
# what an `envFrom` prefix could make; the proxy variables (any case: urllib, requests and
# curl read both) only unless the operator allows proxies.
GUARDED_ENV = frozenset({"HF_ENDPOINT"})
GUARDED_ENV_PREFIXES = ("LD_", "PYTHON", "NVIDIA_")
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def guarded_env(name: str, allow_proxy: bool = False) -> str | None:
    """Why `name` may not be set by a job (what it controls), or None when it may."""
    if name in GUARDED_ENV:
        return "it chooses the server the Hugging Face token is sent to"
    if any(name.startswith(p) for p in GUARDED_ENV_PREFIXES):
        return "it changes what code the trainer loads or which devices it gets"
    if not allow_proxy and name.upper() in PROXY_ENV:
        return "it sends the trainer's connections, credentials included, through a proxy"
    return None


def guarded_env_from_prefix(prefix: str, allow_proxy: bool = False) -> str | None:
    """A guarded name that `prefix` followed by some key of a ConfigMap or Secret would make
    (an example), or None when no key can make one. An empty prefix makes any name: the
    caller decides what that means."""
    if not prefix:
        return None
    for name in sorted(GUARDED_ENV):
        if len(name) > len(prefix) and name.startswith(prefix):
            return name
    for guarded in GUARDED_ENV_PREFIXES:
        if prefix.startswith(guarded):
            return f"{prefix}KEY"
        if guarded.startswith(prefix):
            return f"{guarded}KEY"
    if not allow_proxy:
        for name in PROXY_ENV:
            if len(name) > len(prefix) and name.startswith(prefix.upper()):
                rest = name[len(prefix):]
                return prefix + (rest.lower() if prefix.islower() else rest)
    return None


# Spec fields that take effect while a job runs (the operator reads them from the FineTuneJob,
# not from the job file); edits to any other field after the start are ignored.
MUTABLE_SPEC_FIELDS = ("suspend", "restartPolicy", "activeDeadlineSeconds",
                       "ttlSecondsAfterFinished", "cleanPodPolicy")


def job_digest(document: dict) -> str:
    """SHA-256 of a job file's document (`{"metadata", "spec"}`) without the spec fields that
    take effect after the start: what the operator records as `status.startedSpecDigest` and
    gives each pod as FTJOB_JOB_DIGEST, and what the trainer checks its job file against."""
    spec = document.get("spec") if isinstance(document.get("spec"), dict) else {}
    canonical = {"metadata": document.get("metadata"),
                 "spec": {k: v for k, v in spec.items() if k not in MUTABLE_SPEC_FIELDS}}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


DEFAULT_TERMINATION_LOG = "/dev/termination-log"
DEFAULT_OUTPUT_DIR = "/output"
JOB_FILE_MOUNT_DIR = "/etc/ftjob"
JOB_FILE_NAME = "job.json"
# In the output folder, written by rank 0 before anything else: the uid (and name) of the job
# that owns the folder; a job with another uid neither resumes from it nor writes into it.
OUTPUT_OWNER_FILE_NAME = ".ftjob-owner.json"
# In the output folder (spec.output): the base model with the LoRA adapter merged in.
MERGED_DIR_NAME = "merged"
# In the output folder (spec.output): the delivery's result, as status.output reports it.
OUTPUT_RESULT_FILE_NAME = "output.json"
# The export step (spec.output): after the training pods succeeded, the operator runs one
# export pod per try: the trainer image's `ftjob-export` on the job's output claim (gate,
# merge, model card, push). It ends with an exit code below and, as its termination
# message, the JSON of status.output (camelCase: phase, reference, digest, size, gate,
# pushedAt, message).
EXPORT_COMMAND = ("ftjob-export",)
PUSH_CONFIG_VOLUME = "push-config"
PUSH_CONFIG_MOUNT_DIR = "/etc/ftjob-push"
PUSH_CONFIG_KEY = ".dockerconfigjson"  # the key of a kubernetes.io/dockerconfigjson Secret
REGISTRY_CA_VOLUME = "registry-ca"
REGISTRY_CA_MOUNT_DIR = "/etc/ftjob-registry-ca"
DEEPSPEED_CONFIG_MOUNT_DIR = "/etc/ftjob-deepspeed"
DEEPSPEED_CONFIG_FILE_NAME = "ds_config.json"
SHM_MOUNT_DIR = "/dev/shm"
# The trainer's root filesystem is read-only; these two are its writable scratch folders
# (temporary files, nvcc's and torch's compile folders; the image's HOME with the caches
# that are not on the output volume, e.g. matplotlib's).
TMP_MOUNT_DIR = "/tmp"
HOME_DIR = "/home/ftjob"  # HOME of the trainer image
# Volume names the pod already uses (user volumes need other names).
OUTPUT_VOLUME = "output"
JOB_FILE_VOLUME = "job-spec"
SHM_VOLUME = "dshm"
DEEPSPEED_CONFIG_VOLUME = "deepspeed-config"
TMP_VOLUME = "tmp"
HOME_VOLUME = "home"
RESERVED_VOLUME_NAMES = (OUTPUT_VOLUME, JOB_FILE_VOLUME, SHM_VOLUME, DEEPSPEED_CONFIG_VOLUME,
                         TMP_VOLUME, HOME_VOLUME, PUSH_CONFIG_VOLUME, REGISTRY_CA_VOLUME)
# Paths the pod already uses; user volumes may not be mounted over or under them.
RESERVED_MOUNT_PATHS = (DEFAULT_OUTPUT_DIR, JOB_FILE_MOUNT_DIR, DEEPSPEED_CONFIG_MOUNT_DIR,
                        SHM_MOUNT_DIR, TMP_MOUNT_DIR, HOME_DIR, PUSH_CONFIG_MOUNT_DIR,
                        REGISTRY_CA_MOUNT_DIR)
RDZV_PORT = 29500
METRICS_PORT_NAME = "metrics"  # container port of rank 0's Prometheus endpoint
TERMINATION_MESSAGE_LIMIT = 4096  # bytes the kubelet keeps of a termination message


def metrics_port_problem(port: int) -> str | None:
    """Why the trainer cannot serve metrics on `port`, or None when it can."""
    if not 1024 <= port <= 65535:
        return (f"{port} is not a port the trainer (not root) can open; use 1024-65535, "
                "or 0 for no metrics")
    if port == RDZV_PORT:
        return f"{port} is torchrun's rendezvous port; pick another"
    return None


# --------------------------------------------------------------------------- exit codes


class ExitCode(IntEnum):
    SUCCEEDED = 0
    UNKNOWN = 1  # anything unclassified: retryable, counts against maxRestarts
    INVALID_SPEC = 10  # permanent: the job spec cannot work (e.g. unknown model class)
    INVALID_DATA = 11  # permanent: missing column, unreadable file, label out of range
    INVALID_MODEL = 12  # permanent: no model at the path, unknown Hub id
    OUTPUT_OWNED_BY_OTHER_JOB = 13  # permanent: the output folder holds another job's uid
    OUT_OF_MEMORY = 20  # retryable: CUDA/CPU out of memory
    DISTRIBUTED_TIMEOUT = 21  # retryable: NCCL/gloo or rendezvous timeout, peer lost
    JOB_FILE_REPLACED = 22  # retryable: the mounted job file is another job's (being replaced)
    # The export step (spec.output): not a training pod's, never a gang restart.
    EXPORT_REFUSED = 14  # permanent: the registry refused (credentials, denied), bad target
    EXPORT_RETRYABLE = 23  # retryable: registry unreachable or failing, disk full, timeout
    PREEMPTED = 30  # stopped on SIGTERM after saving a checkpoint; restart without cost


PERMANENT_EXIT_CODES = frozenset(
    {ExitCode.INVALID_SPEC, ExitCode.INVALID_DATA, ExitCode.INVALID_MODEL,
     ExitCode.OUTPUT_OWNED_BY_OTHER_JOB, ExitCode.EXPORT_REFUSED}
)
PREEMPTED_EXIT_CODES = frozenset({ExitCode.PREEMPTED})

EXIT_REASONS = {
    ExitCode.SUCCEEDED: "Succeeded",
    ExitCode.UNKNOWN: "Error",
    ExitCode.INVALID_SPEC: "InvalidSpec",
    ExitCode.INVALID_DATA: "InvalidData",
    ExitCode.INVALID_MODEL: "InvalidModel",
    ExitCode.OUTPUT_OWNED_BY_OTHER_JOB: "OutputOwnedByOtherJob",
    ExitCode.OUT_OF_MEMORY: "OutOfMemory",
    ExitCode.DISTRIBUTED_TIMEOUT: "DistributedTimeout",
    ExitCode.JOB_FILE_REPLACED: "JobFileReplaced",
    ExitCode.EXPORT_REFUSED: "ExportRefused",
    ExitCode.EXPORT_RETRYABLE: "ExportRetryable",
    ExitCode.PREEMPTED: "Preempted",
}


def exit_reason(code: int) -> str:
    try:
        return EXIT_REASONS[ExitCode(code)]
    except ValueError:
        if code > 128:
            return f"Signal{code - 128}"
        return "Error"


def is_permanent(code: int) -> bool:
    return code in PERMANENT_EXIT_CODES


def is_preempted(code: int) -> bool:
    return code in PREEMPTED_EXIT_CODES


# --------------------------------------------------------------------------- failure order

# The one order of failure kinds, most significant first, for the trainer (which rank's
# failure explains the run) and the operator (which rank's failure explains the restart): a
# permanent problem explains everything after it, a preemption explains the peers that died
# with it, and only then do retryable failures count.
FAILURE_KINDS = ("permanent", "preempted", "retryable")
# Among retryable exit codes, a known resource failure explains more than an unknown one.
RESOURCE_EXIT_CODES = frozenset({ExitCode.OUT_OF_MEMORY, ExitCode.DISTRIBUTED_TIMEOUT})


def failure_kind(code: int) -> str:
    if is_permanent(code):
        return "permanent"
    return "preempted" if is_preempted(code) else "retryable"


def kind_significance(kind: str) -> int:
    """0 for the most significant kind; unknown kinds last."""
    return FAILURE_KINDS.index(kind) if kind in FAILURE_KINDS else len(FAILURE_KINDS)


def exit_significance(code: int) -> tuple[int, int]:
    """Sort key of an exit code: its kind, then a known resource failure before the rest."""
    return kind_significance(failure_kind(code)), 0 if code in RESOURCE_EXIT_CODES else 1
