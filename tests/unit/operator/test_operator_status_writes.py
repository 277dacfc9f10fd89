"""The operator's status writes are typed: every patch `StatusBuilder` makes is the dump of
`api.FineTuneJobStatus`, so it validates against the model, and a key the model lacks fails
instead of reaching the cluster."""

from __future__ import annotations

from datetime import timedelta

import pydantic
import pytest
from ftjob_api import api

from ftjob_operator.observe import Observed
from ftjob_operator.reconcile import decide
from ftjob_operator.status import StatusBuilder
from tests.unit.operator.decide_helpers import NOW, OK, STARTED, job, pod, running


def _decisions():
    start = decide(job(), Observed(), NOW)
    yield start.status
    failed = decide(job(running(), generation=3),
                    Observed((pod(0), pod(1, phase="Failed", exit_code=1)), STARTED), NOW)
    yield failed.status
    done = decide(job(running()), Observed((pod(0, phase="Succeeded", exit_code=0,
                                                 termination_message=OK),
                                            pod(1, phase="Succeeded", exit_code=0)), STARTED),
                  NOW + timedelta(seconds=40))
    yield done.status


@pytest.mark.parametrize("patch", list(_decisions()), ids=["start", "restart", "succeed"])
def test_every_status_patch_validates_and_round_trips_through_the_model(patch):
    assert patch  # each decision writes something
    typed = api.FineTuneJobStatus.model_validate(patch)
    assert api.to_patch(typed) == patch


def test_conditions_and_attempt_records_have_the_models_spelling():
    out = StatusBuilder(job(), NOW)
    out.begin_attempt(1)
    out.condition("Running", True, "Started", "pods running")
    patch = out.patch()
    assert patch["attempts"] == [api.to_patch(api.AttemptRecord(
        attempt=1, start_time="2026-01-01T12:00:00Z"))]
    assert set(patch["conditions"][0]) == {"type", "status", "reason", "message",
                                           "lastTransitionTime", "observedGeneration"}


def test_a_key_the_model_does_not_know_fails_instead_of_being_written():
    out = StatusBuilder(job(), NOW)
    out.set(startTim="2026-01-01T12:00:00Z")  # misspelt
    with pytest.raises(pydantic.ValidationError):
        out.patch()
    out = StatusBuilder(job(), NOW)
    out.begin_attempt(1)
    with pytest.raises(ValueError):
        out.attempts[0].endtime = "2026-01-01T12:00:00Z"  # misspelt
