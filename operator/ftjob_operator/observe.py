"""Pure: child objects as the API shows them -> a small summary the decision reads.

The operator's indexes store `PodView`s (not whole pods) so memory stays flat with many
jobs, and `classify_pod_failure` turns a finished pod into a failure class from its exit
code, the kubelet's reason and the `DisruptionTarget` condition. `observe` puts together what
one decision reads: the job's pods and started spec from the indexes, and the API server's
refusals as remembered by a job loop's `Refusals`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import pydantic

from ftjob_api import api, contract, naming

from .kueue import Placement, WorkloadView, placement_of
from .plan import JobRef
from .reasons import Reason

FailureKind = Literal["permanent", "retryable", "preempted"]

MESSAGE_LIMIT = 1024


def parse_time(value: str | None) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


ROLE_RANK = "rank"
ROLE_EXPORT = naming.ROLE_EXPORT


@dataclass(frozen=True)
class PodView:
    """A rank pod of an attempt, or (`role` export) the export pod of a try: its try is
    `attempt`, its rank 0."""

    name: str
    job: str
    attempt: int
    rank: int
    owner_uid: str | None = None
    phase: str = "Pending"
    created_at: datetime | None = None
    deleting: bool = False
    exit_code: int | None = None
    container_reason: str | None = None  # e.g. OOMKilled, Error, Completed
    pod_reason: str | None = None  # e.g. Evicted, NodeLost
    pod_message: str | None = None
    termination_message: str | None = None
    disruption: str | None = None  # reason of a True DisruptionTarget condition
    node: str | None = None  # spec.nodeName once scheduled
    ready: bool = False  # the pod's Ready condition (what Kueue's PodsReady counts)
    role: str = ROLE_RANK  # ROLE_RANK, or ROLE_EXPORT for the export pod (spec.output)
    finished_at: datetime | None = None  # when the container terminated

    @property
    def terminated(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


@dataclass(frozen=True)
class PodFailure:
    kind: FailureKind
    reason: str
    message: str
    pod: str
    rank: int
    exit_code: int | None = None
    node: str | None = None

    def describe(self) -> str:
        code = f", exit code {self.exit_code}" if self.exit_code is not None else ""
        text = f"rank {self.rank} (pod {self.pod}) failed: {self.reason}{code}"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True)
class Refusal:
    """The API server has refused to create the job's pods (or objects) since `since`, the
    last time with `message`: a missing RuntimeClass, an exceeded ResourceQuota, a policy."""
    since: datetime
    message: str


@dataclass(frozen=True)
class Observed:
    pods: tuple[PodView, ...] = ()
    # The spec the job started with (its ConfigMap); None before the first start.
    started_spec: dict[str, Any] | None = None
    # Creates refused since when and why; None when the last attempt to create went through.
    refusal: Refusal | None = None
    # An object the job creates exists and is not its own, since when (and which: the
    # message); None when the last attempt to create went through.
    conflict: Refusal | None = None
    # The whole document of the started-spec ConfigMap (metadata and spec), for its digest.
    started_document: dict[str, Any] | None = None
    # That document's digest as the index computed it (None: compute it from the document).
    started_digest: str | None = None
    # The job's Kueue Workload (spec.scheduling.queueName), None when it has none.
    workload: WorkloadView | None = None
    # Where the flavors Kueue admitted the Workload with put the pods.
    placement: Placement = Placement()
    # The export pods (spec.output, one per try), never among `pods`.
    exports: tuple[PodView, ...] = ()


class Refusals:
    """Since when (and why) the API server refuses to create a job's objects, as one job loop
    saw it: `refused` after each refused create, `cleared` once a plan went through.

    Kept only in the loop, not in the cluster: an operator restart forgets it, which restarts
    the pendingTimeoutSeconds allowance for a refused job rather than failing it early."""

    def __init__(self) -> None:
        self.current: Refusal | None = None
        self.conflict: Refusal | None = None  # a create found an object owned by another

    def refused(self, message: str, now: datetime) -> Refusal:
        """Another refusal: the first one's time stays, the message is the latest."""
        self.current = Refusal(self.current.since if self.current else now, message)
        return self.current

    def conflicted(self, message: str, now: datetime) -> Refusal:
        """Another create found an object that is not the job's: the first time stays."""
        self.conflict = Refusal(self.conflict.since if self.conflict else now, message)
        return self.conflict

    def cleared(self) -> None:
        self.current = None
        self.conflict = None


