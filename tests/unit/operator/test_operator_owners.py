"""owners.py: a create answered "already exists" is the job's own object only when its
controller ownerReference carries the job's uid."""

from __future__ import annotations

import pytest

from ftjob_operator import owners, render
from ftjob_operator.plan import JobRef
from ftjob_operator.settings import Settings
from tests.unit.operator.decide_helpers import job

JOB = JobRef("foo", "ns", "uid-new")
SA = render.render_service_account(JOB)


def found(*refs: dict) -> dict:
    return {"kind": "ServiceAccount", "metadata": {"name": "foo-trainer", "namespace": "ns",
                                                   "ownerReferences": list(refs)}}


def ref(uid: str, controller: bool = True, kind: str = "FineTuneJob", name: str = "foo") -> dict:
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": kind, "name": name, "uid": uid,
            "controller": controller}


TABLE = {
    "ours (an earlier try, another replica)": (found(ref("uid-new")), None),
    "an older job of the same name": (
        found(ref("uid-old")), "ServiceAccount foo-trainer already exists and is owned by "
        "FineTuneJob foo (uid uid-old), not by this job"),
    "made by hand, no owner": (
        found(), "ServiceAccount foo-trainer already exists and is owned by no owner, not by "
        "this job"),
    "our uid, but not as the controller": (
        found(ref("uid-new", controller=False)), "ServiceAccount foo-trainer already exists "
        "and is owned by no owner, not by this job"),
    "controlled by something else that also lists us": (
        found(ref("uid-new", controller=False), ref("u-x", kind="Deployment", name="web")),
        "ServiceAccount foo-trainer already exists and is owned by Deployment web (uid u-x), "
        "not by this job"),
    "no metadata at all": ({}, "ServiceAccount foo-trainer already exists and is owned by no "
                               "owner, not by this job"),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_foreign_owner(name):
    existing, expected = TABLE[name]
    assert owners.foreign_owner(SA, existing) == expected


def test_a_retain_claim_asks_for_no_owner_and_is_taken_as_found():
    """Its ownership is the output folder's uid, which the trainer checks."""
    state = job()
    spec_job = JobRef(state.name, state.namespace, state.uid)
    from ftjob_api import api

    claim = render.render_claim(spec_job, api.parse_spec(state.spec), state.spec, Settings())
    assert owners.controller(claim) is None
    assert owners.foreign_owner(claim, found(ref("uid-old"))) is None
    assert owners.foreign_owner(claim, found()) is None
