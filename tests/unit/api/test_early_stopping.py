"""spec.earlyStopping: the fields it needs in trainingArguments, named in each problem."""

from __future__ import annotations

import pytest

from ftjob_api.validation import validate_spec


def spec(training, early=None, **dataset):
    body = {"task": "sequence-classification", "model": {"path": "/models/m"},
            "dataset": {"files": {"train": "/d/train.jsonl", "validation": "/d/val.jsonl"},
                        **dataset},
            "trainingArguments": training}
    if early is not None:
        body["earlyStopping"] = early
    return body


READY = {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": 10, "save_steps": 10,
         "load_best_model_at_end": True, "metric_for_best_model": "eval_loss"}


def problems(body):
    return {p.path: p.message for p in validate_spec(body)}


def test_a_complete_early_stopping_spec_is_valid():
    assert problems(spec(READY, {"patience": 2, "threshold": 0.01})) == {}


@pytest.mark.parametrize("missing, path", [
    ("load_best_model_at_end", "spec.trainingArguments.load_best_model_at_end"),
    ("metric_for_best_model", "spec.trainingArguments.metric_for_best_model"),
])
def test_each_missing_argument_is_named(missing, path):
    training = {k: v for k, v in READY.items() if k != missing}
    found = problems(spec(training, {"patience": 2}))
    assert list(found) == [path]
    assert "spec.earlyStopping needs" in found[path]
    assert problems(spec(training)) == {}  # without earlyStopping they are optional


def test_strategies_must_match_and_evaluate():
    found = problems(spec({**READY, "save_strategy": "epoch"}, {"patience": 1}))
    assert "match" in found["spec.trainingArguments.load_best_model_at_end"]
    found = problems(spec({**READY, "eval_strategy": "no"}, {"patience": 1}))
    assert "spec.trainingArguments.load_best_model_at_end" in found


@pytest.mark.parametrize("early, path", [
    ({"patience": 0}, "spec.earlyStopping.patience"),
    ({"threshold": 0.1}, "spec.earlyStopping.patience"),
    ({"patience": 1, "threshold": -1}, "spec.earlyStopping.threshold"),
    ({"patience": 1, "patiense": 2}, "spec.earlyStopping.patiense"),
])
def test_field_level_problems_name_the_field(early, path):
    assert path in problems(spec(READY, early))


def test_a_job_that_stopped_early_succeeds_and_says_so():
    """The trainer's summary carries `stoppedEarly`; the operator's Succeeded message and
    event repeat it."""
    import json
    from datetime import datetime, timedelta, timezone

    from ftjob_operator.observe import Observed, PodView
    from ftjob_operator.plan import JobState
    from ftjob_operator.reconcile import decide

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    body = {**spec(READY, {"patience": 2}), "storage": {"accessModes": ["ReadWriteOnce"]}}
    why = "stopped early at step 80 of 200: eval_loss did not improve for 3 evaluations"
    summary = json.dumps({"status": "succeeded", "globalStep": 80, "finalModel": "/output/final",
                          "metrics": {"eval_loss": 0.5}, "stoppedEarly": why})
    rank0 = PodView(name="demo-1-0", job="demo", attempt=1, rank=0, owner_uid="uid-1",
                    phase="Succeeded", created_at=now - timedelta(seconds=5), exit_code=0,
                    termination_message=summary)
    job = JobState("demo", "ns", "uid-1", 1, body,
                   {"phase": "Running", "attempt": 1, "startTime": "2026-01-01T11:58:00Z"})
    plan = decide(job, Observed(pods=(rank0,), started_spec=body), now)
    assert plan.status["phase"] == "Succeeded"
    assert plan.status["message"] == f"training finished, {why}; final model in /output/final"
    assert [(e.reason, e.message) for e in plan.events] == [("Succeeded", plan.status["message"])]