def observe(job: JobRef, pods_index: Mapping[Any, Any], specs_index: Mapping[Any, Any],
            refusals: Refusals | None = None,
            workloads_index: Mapping[Any, Any] | None = None,
            flavors_index: Mapping[Any, Any] | None = None) -> Observed:
    """What one decision reads: the job's pods, its started spec and its Workload, from the
    indexes the watches keep (keyed by (namespace, job name)), and the refusal, if any."""
    key = (job.namespace, job.name)
    started = started_view(specs_index.get(key, ()), job.uid)
    document = started.document() if started is not None else None
    workload = next((w for w in (workloads_index or {}).get(key, ()) if w.owner_uid == job.uid),
                    None)
    flavors = {name: next(iter(views)) for name in (workload.flavors if workload else ())
               if (views := (flavors_index or {}).get(name))}
    children = tuple(pods_index.get(key, ()))
    return Observed(pods=tuple(p for p in children if p.role == ROLE_RANK),
                    exports=tuple(p for p in children if p.role == ROLE_EXPORT),
                    started_spec=document["spec"] if document is not None else None,
                    refusal=refusals.current if refusals is not None else None,
                    conflict=refusals.conflict if refusals is not None else None,
                    started_document=document,
                    started_digest=started.digest if started is not None else None,
                    workload=workload,
                    placement=placement_of(workload, flavors))


