"""Broken checkpoint folders: the verifier says what is wrong and resume falls back a step.

Before, a marker holding JSON that is not an object raised AttributeError in `verify` (every
attempt, so a restart loop), and a corrupt trainer_state.json passed the verifier and crashed
Trainer's resume with a JSONDecodeError on every attempt.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftjob_trainer import checkpoints

from .test_checkpoints import make_checkpoint

FUZZ = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])


def rewrite_marker(folder, **changes):
    marker = json.loads((folder / checkpoints.MARKER).read_text())
    marker.update(changes)
    (folder / checkpoints.MARKER).write_text(json.dumps(marker))


def test_corrupt_trainer_state_falls_back_to_the_previous_checkpoint(tmp_path):
    make_checkpoint(tmp_path, 5)
    newest = make_checkpoint(tmp_path, 10, files={"model.safetensors": b"w" * 8,
                                                  "trainer_state.json": b'{"global_step": 1'})
    verdict = checkpoints.verify(newest)
    assert not verdict.complete
    assert verdict.why.startswith("trainer_state.json is unreadable: Expecting")
    chosen = checkpoints.prepare_resume(tmp_path)
    assert chosen.step == 5
    assert (tmp_path / checkpoints.ASIDE_DIR / "checkpoint-10").is_dir()


def test_trainer_state_of_another_step_or_not_an_object(tmp_path):
    folder = make_checkpoint(tmp_path, 10, files={"trainer_state.json": b'{"global_step": 9}'})
    assert checkpoints.verify(folder).why == "trainer_state.json names global_step 9, folder 10"
    folder = make_checkpoint(tmp_path, 11, files={"trainer_state.json": b"[1]"})
    assert checkpoints.verify(folder).why == "trainer_state.json holds list, not an object"
    folder = make_checkpoint(tmp_path, 12, files={"trainer_state.json": b'{"global_step": 12}'})
    assert checkpoints.verify(folder).complete


def test_marker_that_is_json_but_not_an_object(tmp_path):
    folder = make_checkpoint(tmp_path, 7)
    for text, why in (("[]", "completion marker holds list, not an object"),
                      ("null", "completion marker holds NoneType, not an object"),
                      ('"7"', "completion marker holds str, not an object")):
        (folder / checkpoints.MARKER).write_text(text)
        verdict = checkpoints.verify(folder)
        assert (verdict.complete, verdict.why) == (False, why)


def test_marker_that_is_not_json_or_not_text(tmp_path):
    folder = make_checkpoint(tmp_path, 7)
    (folder / checkpoints.MARKER).write_bytes(b"\xff\xfe garbage")
    assert checkpoints.verify(folder).why.startswith("unreadable completion marker: 'utf-8'")


def test_marker_files_outside_the_folder_or_odd_sizes(tmp_path):
    folder = make_checkpoint(tmp_path, 7)
    rewrite_marker(folder, files={"/etc/hostname": 1})
    assert checkpoints.verify(folder).why == "marker lists '/etc/hostname', outside the folder"
    rewrite_marker(folder, files={"../checkpoint-7/model.safetensors": 64})
    assert "outside the folder" in checkpoints.verify(folder).why
    rewrite_marker(folder, files={"model.safetensors": "64"})
    assert checkpoints.verify(folder).why == "model.safetensors has 64 bytes, marker says '64'"
    rewrite_marker(folder, files={"model\x00.safetensors": 64})  # found by the fuzz test below
    assert checkpoints.verify(folder).why == "model\x00.safetensors is missing"


def test_folders_that_are_not_checkpoints_are_ignored(tmp_path):
    for name in ("checkpoint-abc", "checkpoint-", "checkpoint--1", "checkpoint-1.5"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-3").write_text("a file, not a folder")
    make_checkpoint(tmp_path, 2)
    assert [p.name for p in checkpoints.candidates(tmp_path)] == ["checkpoint-2"]
    assert checkpoints.prepare_resume(tmp_path).step == 2
    assert (tmp_path / "checkpoint-abc").is_dir()  # not ours: left where it is


def test_move_aside_when_the_aside_path_is_a_file(tmp_path):
    make_checkpoint(tmp_path, 4, complete=False)
    (tmp_path / checkpoints.ASIDE_DIR).write_text("someone's file")
    assert checkpoints.prepare_resume(tmp_path) is None
    assert (tmp_path / checkpoints.ASIDE_DIR / "checkpoint-4").is_dir()


def test_label_count_of_the_checkpoint_must_match_the_data(tmp_path):
    folder = make_checkpoint(tmp_path, 3, files={
        "config.json": json.dumps({"id2label": {"0": "a", "1": "b", "2": "c"}}).encode()})
    ckpt = checkpoints.verify(folder).checkpoint
    assert checkpoints.label_mismatch(ckpt, {0: "a", 1: "b", 2: "c"}) is None
    assert checkpoints.label_mismatch(ckpt, None) is None
    assert checkpoints.label_mismatch(ckpt, {0: "a", 1: "b"}) == (
        f"{folder} was saved by a model with 3 labels, but the data now has 2 (a, b); resume "
        "with the data it was trained on or start in a new output folder")
    lora = make_checkpoint(tmp_path, 4)  # no config.json (an adapter): nothing to compare
    assert checkpoints.label_mismatch(checkpoints.verify(lora).checkpoint, {0: "a"}) is None


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=20), inner, max_size=3), max_leaves=12)


@settings(max_examples=200, **FUZZ)
@given(marker=JSON | st.fixed_dictionaries({"step": st.just(7) | JSON, "files": JSON}),
       state=st.binary(max_size=40) | JSON.map(lambda v: json.dumps(v).encode()))
def test_verify_never_raises_and_never_accepts_a_broken_folder(tmp_path_factory, marker, state):
    root = tmp_path_factory.mktemp("ckpt")
    folder = make_checkpoint(root, 7, files={"model.bin": b"m" * 3, "trainer_state.json": state})
    good = json.loads((folder / checkpoints.MARKER).read_text())
    (folder / checkpoints.MARKER).write_text(json.dumps(marker))
    verdict = checkpoints.verify(folder)
    assert verdict.checkpoint.path == folder and isinstance(verdict.why, str)
    if verdict.complete:  # only when the marker and trainer_state.json really check out
        assert marker["step"] == 7 and marker["files"]
        assert all(good["files"].get(k) == v for k, v in marker["files"].items())
        parsed = json.loads(state)
        assert isinstance(parsed, dict) and parsed.get("global_step") in (None, 7)
    else:
        assert verdict.why
