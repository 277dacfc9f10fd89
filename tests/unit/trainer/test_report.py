"""`ftjob report`: the series read from trainer_state.json, resume marks, the PNG."""

from __future__ import annotations

import json

from ftjob_cli import cli
from ftjob_trainer import attempts, checkpoints, report

HISTORY = [
    {"step": 10, "loss": 1.9, "learning_rate": 1e-4, "epoch": 0.1},
    {"step": 20, "loss": 1.5, "learning_rate": 8e-5},
    {"step": 20, "eval_loss": 1.4, "eval_accuracy": 0.6, "eval_f1": 0.5, "eval_runtime": 2.0,
     "eval_samples_per_second": 50.0, "eval_steps_per_second": 1.0},
    {"step": 30, "loss": 1.1, "learning_rate": 6e-5},
    {"step": 40, "eval_loss": 1.0, "eval_accuracy": 0.8, "eval_f1": 0.7},
    {"step": 40, "eval_loss": 0.99, "eval_accuracy": 0.8, "eval_f1": 0.7},  # final evaluate
    {"step": 40, "train_loss": 1.4, "train_runtime": 9.0},
]


def test_series_from_log_history():
    data = report.series(HISTORY, resumed_from=[0, 20, 20], max_steps=40, global_step=40)
    assert data.train_loss == [(10, 1.9), (20, 1.5), (30, 1.1)]
    assert data.learning_rate == [(10, 1e-4), (20, 8e-5), (30, 6e-5)]
    assert data.eval_loss == [(20, 1.4), (40, 0.99)]  # the later value at one step wins
    assert data.eval_metrics == {"eval_accuracy": [(20, 0.6), (40, 0.8)],
                                 "eval_f1": [(20, 0.5), (40, 0.7)]}  # no runtimes
    assert data.resumed_from == [20]


def test_resume_steps_from_attempts_lines():
    lines = ['{"resumedFromStep": 0}', '{"resumedFromStep": 20}', "garbage", "[]",
             '{"resumedFromStep": 35}']
    assert report.resume_steps(lines) == [20, 35]


def write_state(folder, step, history):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trainer_state.json").write_text(json.dumps(
        {"global_step": step, "max_steps": 40, "log_history": history}))


def test_report_of_a_run_still_going_reads_the_newest_complete_checkpoint(tmp_path):
    write_state(tmp_path / "checkpoint-20", 20, HISTORY[:3])
    checkpoints.write_marker(tmp_path / "checkpoint-20", 20)
    write_state(tmp_path / "checkpoint-30", 30, HISTORY[:4])  # no marker: not complete
    attempts.record_attempt(tmp_path, 0, 2, "2026-01-01T00:00:00Z")
    attempts.record_attempt(tmp_path, 20, 2, "2026-01-01T00:05:00Z")
    data, source = report.load(tmp_path)
    assert source == tmp_path / "checkpoint-20" / "trainer_state.json"
    assert data.global_step == 20 and data.resumed_from == [20]

    write_state(tmp_path, 40, HISTORY)  # the finished run's own trainer_state.json
    data, source = report.load(tmp_path)
    assert source == tmp_path / "trainer_state.json" and data.global_step == 40


def test_ftjob_report_writes_a_png(tmp_path, capsys):
    write_state(tmp_path, 40, HISTORY)
    attempts.record_attempt(tmp_path, 20, 2, "2026-01-01T00:05:00Z")
    assert cli.main(["report", str(tmp_path)]) == 0
    png = tmp_path / "report.png"
    assert capsys.readouterr().out.strip() == str(png)
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 800 and height > 800  # three panels, readable


def test_ftjob_report_without_a_run_says_so(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 1
    assert "no trainer_state.json" in capsys.readouterr().err


SEARCH = {"metric": "eval_loss", "bestTrial": 2, "trials": [
    {"number": 0, "state": "COMPLETE", "value": 0.9},
    {"number": 1, "state": "PRUNED", "lastReported": {"step": 10, "value": 1.2}},
    {"number": 2, "state": "COMPLETE", "value": 0.7},
    {"number": 3, "state": "FAIL"}, {"number": "x"}, "junk"]}


def test_search_points_per_trial():
    points = report.trials(SEARCH)
    assert points.completed == [(0, 0.9), (2, 0.7)]
    assert points.pruned == [(1, 1.2)]
    assert (points.best, points.metric) == (2, "eval_loss")


def test_ftjob_report_draws_the_search_panel_even_before_the_final_run(tmp_path, capsys):
    (tmp_path / "search.json").write_text(json.dumps(SEARCH))
    assert cli.main(["report", str(tmp_path)]) == 0  # no trainer_state.json yet
    from PIL import Image

    with Image.open(tmp_path / "report.png") as image:
        trials_only = image.size
    write_state(tmp_path, 40, HISTORY)
    assert cli.main(["report", str(tmp_path)]) == 0
    with Image.open(tmp_path / "report.png") as image:
        assert image.size[1] > trials_only[1]  # loss, learning rate, metrics and trials
        assert image.size[1] > 1200