def _int_label(labels: dict[str, str], key: str) -> int | None:
    value = labels.get(key)
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) \
            or len(value) > 9:
        return None  # not a label ftjob wrote (ftjob writes small non-negative numbers)
    return int(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list_of_dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _role(labels: dict[str, str]) -> tuple[str, int | None, int | None]:
    """(role, attempt or try, rank) from a pod's labels: a rank pod has attempt and rank
    labels, the export pod its role and try (rank 0); None where a label is missing."""
    role = labels.get(naming.LABEL_ROLE)
    if role is None:
        return (ROLE_RANK, _int_label(labels, naming.LABEL_ATTEMPT),
                _int_label(labels, naming.LABEL_RANK))
    if role == ROLE_EXPORT:
        return ROLE_EXPORT, _int_label(labels, naming.LABEL_EXPORT_TRY), 0
    return str(role), None, None  # a role ftjob does not write


def pod_view(pod: dict[str, Any]) -> PodView | None:
    """Summarise a pod; None for a pod without ftjob's attempt/rank (or export) labels."""
    meta = _dict(_dict(pod).get("metadata"))
    labels = _dict(meta.get("labels"))
    role, attempt, rank = _role(labels)
    job = _str(labels.get(naming.LABEL_JOB))
    if attempt is None or rank is None or not job:
        return None
    owner_uid = next((_str(o.get("uid")) for o in _list_of_dicts(meta.get("ownerReferences"))
                      if o.get("controller") is True), None)
    status = _dict(pod.get("status"))
    exit_code = reason = message = finished_at = None
    for cs in _list_of_dicts(status.get("containerStatuses")):
        if cs.get("name") != naming.TRAINER_CONTAINER:
            continue
        term = _dict(_dict(cs.get("state")).get("terminated"))
        if term:
            code = term.get("exitCode")
            exit_code = code if isinstance(code, int) and not isinstance(code, bool) else None
            reason = _str(term.get("reason"))
            message = _str(term.get("message"))
            finished_at = parse_time(_str(term.get("finishedAt")))
            if finished_at is not None and finished_at.tzinfo is None:
                finished_at = None  # not the API server's RFC 3339
    disruption = next((_str(c.get("reason")) or "DisruptionTarget"
                       for c in _list_of_dicts(status.get("conditions"))
                       if c.get("type") == "DisruptionTarget" and c.get("status") == "True"), None)
    return PodView(
        name=_str(meta.get("name")) or "",
        job=job,
        attempt=attempt,
        rank=rank,
        owner_uid=owner_uid,
        phase=_str(status.get("phase")) or "Pending",
        created_at=parse_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
        exit_code=exit_code,
        container_reason=reason,
        pod_reason=_str(status.get("reason")),
        pod_message=_str(status.get("message")) or _unscheduled_message(status),
        termination_message=message,
        disruption=disruption,
        node=_str(_dict(pod.get("spec")).get("nodeName")),
        ready=any(c.get("type") == "Ready" and c.get("status") == "True"
                  for c in _list_of_dicts(status.get("conditions"))),
        role=role,
        finished_at=finished_at,
    )


def _unscheduled_message(status: dict[str, Any]) -> str | None:
    """The scheduler's reason a pod is not placed (e.g. `0/3 nodes are available: ...`)."""
    for cond in _list_of_dicts(status.get("conditions")):
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return _str(cond.get("message")) or _str(cond.get("reason"))
    return None


def parse_termination(message: str | None) -> dict[str, Any] | None:
    """The trainer's one-line JSON summary, or None when missing or not a JSON object."""
    if not message or not isinstance(message, str):
        return None
    try:
        doc = json.loads(message.strip().splitlines()[-1] if message.strip() else "")
    except (ValueError, IndexError, RecursionError):  # RecursionError: "[[[[..." 4 kB deep
        return None
    return doc if isinstance(doc, dict) else None


def _short(text: Any) -> str:
    text = str(text or "").strip()
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def classify_pod_failure(pod: PodView) -> PodFailure | None:
    """Failure class of a pod, or None while it runs or after it succeeded."""
    if pod.phase == "Succeeded":
        return None
    if pod.phase not in ("Failed", "Unknown") and pod.disruption is None:
        return None
    summary = parse_termination(pod.termination_message) or {}
    trainer_message = _short(summary.get("message") or "")
    code = pod.exit_code
    base = dict(pod=pod.name, rank=pod.rank, exit_code=code, node=pod.node)
    if pod.disruption is not None:
        # Any DisruptionTarget (scheduler preemption, eviction API/drain, taint manager, node
        # shutdown) means the pod was taken away, not that training broke: restart for free.
        return PodFailure("preempted", pod.disruption,
                          _short(pod.pod_message) or trainer_message, **base)
    if code is not None and contract.is_preempted(code):
        return PodFailure("preempted", contract.exit_reason(code),
                          trainer_message or "stopped on SIGTERM after saving a checkpoint", **base)
    if code is not None and contract.is_permanent(code):
        reason = summary.get("reason") if isinstance(summary.get("reason"), str) else None
        return PodFailure("permanent", reason or contract.exit_reason(code), trainer_message,
                          **base)
    if pod.container_reason == Reason.OOM_KILLED:
        return PodFailure("retryable", Reason.OOM_KILLED,
                          trainer_message or "container out of memory", **base)
    if pod.pod_reason in ("Evicted", "NodeLost", "UnexpectedAdmissionError", "Terminated"):
        return PodFailure("retryable", pod.pod_reason, _short(pod.pod_message), **base)
    if pod.phase == "Unknown":
        return PodFailure("retryable", Reason.NODE_LOST,
                          _short(pod.pod_message) or "pod state unknown", **base)
    if code is None:
        return PodFailure("retryable", pod.pod_reason or Reason.ERROR,
                          _short(pod.pod_message) or trainer_message, **base)
    return PodFailure("retryable", contract.exit_reason(code), trainer_message, **base)


def success_summary(pod: PodView) -> dict[str, Any]:
    """Metrics and final model from rank 0's termination message (empty when absent)."""
    summary = parse_termination(pod.termination_message) or {}
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {}
    numeric = {str(k): v for k, v in ((k, _finite(v)) for k, v in metrics.items())
               if v is not None}
    step = summary.get("globalStep")
    out = {
        "metrics": numeric,
        "globalStep": step if isinstance(step, int) and not isinstance(step, bool) else None,
        "finalModel": _str(summary.get("finalModel")),
    }
    if isinstance(summary.get("stoppedEarly"), str):  # spec.earlyStopping ended the run
        out["stoppedEarly"] = summary["stoppedEarly"]
    return out


# What the export pod's termination message may say of status.output (`attempts` is the
# operator's own count).
EXPORT_RESULT_FIELDS = ("phase", "reference", "digest", "size", "gate", "pushedAt", "message")


def export_result(pod: PodView) -> api.OutputStatus:
    """status.output as the export pod's termination message (its JSON, camelCase) says it:
    the fields the status can hold, each checked on its own; empty when there is none."""
    summary = parse_termination(pod.termination_message) or {}
    fields: dict[str, Any] = {}
    for key in EXPORT_RESULT_FIELDS:
        if key not in summary:
            continue
        try:
            json.dumps(summary[key], allow_nan=False)  # JSON has no NaN (a gate's value)
            api.OutputStatus.model_validate({key: summary[key]})
        except (pydantic.ValidationError, TypeError, ValueError, RecursionError):
            continue
        fields[key] = summary[key]
    size = api.OutputStatus.model_validate({"size": fields.get("size")}).size
    if size is not None and not 0 <= size < 2 ** 63:  # what the API server stores (int64)
        del fields["size"]
    if "message" in fields:
        fields["message"] = _short(fields["message"])
    return api.OutputStatus.model_validate(fields)


def _finite(value: Any) -> float | None:
    """A number the status can hold (JSON has no NaN; a 400-digit int overflows float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def sane_status(status: Any) -> tuple[dict[str, Any], list[str]]:
    """(the status fields the operator can read, the names of those it cannot).

    The operator wrote the status, but any client with access to the status subresource can
    write it too. A field of the wrong shape is left out of the view (and named, to be logged)
    so that the decision rewrites it, instead of the job loop failing on it at every wake-up.
    Fields the API does not define are kept: they are someone else's."""
    if not isinstance(status, dict):
        return {}, ([] if status in (None, {}) else ["status"])
    if _valid_status(status):
        return status, []  # the usual case: one validation, not one per field
    clean: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in status.items():
        try:
            api.FineTuneJobStatus.model_validate({key: value})
        except pydantic.ValidationError as exc:
            if not all(e["type"] == "extra_forbidden" for e in exc.errors()):
                dropped.append(str(key))
                continue
        except (TypeError, ValueError, RecursionError):
            dropped.append(str(key))
            continue
        clean[key] = value
    return clean, dropped


def _valid_status(status: dict[str, Any]) -> bool:
    try:
        api.FineTuneJobStatus.model_validate(status)
    except (pydantic.ValidationError, TypeError, ValueError, RecursionError):
        return False
    return True


def started_document(cm: dict[str, Any], job_uid: str | None = None) -> dict[str, Any] | None:
    """The job document stored in a job's ConfigMap (`{"metadata", "spec"}`); None if
    unreadable or from another job uid."""
    raw = _dict(_dict(cm).get("data")).get(contract.JOB_FILE_NAME)
    if not raw or not isinstance(raw, str):
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
        return None
    if job_uid is not None and _dict(doc.get("metadata")).get("uid") != job_uid:
        return None
    return doc


@dataclass(frozen=True)
class StartedSpecView:
    """A job's started-spec ConfigMap as the index keeps it (not the whole ConfigMap, whose
    managedFields alone outweigh the rest): its data as written and, when the data holds a
    readable job document, the job uid it names and its digest, computed once per change of
    the ConfigMap rather than at every decision."""

    data: Mapping[str, Any]
    uid: str | None = None
    digest: str | None = None  # contract.job_digest of the document; None: unreadable

    def names(self, job_uid: str | None) -> bool:
        """Whether it holds a readable document of the job with that uid (None: of any)."""
        return self.digest is not None and (job_uid is None or self.uid == job_uid)

    def document(self, job_uid: str | None = None) -> dict[str, Any] | None:
        """The document (`{"metadata", "spec"}`), parsed anew for each caller (a decision
        may change what it gets); None if unreadable or from another job uid."""
        return json.loads(self.data[contract.JOB_FILE_NAME]) if self.names(job_uid) else None

    def spec(self, job_uid: str | None = None) -> dict[str, Any] | None:
        """The spec the job started with; None if unreadable or from another job uid."""
        document = self.document(job_uid)
        return document["spec"] if document is not None else None


def started_view(views: Iterable[StartedSpecView], job_uid: str | None
                 ) -> StartedSpecView | None:
    """Of the views the index holds for a job's name, the last that names this job's uid."""
    mine = [view for view in views if view.names(job_uid)]
    return mine[-1] if mine else None


def started_spec_view(cm: dict[str, Any]) -> StartedSpecView:
    data = _dict(_dict(cm).get("data"))
    document = started_document(cm)
    if document is None:
        return StartedSpecView(data)
    return StartedSpecView(data, _str(_dict(document.get("metadata")).get("uid")),
                           contract.job_digest(document))
