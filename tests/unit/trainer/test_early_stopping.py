"""Early stopping: the patience counter read back from a checkpoint, and the stop message."""

from __future__ import annotations

import json

from ftjob_api import api
from ftjob_trainer import early_stopping


def state_with(counter):
    return {"stateful_callbacks": {"EarlyStoppingCallback": {
        "args": {"early_stopping_patience": 3, "early_stopping_threshold": 0.0},
        "attributes": {"early_stopping_patience_counter": counter}}}}


def test_saved_counter_reads_trainer_state():
    assert early_stopping.saved_counter(state_with(2)) == 2
    assert early_stopping.saved_counter({"stateful_callbacks": {
        "EarlyStoppingCallback": [state_with(1)["stateful_callbacks"]["EarlyStoppingCallback"]]}}) == 1
    assert early_stopping.saved_counter({}) == 0
    assert early_stopping.saved_counter(state_with("x")) == 0


def test_build_restores_the_counter_from_the_resumed_checkpoint(tmp_path):
    (tmp_path / "trainer_state.json").write_text(json.dumps(state_with(2)))
    spec = api.EarlyStopping(patience=3, threshold=0.01)
    resumed = early_stopping.build(spec, tmp_path)
    assert resumed.early_stopping_patience_counter == 2
    assert resumed.early_stopping_patience == 3 and resumed.early_stopping_threshold == 0.01
    assert early_stopping.build(spec, None).early_stopping_patience_counter == 0


def test_stop_message_only_when_patience_ran_out_before_max_steps():
    common = dict(patience=3, max_steps=200, metric="eval_loss", best_metric=0.41234,
                  best_checkpoint="/out/checkpoint-20", threshold=0.0)
    assert early_stopping.stop_message(counter=3, global_step=80, **common) == (
        "stopped early at step 80 of 200: eval_loss did not improve for 3 evaluations; "
        "best eval_loss 0.4123 at checkpoint-20")
    assert early_stopping.stop_message(counter=3, global_step=80, **{
        **common, "threshold": 0.01, "patience": 1}).startswith(
        "stopped early at step 80 of 200: eval_loss did not improve by more than 0.01 for 1 "
        "evaluation;")
    assert early_stopping.stop_message(counter=2, global_step=80, **common) is None
    assert early_stopping.stop_message(counter=3, global_step=200, **common) is None


def test_ftjob_run_local_prints_why_it_stopped_early():
    from ftjob_trainer.local import describe

    text = describe({"status": "succeeded", "globalStep": 80, "finalModel": "/o/final",
                     "stoppedEarly": "stopped early at step 80 of 200: eval_loss did not "
                                     "improve for 3 evaluations",
                     "metrics": {"eval_loss": 0.5}})
    assert text.splitlines()[:2] == [
        "succeeded after 80 steps",
        "  stopped early at step 80 of 200: eval_loss did not improve for 3 evaluations"]
