"""policies/started_spec.py: the started spec's ConfigMap is checked against the digest on
record before anything starts from it; a changed one is put back from the job's spec, or the
job fails when that changed too."""

from __future__ import annotations

import copy
import json

import pytest

from ftjob_api import contract
from ftjob_operator import render
from ftjob_operator.observe import Observed, started_document
from ftjob_operator.plan import CreatePods, EnsureJobObjects, RestoreConfigMap
from ftjob_operator.policies import started_spec
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import EARLIER, NOW, SPEC, job, pod, running_attempt

BASE = job()
DIGEST = started_spec.digest(BASE, SPEC)


def config_map(spec: dict | None = None, **meta: str) -> dict:
    """The job's ConfigMap as the operator rendered it, or as someone edited it."""
    cm = render.render_config_map(BASE, spec if spec is not None else SPEC)
    if meta:
        doc = json.loads(cm["data"][contract.JOB_FILE_NAME])
        doc["metadata"].update(meta)
        cm["data"][contract.JOB_FILE_NAME] = json.dumps(doc)
    return cm


def observed(cm: dict | None, pods=()) -> Observed:
    document = started_document(cm, BASE.uid) if cm is not None else None
    return Observed(pods=tuple(pods), started_spec=document["spec"] if document else None,
                    started_document=document)


EDITED_IMAGE = {**SPEC, "model": {"path": "/somewhere/else"}}
RUNNING = running_attempt(1, startedSpecDigest=DIGEST)
PENDING = {"phase": "Pending", "attempt": 1, "startTime": EARLIER, "startedSpecDigest": DIGEST}
LIVE = (pod(0), pod(1))
OTHER_MODEL = {"model": {"path": "/somewhere/else"}}

# (job status, job spec edits, the ConfigMap seen, pods)
#   -> (plan case, actions, events, the digest written)
TABLE = {
    "the first start records the digest of what it renders": (
        {}, {}, None, (), ("start", [EnsureJobObjects, CreatePods], ["Started"], DIGEST)),
    "the ConfigMap as recorded -> nothing to do": (
        RUNNING, {}, config_map(), LIVE, ("running", [], [], None)),
    "a job started before digests -> what is there is recorded": (
        running_attempt(1), {}, config_map(), LIVE, ("running", [], [], DIGEST)),
    "a mutable field edited on the job -> still the same started spec": (
        RUNNING, {"activeDeadlineSeconds": 3600}, config_map(), LIVE, ("running", [], [], None)),
    "the ConfigMap's spec changed -> put back from the job's spec": (
        RUNNING, {}, config_map(EDITED_IMAGE), LIVE,
        ("started spec restored", [RestoreConfigMap], ["StartedSpecRestored"], None)),
    "the ConfigMap's job name changed -> put back": (
        RUNNING, {}, config_map(name="other"), LIVE,
        ("started spec restored", [RestoreConfigMap], ["StartedSpecRestored"], None)),
    "the ConfigMap changed and so did the job's spec -> Failed": (
        RUNNING, OTHER_MODEL, config_map(EDITED_IMAGE), LIVE,
        ("started spec changed", [], ["StartedSpecChanged"], None)),
    "the ConfigMap gone, the job's spec as started -> created again": (
        PENDING, {}, None, (), ("create missing pods", [EnsureJobObjects, CreatePods], [], None)),
    "the ConfigMap gone and the job's spec changed -> Failed": (
        PENDING, OTHER_MODEL, None, (), ("started spec changed", [], ["StartedSpecChanged"], None)),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_started_spec_is_checked(name):
    status, edits, cm, pods, (case, actions, events, written) = TABLE[name]
    plan = decide(job(copy.deepcopy(status), **edits), observed(cm, pods), NOW)
    assert plan.case == case
    assert [type(a) for a in plan.actions] == actions
    assert [e.reason for e in plan.events] == events
    assert plan.status.get("startedSpecDigest") == written


def test_the_restored_config_map_is_the_one_rendered_at_the_start():
    state = job(copy.deepcopy(RUNNING))
    plan = decide(state, observed(config_map(EDITED_IMAGE), LIVE), NOW)
    (restore,) = plan.actions
    assert restore.manifest == render.render_config_map(state, SPEC)
    assert started_spec.document_digest(started_document(restore.manifest, state.uid)) == DIGEST
    assert "was changed after the job started" in plan.events[0].message


def test_a_changed_spec_fails_the_job_saying_why():
    state = job(copy.deepcopy(RUNNING), model={"path": "/somewhere/else"})
    plan = decide(state, observed(config_map(EDITED_IMAGE), LIVE), NOW)
    assert plan.status["phase"] == "Failed"
    failed = next(c for c in plan.status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "StartedSpecChanged"
    assert "ConfigMap demo-job" in failed["message"] and "nothing trustworthy" in \
        failed["message"]
    assert plan.status["attempts"][-1]["endTime"]


def test_the_digest_leaves_out_the_mutable_fields_only():
    doc = {"metadata": {"name": "demo", "namespace": "ns", "uid": "uid-1"}, "spec": SPEC}
    same = {**doc, "spec": {**SPEC, "suspend": True, "restartPolicy": {"maxRestarts": 9}}}
    other = {**doc, "spec": {**SPEC, "resources": {"nodes": 3}}}
    assert started_spec.document_digest(doc) == started_spec.document_digest(same)
    assert started_spec.document_digest(doc) != started_spec.document_digest(other)
    assert started_spec.document_digest(doc).startswith("sha256:")

