"""Manifests from any bytes: documents of plain JSON values, or one line naming file:line:col.

The table below is the corpus of nasty files (each case is the whole file); hypothesis then
throws arbitrary bytes and YAML-shaped text at the reader and the validator.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftjob_api.manifest_reader import MAX_BYTES, MAX_DEPTH, load_bytes, read_manifest
from ftjob_api.manifests import ManifestError
from ftjob_api.validation import validate_document

from .conftest import GOOD

# No example database in the shared checkout; no deadline on a busy machine.
FUZZ = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])



def refusal(data: bytes) -> str:
    with pytest.raises(ManifestError) as caught:
        load_bytes(data, "job.yaml")
    return str(caught.value)


# (name, file content, the message must start with, and contain)
REFUSED = [
    ("utf8 broken", GOOD.encode() + b"# caf\xe9\n", "job.yaml:9:6: ", "not UTF-8 text (byte 0xe9)"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "job.yaml:3:1: ", "binary file"),
    ("utf16", GOOD.encode("utf-16"), "job.yaml: ", "UTF-16 (little-endian); save it as UTF-8"),
    ("control char", b"kind: a\x07b\n", "job.yaml:1:8: ", "character U+0007 is not allowed"),
    ("tab indent", b"spec:\n\ttask: x\n", "job.yaml:2:1: ", "spaces, not tabs"),
    ("duplicate key", GOOD.replace("kind: FineTuneJob", "kind: FineTuneJob\nkind: Pod").encode(),
     "job.yaml:3:1: ", "duplicate key 'kind' (first at line 2)"),
    ("duplicate nested", b"spec:\n  model: {name: a, name: b}\n", "job.yaml:2:20: ",
     "duplicate key 'name' (first at line 2)"),
    ("int key", b"spec:\n  1: x\n", "job.yaml:2:3: ",
     "key 1 is a number, not a string; quote it (\"1\")"),
    ("bool key", b"on: x\n", "job.yaml:1:1: ",
     "key True is a boolean, not a string; quote it (\"on\")"),
    ("null key", b"~: x\n", "job.yaml:1:1: ", "key None is null, not a string"),
    ("list key", b"{[a]: 1}\n", "job.yaml:1:2: ", "a list cannot be a key"),
    ("nan", b"spec: {trainingArguments: {learning_rate: .nan}}\n", "job.yaml:1:43: ",
     ".nan is not a number; JSON (and so the Kubernetes API) has only finite numbers"),
    ("inf", b"x: -.inf\n", "job.yaml:1:4: ", "-.inf is infinite"),
    ("float overflow", b"x: 1e400\n", "job.yaml:1:4: ", "1e400 is infinite"),
    ("huge int", b"x: 99999999999999999999\n", "job.yaml:1:4: ", "does not fit in 64 bits"),
    ("binary tag", b"x: !!binary aGVsbG8=\n", "job.yaml:1:4: ", "binary data (!!binary)"),
    ("set", b"!!set {a, b}\n", "job.yaml:1:1: ", "a set (!!set)"),
    ("python tag", b"x: !!python/object/apply:os.system [ls]\n", "job.yaml:1:4: ",
     "the tag !!python/object/apply:os.system cannot be sent"),
    ("deep flow", b"a: " + b"[" * 5000 + b"]" * 5000, "job.yaml:1:",
     f"nested deeper than {MAX_DEPTH}"),
    ("deep block", "".join("  " * i + "k:\n" for i in range(200)).encode(), "job.yaml:",
     f"nested deeper than {MAX_DEPTH}"),
    ("unclosed", b"spec:\n  task: [unclosed\n", "job.yaml:3:1: ", "not valid YAML"),
    ("bad merge", b"b: &b {a: 1}\nx:\n  <<: [*b, 3]\n", "job.yaml:3:12: ",
     "expected a mapping for merging"),
    ("undefined alias", b"x: *nope\n", "job.yaml:1:4: ", "found undefined alias"),
]


@pytest.mark.parametrize("data,prefix,fragment", [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_nasty_files_are_one_line_naming_the_place(data, prefix, fragment):
    message = refusal(data)
    assert "\n" not in message
    assert message.startswith(prefix), message
    assert fragment in message, message


def test_too_large_file_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(GOOD.encode() + b"#" + b"x" * MAX_BYTES + b"\n")
    with pytest.raises(ManifestError, match=r"big.yaml: larger than 4 MiB"):
        read_manifest(path)
    with pytest.raises(ManifestError, match=r"4.0 MiB is too large"):
        load_bytes(path.read_bytes(), "big.yaml")


def test_unreadable_paths(tmp_path):
    with pytest.raises(ManifestError, match=r"nope.yaml: cannot read: No such file"):
        read_manifest(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match=r"cannot read: Is a directory"):
        read_manifest(tmp_path)


@pytest.mark.parametrize("data", [
    b"\xef\xbb\xbf" + GOOD.encode(),
    GOOD.replace("\n", "\r\n").encode(),
    GOOD.replace("learning_rate: 5e-5", "learning_rate: 5.0e-05").encode(),
    GOOD.replace("trainingArguments: {learning_rate: 5e-5, max_steps: 100}",
                 "trainingArguments: {<<: *args, max_steps: 7}")
        .replace("spec:\n", "x-base: &args {learning_rate: 5e-5, max_steps: 100}\nspec:\n")
        .encode(),
], ids=["utf8 BOM", "CRLF", "YAML 1.2 float", "anchor and merge key"])
def test_accepted_variants_read_the_same_job(data):
    (doc,) = load_bytes(data, "job.yaml")
    spec = doc.body["spec"]
    assert spec["task"] == "causal-lm"
    assert spec["trainingArguments"]["learning_rate"] == 5e-5


def test_merge_key_overrides_and_timestamps_stay_strings():
    (doc,) = load_bytes(b"a: &a {x: 1, y: 2}\nb: {<<: *a, y: 3}\nwhen: 2020-01-02\neq: =\n", "f")
    assert doc.body["b"] == {"x": 1, "y": 3}
    assert doc.body["when"] == "2020-01-02" and doc.body["eq"] == "="


def is_json_value(value, depth=0) -> bool:
    assert depth <= MAX_DEPTH + 1
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json_value(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(is_json_value(v, depth + 1) for v in value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, float) and math.isfinite(value)


def check_any_input(data: bytes) -> None:
    """The contract: documents of JSON values that validate without raising, or one line."""
    try:
        documents = load_bytes(data, "f.yaml")
    except ManifestError as exc:
        message = str(exc)
        assert message.startswith("f.yaml") and "\n" not in message, message
        return
    for doc in documents:
        assert is_json_value(doc.body)
        json.dumps(doc.body, allow_nan=False)
        for problem in validate_document(doc.body):
            doc.locate(problem.path)


YAML_PIECES = st.sampled_from([
    "a", "kind", "spec", "FineTuneJob", "1", "-1", "0x1F", "1e5", "1e400", ".nan", ".inf", "~",
    "true", "on", "2020-01-01", "=", "<<", ":", ": ", "- ", "[", "]", "{", "}", ",", "&a ", "*a",
    "!!str ", "!!binary ", "!!set ", "? ", "|\n", ">-\n", "'", '"', "#", "\n", "\r\n", "  ", "\t",
    "---\n", "...\n", "\ufeff", "\x85", "é", "\x00", "%YAML 1.1\n",
])


@settings(max_examples=300, **FUZZ)
@given(st.binary(max_size=512))
def test_any_bytes(data):
    check_any_input(data)


@settings(max_examples=400, **FUZZ)
@given(st.lists(YAML_PIECES, max_size=60).map("".join))
def test_yaml_shaped_text(text):
    check_any_input(text.encode("utf-8", "surrogatepass"))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, **FUZZ)
@given(JSON_VALUES)
def test_any_json_value_round_trips(value):
    """JSON is YAML: the reader gives back exactly the value a JSON file holds."""
    (doc,) = load_bytes(json.dumps({"v": value}).encode(), "f.yaml")
    assert doc.body == {"v": value}


@settings(max_examples=200, **FUZZ)
@given(st.dictionaries(st.sampled_from(["task", "model", "dataset", "trainingArguments",
                                        "resources", "storage", "env", "volumes", "peft",
                                        "deepspeed", "restartPolicy", "earlyStopping"]),
                       JSON_VALUES, max_size=8))
def test_validate_never_raises_on_any_spec(spec):
    doc = {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
           "metadata": {"name": "x"}, "spec": spec}
    problems = validate_document(doc)
    assert all(p.path and p.message for p in problems)


def test_cli_binary_and_nasty_files_give_one_line_each(tmp_path):
    files = []
    for name, data, *_ in REFUSED[:6]:
        path = tmp_path / f"{name.replace(' ', '-')}.yaml"
        path.write_bytes(data)
        files.append(path)
    (tmp_path / "random.bin").write_bytes(os.urandom(2048))
    files.append(tmp_path / "random.bin")
    result = subprocess.run([sys.executable, "-m", "ftjob_cli.cli", "validate",
                             *map(str, files)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(files)
    for path, line in zip(files, lines):
        assert line.startswith(f"error: {path}"), line


def test_cli_run_local_refuses_a_binary_file_in_one_line(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a manifest")
    result = subprocess.run([sys.executable, "-m", "ftjob_cli.cli", "run", str(path),
                             "--local"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {path}:1:1: not UTF-8 text (byte 0xff); save the file as UTF-8"]


def test_surrogate_escapes_pair_up_or_are_refused():
    (doc,) = load_bytes(b'x: "\\ud83d\\ude00"\n', "f.yaml")
    assert doc.body == {"x": "\U0001F600"}
    assert refusal(b'x: "\\ud800"\n').startswith("job.yaml:1:4: not valid YAML: a lone surrogate")


def test_a_bug_in_ftjob_is_one_line_and_exit_3(monkeypatch, capsys):
    from ftjob_cli import cli

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(cli, "cmd_validate", broken)
    monkeypatch.delenv("FTJOB_DEBUG", raising=False)
    assert cli.main(["validate", "x.yaml"]) == cli.EXIT_INTERNAL == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error in ftjob validate (KeyError: 'boom')" in err
    monkeypatch.setenv("FTJOB_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["validate", "x.yaml"])
