"""spec.earlyStopping: the job stops after `patience` evaluations without improvement,
succeeds and says so; a run killed between two evaluations keeps its patience counter."""

from __future__ import annotations

import json
import os
import re
import signal

from tests.integration.trainer.helpers import classification_spec, poll, start
from ftjob_trainer import checkpoints, early_stopping

EVERY = 20
PATIENCE = 3
# A threshold no change of eval_loss can exceed: only the first evaluation counts as an
# improvement, so the counter reaches PATIENCE at the (PATIENCE + 1)th evaluation whatever
# the losses are, and the stop step is known in advance.
STOP_STEP = EVERY * (PATIENCE + 1)
MAX_STEPS = 200


def test_kill_between_evaluations_then_resume_stops_where_an_uninterrupted_run_would(
        tiny, tmp_path):
    spec = classification_spec(tiny, max_steps=MAX_STEPS, eval_strategy="steps",
                               eval_steps=EVERY, save_steps=EVERY, logging_steps=5,
                               load_best_model_at_end=True, metric_for_best_model="eval_loss")
    spec["earlyStopping"] = {"patience": PATIENCE, "threshold": 1000.0}

    killed = start(tmp_path, spec, isolate=True)
    poll(lambda: (lambda c: c is not None and c.step >= 2 * EVERY)(
        checkpoints.latest_complete(killed.output_dir)), 240, f"a complete checkpoint-{2 * EVERY}")
    os.kill(killed.proc.pid, signal.SIGKILL)  # the whole PID namespace, like a pod kill
    killed.wait(30)
    assert not (killed.output_dir / "final").exists(), "the run ended before it was killed"
    last = checkpoints.latest_complete(killed.output_dir)
    assert 2 * EVERY <= last.step < STOP_STEP, last
    saved = early_stopping.saved_counter(json.loads((last.path / "trainer_state.json").read_text()))
    assert saved == last.step // EVERY - 1 > 0  # evaluations since the first, none improving

    resumed = start(tmp_path, spec)
    assert resumed.wait() == 0, resumed.log()
    summary = resumed.summary()
    assert summary["status"] == "succeeded"
    assert summary["resumedFromStep"] == last.step
    # A counter restarted at 0 would stop PATIENCE evaluations after the resume instead.
    assert summary["globalStep"] == STOP_STEP, summary
    assert re.fullmatch(
        f"stopped early at step {STOP_STEP} of {MAX_STEPS}: eval_loss did not improve by more "
        f"than 1000 for {PATIENCE} evaluations; best eval_loss [0-9.]+ at checkpoint-[0-9]+",
        summary["stoppedEarly"]), summary
    # The final model is Trainer's best checkpoint (load_best_model_at_end).
    best = summary["stoppedEarly"].rsplit(" at ", 1)[1]
    assert int(best.split("-")[1]) % EVERY == 0 and int(best.split("-")[1]) <= STOP_STEP
