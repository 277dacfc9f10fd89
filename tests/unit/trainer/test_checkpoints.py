"""Checkpoint discovery on folders the tests build: markers, torn saves, move-aside, rotation."""

from __future__ import annotations

import json

from ftjob_trainer import checkpoints


def make_checkpoint(root, step, *, complete=True, files=None):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name, content in (files or {"model.safetensors": b"w" * 64, "trainer_state.json": b"{}",
                                     "global_step/shard_rank1.pt": b"s" * 10}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    if complete:
        checkpoints.write_marker(folder, step)
    return folder


def test_marker_lists_every_file_with_its_size(tmp_path):
    folder = make_checkpoint(tmp_path, 10)
    marker = json.loads((folder / checkpoints.MARKER).read_text())
    assert marker["step"] == 10
    assert marker["files"] == {"global_step/shard_rank1.pt": 10, "model.safetensors": 64,
                               "trainer_state.json": 2}
    assert marker["savedAt"].endswith("Z")
    assert not list(folder.glob(".*tmp"))  # written through a temp file, then renamed
    assert checkpoints.verify(folder).complete


def test_a_truncated_or_missing_file_fails_verification(tmp_path):
    folder = make_checkpoint(tmp_path, 10)
    (folder / "model.safetensors").write_bytes(b"w" * 10)
    verdict = checkpoints.verify(folder)
    assert not verdict.complete and "model.safetensors has 10 bytes" in verdict.why
    (folder / "model.safetensors").unlink()
    assert "model.safetensors is missing" in checkpoints.verify(folder).why


def test_no_marker_or_a_marker_for_another_step_is_incomplete(tmp_path):
    assert "no completion marker" in checkpoints.verify(make_checkpoint(tmp_path, 5, complete=False)).why
    folder = make_checkpoint(tmp_path, 7)
    marker = json.loads((folder / checkpoints.MARKER).read_text())
    marker["step"] = 6
    (folder / checkpoints.MARKER).write_text(json.dumps(marker))
    assert not checkpoints.verify(folder).complete
    (folder / checkpoints.MARKER).write_text("{not json")
    assert "unreadable" in checkpoints.verify(folder).why


def test_newest_complete_is_chosen_by_step_not_by_name_order(tmp_path):
    make_checkpoint(tmp_path, 9)
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 100, complete=False)
    (tmp_path / "final").mkdir()
    assert [p.name for p in checkpoints.candidates(tmp_path)] == [
        "checkpoint-100", "checkpoint-10", "checkpoint-9"]
    assert checkpoints.latest_complete(tmp_path).step == 10


def test_prepare_resume_moves_incomplete_aside_and_keeps_only_the_newest_copy(tmp_path):
    make_checkpoint(tmp_path, 10)
    make_checkpoint(tmp_path, 20, complete=False)
    chosen = checkpoints.prepare_resume(tmp_path)
    assert chosen.step == 10 and chosen.path == tmp_path / "checkpoint-10"
    aside = tmp_path / checkpoints.ASIDE_DIR
    assert [p.name for p in aside.iterdir()] == ["checkpoint-20"]
    assert not (tmp_path / "checkpoint-20").exists()

    make_checkpoint(tmp_path, 30, complete=False)
    assert checkpoints.prepare_resume(tmp_path).step == 10
    assert [p.name for p in aside.iterdir()] == ["checkpoint-30"]


def test_no_complete_checkpoint_means_a_fresh_start(tmp_path):
    make_checkpoint(tmp_path, 10, complete=False)
    assert checkpoints.prepare_resume(tmp_path) is None
    assert checkpoints.prepare_resume(tmp_path / "missing") is None


def test_rotation_keeps_the_newest_and_the_best():
    assert checkpoints.to_delete([10, 20, 30, 40], 2, keep=set()) == [10, 20]
    assert checkpoints.to_delete([10, 20, 30, 40], 2, keep={10}) == [20]
    assert checkpoints.to_delete([10, 20], None, keep=set()) == []
    assert checkpoints.to_delete([10, 20], 5, keep=set()) == []


def test_rotate_never_counts_or_deletes_incomplete_folders(tmp_path):
    for step in (10, 20, 30):
        make_checkpoint(tmp_path, step)
    make_checkpoint(tmp_path, 40, complete=False)
    removed = checkpoints.rotate(tmp_path, 2, keep_paths=set())
    assert [p.name for p in removed] == ["checkpoint-10"]
    assert sorted(p.name for p in checkpoints.candidates(tmp_path)) == [
        "checkpoint-20", "checkpoint-30", "checkpoint-40"]
