"""Broken data files end as InvalidData naming the file and the line, column or row.

InvalidData is exit code 11, permanent: the operator fails the job instead of restarting it
into the same error. Each case writes the file it needs; nothing here loads a model.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftjob_api import api
from ftjob_api.contract import ExitCode
from ftjob_trainer import data
from ftjob_trainer.exits import InvalidData, classify_exception

FUZZ = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])


def rows(*pairs, text="text", label="label"):
    return "".join(json.dumps({text: t, label: lab}) + "\n" for t, lab in pairs)


def prepare(tmp_path, train: str | bytes, validation: str | bytes | None = None,
            suffix=".jsonl", task="sequence-classification"):
    """load -> check columns -> labels, as the entrypoint does; returns the labels."""
    files = {}
    for split, content in (("train", train), ("validation", validation)):
        if content is None:
            continue
        path = tmp_path / f"{split}{suffix}"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        files[split] = str(path)
    extra = {"targetColumn": "target"} if task == "seq2seq" else {}
    spec = api.parse_spec({"task": task, "model": {"path": "/m"},
                           "dataset": {"files": files, **extra},
                           "trainingArguments": {"max_steps": 1}})
    splits = data.load_splits(spec.dataset)
    data.check_columns(splits, data.required_columns(spec))
    if task == "sequence-classification":
        return data.infer_labels(splits, "label")
    return None


def refused(tmp_path, *args, **kwargs) -> str:
    with pytest.raises(InvalidData) as caught:
        prepare(tmp_path, *args, **kwargs)
    failure = classify_exception(caught.value)
    assert failure.exit_code == ExitCode.INVALID_DATA and failure.reason == "InvalidData"
    return caught.value.message


GOOD = rows(("a", 0), ("b", 1), ("c", 0))


def test_truncated_jsonl_names_the_row(tmp_path):
    message = refused(tmp_path, GOOD + '{"text": "d", "lab')
    assert message.startswith(f"spec.dataset.files.train: {tmp_path / 'train.jsonl'}: cannot be "
                              "read as json: JSON parse error")
    assert "in row 3" in message


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_empty_file(tmp_path, suffix):
    assert refused(tmp_path, b"", suffix=suffix) == (
        f"spec.dataset.files.train: {tmp_path / ('train' + suffix)}: the file is empty")


def test_csv_with_only_a_header(tmp_path):
    assert refused(tmp_path, "text,label\n", suffix=".csv").endswith(
        "cannot be read as csv: the file has no rows (only a header?)")


def test_csv_in_a_jsonl_file(tmp_path):
    assert "cannot be read as json: JSON parse error: Invalid value. in row 0" in refused(
        tmp_path, "text,label\na,0\nb,1\n")


def test_jsonl_in_a_csv_file(tmp_path):
    message = refused(tmp_path, GOOD, suffix=".csv")
    assert message.startswith("spec.dataset.textColumn: column 'text' not found in the train split")
    assert message.endswith("; is this JSON in a .csv file?")


@pytest.mark.parametrize("content", [b"not parquet", None], ids=["text", "truncated"])
def test_broken_parquet(tmp_path, content):
    if content is None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        whole = tmp_path / "whole.parquet"
        pq.write_table(pa.table({"text": ["a", "b"] * 50, "label": [0, 1] * 50}), whole)
        content = whole.read_bytes()[:-100]
    assert "cannot be read as parquet: Parquet magic bytes not found" in refused(
        tmp_path, content, suffix=".parquet")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_not_utf8_names_the_line(tmp_path, suffix):
    good = GOOD if suffix == ".jsonl" else "text,label\na,0\nb,1\n"
    content = good.encode() + ('{"text": "caf\xe9", "label": 1}\n' if suffix == ".jsonl"
                               else "caf\xe9,1\n").encode("latin-1")
    line = good.count("\n") + 1
    assert refused(tmp_path, content, suffix=suffix) == (
        f"spec.dataset.files.train: {tmp_path / ('train' + suffix)}: line {line}: not UTF-8 "
        "text (byte 0xe9); save the file as UTF-8")


def test_missing_label_column_lists_the_columns(tmp_path):
    message = refused(tmp_path, rows(("a", 0), ("b", 1), label="topic"))
    assert message.startswith("spec.dataset.labelColumn: column 'label' not found in the train")
    assert message.endswith("columns: text, topic")


def test_missing_target_column_for_seq2seq(tmp_path):
    assert refused(tmp_path, rows(("a", "b")), task="seq2seq").startswith(
        "spec.dataset.targetColumn: column 'target' not found in the train split")


def test_mixed_label_types_name_the_row(tmp_path):
    assert refused(tmp_path, rows(("a", 0), ("b", 1), ("c", "x"))).endswith(
        "must hold integers or strings; row 2 holds 'x' (str), row 0 holds 0 (int)")


def test_validation_label_unseen_in_training(tmp_path):
    message = refused(tmp_path, rows(("a", "x"), ("b", "y")), rows(("a", "y"), ("b", "z")))
    assert message == ("spec.dataset.labelColumn: label 'z' does not occur in the train split "
                       f"(column 'label', eval split {tmp_path / 'validation.jsonl'}, row 1)")


@pytest.mark.parametrize("train,row", [
    (rows(("a", 0), (None, 1)), 1),
    ('{"text": "a", "label": 0}\n{"txt": "b", "label": 1}\n', 1),
], ids=["null", "key missing in a row"])
def test_text_without_a_value_names_the_row(tmp_path, train, row):
    assert refused(tmp_path, train) == (
        f"spec.dataset.textColumn: column 'text' of the train split ({tmp_path / 'train.jsonl'}) "
        f"has no value in row {row} (1 such rows); fill or drop them")


def test_nested_text_is_refused(tmp_path):
    message = refused(tmp_path, rows((["a", "b"], 0), (["c"], 1)))
    assert "column 'text' of the train split" in message and "holds list<" in message


def test_empty_strings_are_kept_with_a_warning(tmp_path, caplog):
    labels = prepare(tmp_path, rows(("", 0), ("b", 1)))
    assert labels.names == ["0", "1"]
    assert "column 'text' of the train split" in caplog.text and "1 empty strings" in caplog.text


# --------------------------------------------------------------------------- properties


@settings(max_examples=300, **FUZZ)
@given(data_bytes=st.binary(min_size=1, max_size=64), chunk=st.integers(1, 8))
def test_utf8_check_names_the_line_of_the_first_bad_byte(tmp_path, monkeypatch, data_bytes,
                                                         chunk):
    monkeypatch.setattr(data, "_CHUNK", chunk)  # cut multi-byte characters across reads
    path = tmp_path / "t.jsonl"
    path.write_bytes(data_bytes)
    try:
        data_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data_bytes.count(b"\n", 0, exc.start) + 1
        with pytest.raises(InvalidData, match=rf": line {line}: not UTF-8 text \(byte "
                                              rf"0x{data_bytes[exc.start]:02x}\)"):
            data.check_file_bytes(path, "f", "json")
    else:
        data.check_file_bytes(path, "f", "json")


LABELS = st.one_of(st.integers(), st.text(max_size=5), st.none(), st.booleans(), st.floats(),
                   st.lists(st.integers(), max_size=2))


@settings(max_examples=300, **FUZZ)
@given(st.lists(LABELS, max_size=8))
def test_odd_label_explains_any_column(values):
    text = data._odd_label(values)
    uniform = values and (all(isinstance(v, str) for v in values) or all(
        isinstance(v, int) and not isinstance(v, bool) for v in values))
    assert (text == "") == (not values or bool(uniform))
    if text:
        assert text.startswith("; row ")


@settings(max_examples=200, **FUZZ)
@given(st.lists(st.sampled_from([ValueError("x"), StopIteration(), KeyError(""),
                                 RuntimeError("An error occurred while generating the dataset"),
                                 OSError("no rows? Instruction corresponds to no data!")]),
                min_size=1, max_size=5))
def test_load_error_always_gives_a_line(chain):
    exc = None
    for inner in reversed(chain):
        outer = type(inner)(*inner.args)
        outer.__cause__ = exc
        exc = outer
    text = data._load_error(exc)
    assert text and "\n" not in text
