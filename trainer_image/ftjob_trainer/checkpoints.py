"""Verified checkpoints: a completion marker written only after every rank finished saving.

Trainer writes `checkpoint-N/` from every rank (DeepSpeed shards included). A kill during
that write leaves a folder that looks like a checkpoint but is not one, and
`resume_from_checkpoint=True` would crash on it forever, or a missing folder would silently
restart from step 0. So after a barrier, world rank 0 writes `ftjob-complete.json` (step,
time, every file with its size) atomically; only folders whose marker verifies count.
Incomplete folders are moved aside (the newest one kept for inspection), never deleted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = "ftjob-complete.json"
PREFIX = "checkpoint-"
ASIDE_DIR = "incomplete-checkpoints"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path
    saved_at: str | None = None


@dataclass(frozen=True)
class Verdict:
    checkpoint: Checkpoint
    complete: bool
    why: str = ""


# --------------------------------------------------------------------------- marker


def file_list(folder: Path, skip: tuple[str, ...] = (MARKER,)) -> dict[str, int]:
    """Relative path -> size of every regular file under `folder`, except those whose
    relative path is in `skip` (the marker)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and relative not in skip:
            files[relative] = path.stat().st_size
    return files


def write_json_durably(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` so that a crash leaves the old file or the new one, whole
    and on disk (a temporary file, fsync, rename): a completion marker's write."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as out:
        json.dump(payload, out, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def write_marker(folder: Path, step: int, now: float | None = None) -> dict[str, Any]:
    saved_at = datetime.fromtimestamp(now or time.time(), timezone.utc)
    marker = {
        "step": step,
        "savedAt": saved_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "files": file_list(folder),
    }
    write_json_durably(folder / MARKER, marker)
    return marker


def verify(folder: Path) -> Verdict:
    """Is `folder` a complete checkpoint? Checks the marker against the files on disk."""
    match = _NAME.match(folder.name)
    step = int(match.group(1)) if match else -1
    unverified = Checkpoint(step, folder)
    try:
        marker = json.loads((folder / MARKER).read_text())
    except FileNotFoundError:
        return Verdict(unverified, False, "no completion marker (the save did not finish)")
    except (OSError, ValueError) as exc:
        return Verdict(unverified, False, f"unreadable completion marker: {exc}")
    if not isinstance(marker, dict):
        return Verdict(unverified, False, f"completion marker holds {type(marker).__name__}, "
                       "not an object")
    if marker.get("step") != step:
        return Verdict(unverified, False, f"marker names step {_short(marker.get('step'))}, "
                       f"folder {step}")
    expected = marker.get("files")
    if not isinstance(expected, dict) or not expected:
        return Verdict(unverified, False, "marker lists no files")
    for rel, size in expected.items():
        if not _inside(rel):
            return Verdict(unverified, False, f"marker lists {_short(rel)}, outside the folder")
        path = folder / rel
        try:
            actual = path.stat().st_size
        except (OSError, ValueError):  # ValueError: a name with a NUL byte, which no file has
            return Verdict(unverified, False, f"{rel} is missing")
        if actual != size:
            return Verdict(unverified, False, f"{rel} has {actual} bytes, marker says "
                           f"{_short(size)}")
    why = _trainer_state_problem(folder, step)
    if why:
        return Verdict(unverified, False, why)
    saved_at = marker.get("savedAt")
    return Verdict(Checkpoint(step, folder, saved_at if isinstance(saved_at, str) else None), True)


TRAINER_STATE = "trainer_state.json"


def _trainer_state_problem(folder: Path, step: int) -> str:
    """Trainer reads trainer_state.json first on resume; a broken one would crash every attempt."""
    path = folder / TRAINER_STATE
    if not path.exists():
        return ""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return f"{TRAINER_STATE} is unreadable: {_short(exc)}"
    if not isinstance(state, dict):
        return f"{TRAINER_STATE} holds {type(state).__name__}, not an object"
    global_step = state.get("global_step")
    if global_step is not None and global_step != step:
        return f"{TRAINER_STATE} names global_step {_short(global_step)}, folder {step}"
    return ""


def _inside(rel: object) -> bool:
    if not isinstance(rel, str) or not rel:
        return False
    parts = Path(rel).parts
    return not Path(rel).is_absolute() and ".." not in parts


def _short(value: object, limit: int = 80) -> str:
    text = " ".join(str(value).split()) if isinstance(value, BaseException) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def label_mismatch(checkpoint: Checkpoint, id2label: dict[int, str] | None) -> str | None:
    """Why a classification checkpoint cannot be resumed with these labels, or None.

    Resuming loads the classifier head from the checkpoint: another label count is a
    `size mismatch` in load_state_dict on every attempt, so the caller fails permanently."""
    if id2label is None:
        return None
    try:
        config = json.loads((checkpoint.path / "config.json").read_text())
    except (OSError, ValueError):
        return None  # a LoRA/DeepSpeed checkpoint without config.json: nothing to compare
    saved = config.get("id2label") if isinstance(config, dict) else None
    if not isinstance(saved, dict):
        return None
    if len(saved) == len(id2label):
        return None
    names = ", ".join(str(v) for v in list(id2label.values())[:10])
    return (f"{checkpoint.path} was saved by a model with {len(saved)} labels, but the data "
            f"now has {len(id2label)} ({names}); resume with the data it was trained on or "
            "start in a new output folder")


# --------------------------------------------------------------------------- discovery


def candidates(output_dir: Path) -> list[Path]:
    """`checkpoint-N` folders, newest step first."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def survey(output_dir: Path) -> list[Verdict]:
    return [verify(p) for p in candidates(output_dir)]


def newest_complete(verdicts: list[Verdict]) -> Checkpoint | None:
    return next((v.checkpoint for v in verdicts if v.complete), None)


def latest_complete(output_dir: Path) -> Checkpoint | None:
    return newest_complete(survey(output_dir))


def prepare_resume(output_dir: Path) -> Checkpoint | None:
    """Move incomplete checkpoints aside and return the newest complete one (rank 0 only).

    Every incomplete folder is moved, not only those newer than the chosen one: Trainer's
    own rotation and `get_last_checkpoint` must never see them.
    """
    verdicts = survey(output_dir)
    for verdict in verdicts:
        if not verdict.complete:
            log.warning("skipping incomplete checkpoint %s: %s", verdict.checkpoint.path, verdict.why)
            move_aside(verdict.checkpoint.path, output_dir / ASIDE_DIR)
    chosen = newest_complete(verdicts)
    if chosen is None:
        log.info("no complete checkpoint in %s: starting at step 0", output_dir)
    else:
        log.info("resuming from %s (step %d)", chosen.path, chosen.step)
    return chosen


def move_aside(folder: Path, aside_root: Path) -> Path:
    """Keep only the newest moved-aside copy: older ones would fill the volume."""
    if aside_root.is_dir() and not aside_root.is_symlink():
        shutil.rmtree(aside_root)
    elif aside_root.exists() or aside_root.is_symlink():
        aside_root.unlink()
    aside_root.mkdir(parents=True)
    target = aside_root / folder.name
    os.replace(folder, target)
    return target


# --------------------------------------------------------------------------- rotation


def to_delete(complete_steps: list[int], limit: int | None, keep: set[int]) -> list[int]:
    """Steps to delete so that the newest `limit` complete checkpoints remain (pure).

    Steps in `keep` (the best model's checkpoint) survive on top of the limit, as in Trainer.
    """
    if not limit or limit < 1:
        return []
    ordered = sorted(complete_steps, reverse=True)
    return sorted(s for s in ordered[limit:] if s not in keep)


def rotate(output_dir: Path, limit: int | None, keep_paths: set[str]) -> list[Path]:
    complete = [v.checkpoint for v in survey(output_dir) if v.complete]
    keep = {c.step for c in complete if str(c.path) in keep_paths}
    doomed = set(to_delete([c.step for c in complete], limit, keep))
    removed = []
    for ckpt in complete:
        if ckpt.step in doomed:
            shutil.rmtree(ckpt.path, ignore_errors=True)
            removed.append(ckpt.path)
    return removed
