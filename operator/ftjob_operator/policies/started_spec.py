"""The started spec is the operator's: a digest of it in the status, checked before each
decision that could start pods from it.

Later attempts render from the `<job>-job` ConfigMap (the spec the job started with), which
anyone allowed to update ConfigMaps in the namespace can change. The operator records a
digest of it in `status.startedSpecDigest` when it first renders it (the status is written by
the operator; a ConfigMap editor cannot change it) and compares the ConfigMap with it. A
changed ConfigMap is put back from the FineTuneJob's own spec when that still has the
digest (the usual case: the fields that take effect after the start are left out of it);
when the job's spec was edited too, nothing trustworthy is left to put back and the job
fails with `StartedSpecChanged`.
"""

from __future__ import annotations

import json
from typing import Any

from ftjob_api import api, contract, naming
from ftjob_api.contract import rfc3339

from .. import render
from ..observe import Observed
from ..plan import Case, Event, JobState, Plan, RestoreConfigMap
from ..reasons import EventType, Reason
from ..status import StatusBuilder

DIGEST_FIELD = "startedSpecDigest"


# SHA-256 of a job document without the spec fields that take effect after the start (the
# operator reads those from the FineTuneJob); the trainer checks its job file with it too.
document_digest = contract.job_digest


def digest(job: JobState, raw_spec: dict[str, Any]) -> str:
    """The digest of the document the job's ConfigMap holds for `raw_spec`."""
    return document_digest(json.loads(render.job_file(job, raw_spec)))


def record(job: JobState, raw_spec: dict[str, Any], out: StatusBuilder) -> None:
    """When the ConfigMap is first rendered: its digest, unless one is on record already."""
    if not job.status.get(DIGEST_FIELD):
        out.set(**{DIGEST_FIELD: digest(job, raw_spec)})


def verify(job: JobState, observed: Observed, out: StatusBuilder) -> Plan | None:
    """None when the ConfigMap is the one on record (or not there yet); else a plan that
    puts it back or fails the job."""
    recorded = job.status.get(DIGEST_FIELD)
    document = observed.started_document
    name = naming.config_map(job.name)
    if document is None:
        if recorded and out.read.attempt > 0 and digest(job, job.spec) != recorded:
            return _changed(job, out, f"ConfigMap {name} (the spec the job started with) is "
                                      "gone and the job's spec was changed since the start")
        return None
    seen = observed.started_digest or document_digest(document)
    if not recorded:  # started before digests were recorded: what is there now is the start
        out.set(**{DIGEST_FIELD: seen})
        return None
    if seen == recorded:
        return None
    if digest(job, job.spec) != recorded:
        return _changed(job, out, f"ConfigMap {name} (the spec the job started with) was "
                                  "changed, and the job's own spec no longer matches the spec "
                                  "it started with: nothing trustworthy to put back")
    plan = Plan(Case.STARTED_SPEC_RESTORED)
    plan.actions.append(RestoreConfigMap(render.render_config_map(job, job.spec)))
    plan.events.append(Event(EventType.WARNING, Reason.STARTED_SPEC_RESTORED,
                             f"ConfigMap {name} was changed after the job started (it no "
                             f"longer matches status.{DIGEST_FIELD}); put back from the job's "
                             "spec before the next attempt"))
    return plan


def _changed(job: JobState, out: StatusBuilder, message: str) -> Plan:
    """Fail: no attempt may start from a spec nobody can vouch for. Running ranks are stopped
    by the decision on the finished job."""
    out.end_attempt(Reason.FAILED, message, resumes=False)
    out.phase(api.Phase.FAILED, Reason.STARTED_SPEC_CHANGED, message)
    out.set(completionTime=job.status.get("completionTime") or rfc3339(out.now))
    plan = Plan(Case.STARTED_SPEC_CHANGED)
    plan.events.append(Event(EventType.WARNING, Reason.STARTED_SPEC_CHANGED, message))
    return plan
