"""The trainer's status writes are typed: status.progress, status.checkpoint (progress.py),
the reporter's patch bodies (progress_reporters.py) and status.search (search.py) are dumps
of the `api` status models, so each validates against the model, nulls that delete in a
merge patch stay, and a key the model lacks fails instead of being dropped by the API
server."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from ftjob_api import api

from ftjob_trainer import checkpoints, search
from ftjob_trainer.progress import build_checkpoint, build_progress
from ftjob_trainer.progress_reporters import KubernetesReporter, typed_status


def _progress():
    return build_progress(global_step=10, max_steps=100, epoch=0.5, loss=1.25,
                          learning_rate=1e-4, start_step=0, elapsed=20.0, samples_per_step=8,
                          eval_metrics={"eval_loss": 1.5}, now=1.7e9)


def test_build_progress_validates_against_the_model_with_todays_keys():
    progress = _progress()
    assert progress == {"globalStep": 10, "maxSteps": 100, "percent": 10.0, "epoch": 0.5,
                        "loss": 1.25, "learningRate": 1e-4, "samplesPerSecond": 4.0,
                        "etaSeconds": 180.0, "evalMetrics": {"eval_loss": 1.5},
                        "updatedAt": "2023-11-14T22:13:20Z"}
    assert api.to_patch(api.Progress.model_validate(progress)) == progress


def test_build_checkpoint_validates_against_the_model():
    latest = checkpoints.Checkpoint(step=10, path=Path("/out/checkpoint-10"),
                                    saved_at="2026-01-01T00:00:00Z")
    for checkpoint in (build_checkpoint(None, 0), build_checkpoint(latest, 5)):
        assert api.to_patch(api.CheckpointStatus.model_validate(checkpoint)) == checkpoint
    assert build_checkpoint(latest, 5) == {"resumedFromStep": 5, "latest": {
        "step": 10, "path": "/out/checkpoint-10", "savedAt": "2026-01-01T00:00:00Z"}}


def test_reporter_bodies_validate_and_keep_the_nulls_that_delete():
    progress = {**_progress(), "activity": "training", "attempt": 2, "lastStepTime": None}
    body = KubernetesReporter.body(progress, build_checkpoint(None, 3))
    assert body == {"status": {"progress": progress, "checkpoint": {"resumedFromStep": 3}}}
    api.FineTuneJobStatus.model_validate(body["status"])
    summary = {"trialsCompleted": 1, "trialsTotal": 3, "bestTrial": 0, "bestValue": 0.25,
               "bestParams": {"learning_rate": 1e-4}}
    search_body = KubernetesReporter.search_body(search.status(summary))
    assert search_body == {"status": {"search": {
        "trials": "1/3", "trialsCompleted": 1, "trialsTotal": 3, "bestTrial": 0,
        "bestValue": 0.25, "bestParams": {"learning_rate": 1e-4}}}}
    api.FineTuneJobStatus.model_validate(search_body["status"])


def test_search_status_validates_against_the_model():
    status = search.status({"trialsCompleted": 0, "trialsTotal": 4})
    assert status == {"trials": "0/4", "trialsCompleted": 0, "trialsTotal": 4}
    assert api.to_patch(api.SearchStatus.model_validate(status)) == status


@pytest.mark.parametrize("status", [
    {"progress": {"globalstep": 1}},  # misspelt
    {"progress": {"activity": "sleeping"}},  # not a value the model allows
    {"search": {"trials": "1/2", "bestTrials": 0}},
    {"checkpoint": {"latest": {"step": 1}}},  # no path
])
def test_a_patch_the_model_does_not_allow_fails_instead_of_being_sent(status):
    with pytest.raises(pydantic.ValidationError):
        typed_status(status)
