"""The mounted job file, broken: always InvalidSpec (exit 10, not retried) naming the file."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftjob_api.contract import ExitCode
from ftjob_trainer import job
from ftjob_trainer.exits import InvalidSpec, classify_exception

SPEC = {"task": "causal-lm", "model": {"name": "gpt2"}, "dataset": {"name": "x"}}
GOOD = json.dumps({"metadata": {"name": "j", "namespace": "ns"}, "spec": SPEC}).encode()
FUZZ = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])


def load(tmp_path, content: bytes, **env):
    path = tmp_path / "job.json"
    path.write_bytes(content)
    return job.load_context({"FTJOB_JOB_FILE": str(path), **env})


def refused(tmp_path, content: bytes, **env) -> str:
    with pytest.raises(InvalidSpec) as caught:
        load(tmp_path, content, **env)
    assert classify_exception(caught.value).exit_code == ExitCode.INVALID_SPEC
    assert caught.value.message.startswith(str(tmp_path / "job.json"))
    return caught.value.message


@pytest.mark.parametrize("content,fragment", [
    (b"", "the job file is empty"),
    (b"  \n", "the job file is empty"),
    (GOOD[: len(GOOD) // 2], "not valid JSON (truncated?): "),
    (b'{"spec": {"task": "caf\xe9"}}', "not UTF-8 JSON: invalid continuation byte at byte 22"),
    (b"[" * 100_000, "not valid JSON"),
    (b"[]", "expected an object with a `spec` mapping"),
    (b'{"spec": "x"}', "expected an object with a `spec` mapping"),
], ids=["empty", "blank", "truncated", "latin-1", "deep", "list", "spec not a mapping"])
def test_broken_job_files(tmp_path, content, fragment):
    assert fragment in refused(tmp_path, content)


def test_missing_job_file(tmp_path):
    with pytest.raises(InvalidSpec, match=r"absent.json: cannot read the job file: No such file"):
        job.load_context({"FTJOB_JOB_FILE": str(tmp_path / "absent.json")})


def test_a_newer_operator_fields_are_named_with_what_to_do(tmp_path):
    document = {"metadata": {"name": "j"}, "spec": {**SPEC, "quantization": {"bits": 4}}}
    message = refused(tmp_path, json.dumps(document).encode())
    assert "spec.quantization: unknown field" in message
    assert "a newer operator wrote this job: use the trainer image of the operator's release" \
        in message


def test_unknown_top_level_keys_and_odd_metadata_are_ignored(tmp_path):
    """Top-level extras (e.g. a newer operator's annotations) do not change what to train."""
    ctx = load(tmp_path, json.dumps({"metadata": "x", "spec": SPEC, "extra": 1}).encode())
    assert ctx.name == "job" and ctx.namespace is None
    ctx = load(tmp_path, json.dumps({"metadata": {"name": 7, "namespace": "ns"},
                                     "spec": SPEC}).encode())
    assert (ctx.name, ctx.namespace) == ("job", "ns")


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_progress_interval_must_be_a_finite_number_of_seconds(tmp_path, value):
    with pytest.raises(InvalidSpec, match=rf"FTJOB_PROGRESS_INTERVAL='{value}': expected"):
        load(tmp_path, GOOD, FTJOB_PROGRESS_INTERVAL=value)


@settings(max_examples=300, **FUZZ)
@given(st.binary(max_size=200) | st.builds(lambda n: GOOD[:n], st.integers(0, len(GOOD))))
def test_any_bytes_load_or_refuse_as_invalid_spec(tmp_path, content):
    try:
        ctx = load(tmp_path, content)
    except InvalidSpec as exc:
        assert exc.message.startswith(str(tmp_path / "job.json")) and exc.message
    else:
        assert content == GOOD and ctx.spec.task == "causal-lm"
