"""Bad input -> a permanent exit code and a message naming the field and the file.

The worker runs in-process here (one rank, no torchrun): these failures happen before
training, and test_trainer_tasks.py checks the same path end to end through the launcher.
"""

from __future__ import annotations

import json
import signal

import pytest
from ftjob_api.contract import ExitCode
from ftjob_trainer import entrypoint, exits


@pytest.fixture
def worker(tmp_path):
    """Run one worker on a spec; returns (exit code, the failure it recorded)."""
    previous = signal.getsignal(signal.SIGTERM)

    def run(spec):
        job = tmp_path / "job.json"
        job.write_text(json.dumps({"metadata": {"name": "bad"}, "spec": spec}))
        results = tmp_path / "results"
        code = entrypoint.run({"FTJOB_JOB_FILE": str(job), "FTJOB_OUTPUT_DIR": str(tmp_path / "out"),
                               "FTJOB_RESULT_DIR": str(results)})
        failures = exits.read_failures(results)
        return code, failures[0] if failures else None

    yield run
    signal.signal(signal.SIGTERM, previous)


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spec_for(train, validation=None, model_path="/nonexistent/model", **dataset):
    files = {"train": str(train)}
    if validation:
        files["validation"] = str(validation)
    return {"task": "sequence-classification", "model": {"path": model_path},
            "dataset": {"files": files, **dataset},
            "trainingArguments": {"max_steps": 1}}


def test_missing_column(worker, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", [{"text": "a", "topic": 0}, {"text": "b", "topic": 1}])
    code, failure = worker(spec_for(train))
    assert code == ExitCode.INVALID_DATA
    assert failure.reason == "InvalidData"
    assert "spec.dataset.labelColumn: column 'label' not found in the train split" in failure.message
    assert str(train) in failure.message and "text, topic" in failure.message


def test_label_out_of_range_in_the_validation_file(worker, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    val = write_rows(tmp_path / "val.jsonl", [{"text": "a", "label": 1}, {"text": "c", "label": 5}])
    code, failure = worker(spec_for(train, val))
    assert code == ExitCode.INVALID_DATA
    assert "spec.dataset.labelColumn: label 5 is out of range 0..1" in failure.message
    assert str(val) in failure.message and "row 1" in failure.message


def test_negative_label_is_out_of_range(worker, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": -1},
                                                  {"text": "c", "label": 1}])
    code, failure = worker(spec_for(train))
    assert code == ExitCode.INVALID_DATA and "label -1 is out of range" in failure.message


def test_unreadable_file(worker, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_bytes(b"\x00\x01 this is { not json\n")
    code, failure = worker(spec_for(train))
    assert code == ExitCode.INVALID_DATA
    assert f"spec.dataset.files.train: {train}: cannot be read as json" in failure.message


def test_missing_file(worker, tmp_path):
    code, failure = worker(spec_for(tmp_path / "absent.jsonl"))
    assert code == ExitCode.INVALID_DATA
    assert f"spec.dataset.files.train: {tmp_path / 'absent.jsonl'}: no such file" in failure.message


def test_path_with_no_model(worker, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    empty = tmp_path / "empty-model"
    empty.mkdir()
    code, failure = worker(spec_for(train, model_path=str(empty)))
    assert code == ExitCode.INVALID_MODEL
    assert failure.message == f"spec.model.path: no model at {empty} (config.json is missing)"


def test_invalid_spec_names_the_fields(worker, tmp_path):
    code, failure = worker({"task": "seq2seq", "model": {"path": "/m"},
                            "dataset": {"files": {"train": "t.txt"}}})
    assert code == ExitCode.INVALID_SPEC
    assert "spec.dataset.targetColumn" in failure.message
    assert "spec.dataset.files.train" in failure.message
    assert str(tmp_path / "job.json") in failure.message


def test_non_utf8_text_is_permanent_not_a_crash(worker, tmp_path):
    """Before: a UnicodeDecodeError while tokenizing, exit 1, restarted into the same error."""
    train = tmp_path / "train.jsonl"
    train.write_bytes(b'{"text": "caf\xe9", "label": 0}\n{"text": "b", "label": 1}\n')
    code, failure = worker(spec_for(train))
    assert code == ExitCode.INVALID_DATA
    assert failure.message == (f"spec.dataset.files.train: {train}: line 1: not UTF-8 text "
                               "(byte 0xe9); save the file as UTF-8")


def test_checkpoint_of_another_label_count_is_permanent(worker, tmp_path):
    """Resuming a 2-label checkpoint on 3-label data would fail load_state_dict on every
    attempt: it is refused before training, naming the checkpoint and the label counts."""
    from ftjob_trainer import checkpoints

    from tests.tinymodels import build_bert

    model = build_bert(tmp_path / "model")
    train = write_rows(tmp_path / "train.jsonl", [{"text": t, "label": label} for t, label in
                                                  (("a b", 0), ("c d", 1), ("e f", 2))])
    saved = tmp_path / "out" / "checkpoint-5"
    saved.mkdir(parents=True)
    (saved / "config.json").write_text(json.dumps({"id2label": {"0": "x", "1": "y"}}))
    (saved / "trainer_state.json").write_text(json.dumps({"global_step": 5}))
    checkpoints.write_marker(saved, 5)
    assert checkpoints.verify(saved).complete, "the test's checkpoint must be one to resume"

    code, failure = worker(spec_for(train, model_path=str(model)))
    assert code == ExitCode.INVALID_DATA, failure
    assert "saved by a model with 2 labels" in failure.message
    assert "now has 3" in failure.message and str(saved) in failure.message
