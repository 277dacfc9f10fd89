"""Hugging Face's own result files in the output folder, as run_glue writes them."""

from __future__ import annotations

import json


def test_output_dir_holds_hugging_face_result_files(baseline):
    out = baseline.output_dir
    train = json.loads((out / "train_results.json").read_text())
    evaluation = json.loads((out / "eval_results.json").read_text())
    combined = json.loads((out / "all_results.json").read_text())
    assert train["train_samples"] == 384 and "train_loss" in train and "train_runtime" in train
    assert evaluation["eval_samples"] == 96 and "eval_f1" in evaluation
    assert combined == {**train, **evaluation}
    assert not (out / "test_results.json").exists()  # no test split in this job
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 160
    assert any("loss" in entry for entry in state["log_history"])
    # ftjob's own summary agrees with Hugging Face's files.
    assert baseline.metrics()["metrics"]["eval_f1"] == evaluation["eval_f1"]
