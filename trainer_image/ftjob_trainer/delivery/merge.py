"""A LoRA adapter merged into its base weights: a plain Transformers model folder.

`<output>/final` of a job with `spec.peft` holds only the adapter (and the tokenizer, and
`labels.json` for classification). `merge_adapter` loads the base model the way the trainer
loaded it (`modeling.load_model`: same Auto class, same label head, same dtype), applies the
adapter with peft, `merge_and_unload()`s it and saves the result, sharded as
`save_pretrained` shards, with the tokenizer and `labels.json` beside it: the folder loads
with `AutoModelFor<Task>.from_pretrained(folder)` and `AutoTokenizer` alone, no peft.

Crash and disk-full safety: the merged model is written into a temporary folder next to
the target (same file system), its files flushed, and a marker (`ftjob-merged.json`: the
adapter's digest, the base, every file with its size) written last; only then is the
folder renamed into place. A kill or a full disk mid-write leaves no folder at the target
(the temporary one is removed, or on the next call); the adapter folder is only ever read.
A target whose marker verifies and names the same adapter and base is reused as it is.

World rank 0 alone calls this (one process per output folder): the temporary folder's name
is fixed, so that a killed merge's leftovers are found and removed by the next one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftjob_api import api

from .. import checkpoints
from ..exits import TrainerError

log = logging.getLogger(__name__)

MERGED_DIR = "merged"  # <output>/merged, next to <output>/final
MARKER = "ftjob-merged.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
LABELS_FILE = "labels.json"
# Hugging Face's long-standing shard size (transformers 5's save_pretrained defaults to
# 50GB): smaller shards download, resume and push in parallel.
DEFAULT_MAX_SHARD_SIZE = "5GB"
# Files of the adapter folder that are not carried into the merged one: the adapter itself,
# peft's card template (the model card is written separately) and the pickled arguments.
_NOT_CARRIED = frozenset({ADAPTER_CONFIG, *ADAPTER_WEIGHTS, "README.md", "training_args.bin"})
# peft's task_type -> the job's task (whose Auto class the trainer loaded the base with).
_TASK_OF_PEFT_TYPE = {
    "SEQ_CLS": api.Task.SEQUENCE_CLASSIFICATION.value,
    "CAUSAL_LM": api.Task.CAUSAL_LM.value,
    "SEQ_2_SEQ_LM": api.Task.SEQ2SEQ.value,
}
_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# safetensors reports a full disk as SafetensorError with the OS's words, without an errno.
_NO_SPACE_WORDS = ("no space left on device", "os error 28", "disk quota exceeded",
                   "os error 122")


class MergeError(TrainerError):
    """The adapter cannot be merged (no adapter, an unreadable config, a bad target)."""


class NoSpaceForMerge(MergeError):
    """The disk filled up while the merged model was written; nothing was left behind."""


@dataclass(frozen=True)
class MergeResult:
    path: Path  # the merged model folder
    reused: bool  # True: a complete merge of the same adapter and base was already there
    files: tuple[str, ...]  # its files (relative), the marker and a model card excluded


def merge_adapter(final_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  base_model: str | None = None, revision: str | None = None,
                  task: str | None = None,
                  max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> MergeResult:
    """Merge the LoRA adapter in `final_dir` into its base and save it as `out_dir`.

    `base_model`, `revision`: what the trainer loaded the base from, i.e.
    `modeling.model_source(spec)` (a Hub name or a folder; `pkg://` is resolved as the
    trainer resolves it); by default the adapter's own `base_model_name_or_path` and
    `revision`. A job with a spec passes them: the trainer does not hand
    `spec.model.revision` to peft, so the adapter's config does not record it. `task`: the
    job's task (the Auto class); by default from the adapter's `task_type`.
    `max_shard_size` as `save_pretrained` takes it ("5GB", or bytes); transformers 5 always
    writes safetensors. Loads the base on the CPU, in the dtype the trainer loaded it in.

    Raises MergeError (no adapter in `final_dir`, `out_dir` overlapping it), NoSpaceForMerge
    (disk full: no `out_dir` is left, `final_dir` untouched), and what loading the base
    raises (`InvalidModel`, `HubUnreachable`).
    """
    final_dir, out_dir = Path(final_dir), Path(out_dir)
    _check_target(final_dir, out_dir)
    config = read_adapter_config(final_dir)
    source, revision = base_source(config, base_model, revision)
    task = task or _task_of(config, final_dir)
    identity = {"adapterDigest": adapter_digest(final_dir), "baseModel": source,
                "revision": revision, "maxShardSize": max_shard_size}
    existing = verified_merge(out_dir, identity)
    if existing is not None:
        log.info("reusing the merged model in %s (same adapter and base)", out_dir)
        return MergeResult(out_dir, True, existing)

    model = _merged_model(final_dir, source, revision, task)
    partial = partial_dir(out_dir)
    _remove(partial)  # a killed merge's leftovers
    _remove(_replaced_dir(out_dir))
    try:
        files = _write(model, final_dir, partial, max_shard_size, identity)
        _commit(partial, out_dir)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)  # what was written of it, if anything
        if is_no_space(exc):
            raise NoSpaceForMerge(_no_space_message(out_dir, model)) from exc
        raise
    log.info("merged the adapter in %s into %s: %s", final_dir, out_dir, source)
    return MergeResult(out_dir, False, files)


# --------------------------------------------------------------------------- inputs


def read_adapter_config(final_dir: Path) -> dict[str, Any]:
    path = final_dir / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise MergeError(f"{final_dir}: no LoRA adapter to merge ({ADAPTER_CONFIG} is "
                         "missing; only a job with spec.peft saves one)") from exc
    except (OSError, ValueError) as exc:
        raise MergeError(f"{path}: unreadable adapter config: {exc}") from exc
    if not isinstance(config, dict):
        raise MergeError(f"{path}: holds {type(config).__name__}, not an object")
    if config.get("peft_type") not in (None, "LORA"):
        raise MergeError(f"{path}: a {config.get('peft_type')} adapter; only LoRA is merged")
    return config


def base_source(config: dict[str, Any], base_model: str | None,
                revision: str | None) -> tuple[str, str | None]:
    """(what to load the base from, its revision): the caller's, else the adapter's."""
    from ..modeling import PKG_SCHEME, resolve_model_path

    source = base_model or config.get("base_model_name_or_path")
    if not isinstance(source, str) or not source:
        raise MergeError(f"{ADAPTER_CONFIG} names no base model (base_model_name_or_path); "
                         "pass the base model")
    if source.startswith(PKG_SCHEME):
        source = str(resolve_model_path(source))
    if base_model is None and revision is None:
        revision = config.get("revision") or None
    return source, revision


def _task_of(config: dict[str, Any], final_dir: Path) -> str:
    task_type = config.get("task_type")
    if task_type not in _TASK_OF_PEFT_TYPE:
        raise MergeError(f"{final_dir / ADAPTER_CONFIG}: task_type {task_type!r} is none of "
                         f"{', '.join(_TASK_OF_PEFT_TYPE)}; pass the job's task")
    return _TASK_OF_PEFT_TYPE[task_type]


def adapter_digest(final_dir: Path) -> str:
    """SHA-256 over the adapter's config and weights: what a merged folder was made from."""
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, *ADAPTER_WEIGHTS):
        path = final_dir / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with open(path, "rb") as source:
                for block in iter(lambda: source.read(1 << 20), b""):
                    digest.update(block)
    return "sha256:" + digest.hexdigest()


def _check_target(final_dir: Path, out_dir: Path) -> None:
    final, out = final_dir.resolve(), out_dir.resolve()
    if final == out or final in out.parents or out in final.parents:
        raise MergeError(f"{out_dir}: the merged model's folder must be outside the adapter's "
                         f"({final_dir}) and not hold it")


# --------------------------------------------------------------------------- the merge


def _merged_model(final_dir: Path, source: str, revision: str | None, task: str) -> Any:
    """The base as the trainer loads it, with the adapter merged in and peft removed."""
    from peft import PeftModel

    from .. import modeling

    field = "spec.model.path" if Path(source).is_dir() else "spec.model.name"
    kwargs = {"revision": revision} if revision else {}
    if _has_tokenizer(final_dir):
        tokenizer = modeling.load_tokenizer(str(final_dir), {}, f"the tokenizer in {final_dir}")
    else:
        tokenizer = modeling.load_tokenizer(source, kwargs, field)
    base = modeling.load_model(task, source, kwargs, field, tokenizer, _id2label(final_dir))
    model = PeftModel.from_pretrained(base, str(final_dir))
    return model.merge_and_unload()


def _has_tokenizer(final_dir: Path) -> bool:
    return any((final_dir / name).is_file()
               for name in ("tokenizer_config.json", "tokenizer.json"))


def _id2label(final_dir: Path) -> dict[int, str] | None:
    path = final_dir / LABELS_FILE
    if not path.is_file():
        return None
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MergeError(f"{path}: unreadable label names: {exc}") from exc
    if not isinstance(names, list) or not names:
        raise MergeError(f"{path}: expected a list of label names")
    return dict(enumerate(names))


def _write(model: Any, final_dir: Path, folder: Path, max_shard_size: int | str,
           identity: dict[str, Any]) -> tuple[str, ...]:
    """The merged model, the adapter folder's other files (tokenizer, labels), flushed, and
    the marker last."""
    folder.mkdir(parents=True)
    for path in sorted(final_dir.iterdir()):
        if path.is_file() and path.name not in _NOT_CARRIED:
            shutil.copyfile(path, folder / path.name)
    model.save_pretrained(str(folder), max_shard_size=max_shard_size)
    files = file_list(folder)
    for rel in files:
        _fsync_file(folder / rel)
    _write_marker(folder, {**identity, "files": files})
    _fsync_dir(folder)
    return tuple(files)


def _commit(partial: Path, out_dir: Path) -> None:
    """Rename the complete folder into place; an older merge there is replaced."""
    if out_dir.exists() or out_dir.is_symlink():
        old = _replaced_dir(out_dir)
        os.replace(out_dir, old)
        os.replace(partial, out_dir)
        shutil.rmtree(old, ignore_errors=True)  # the next merge removes what is left of it
    else:
        os.replace(partial, out_dir)
    _fsync_dir(out_dir.parent)


def _replaced_dir(out_dir: Path) -> Path:
    """Where an older merge is moved while the new one is renamed into place."""
    return out_dir.parent / f".{out_dir.name}.replaced"


# --------------------------------------------------------------------------- the marker


def partial_dir(out_dir: Path) -> Path:
    """Where the merged model is written before it is complete."""
    return out_dir.parent / f".{out_dir.name}.partial"


def file_list(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file under `folder`, except the marker and a model
    card (README.md is written after the merge)."""
    return checkpoints.file_list(folder, skip=(MARKER, "README.md"))


def verified_merge(out_dir: Path, identity: dict[str, Any]) -> tuple[str, ...] | None:
    """The files of a complete merge in `out_dir` of this adapter and base, or None."""
    try:
        marker = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or any(marker.get(k) != v for k, v in identity.items()):
        return None
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return None
    for rel, size in files.items():
        path = out_dir / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return None
        try:
            if path.stat().st_size != size:
                return None
        except (OSError, ValueError):
            return None
    return tuple(files)


def _write_marker(folder: Path, marker: dict[str, Any]) -> None:
    checkpoints.write_json_durably(folder / MARKER, marker)


# --------------------------------------------------------------------------- disk


def is_no_space(exc: BaseException) -> bool:
    """A full disk or quota, however the writer said it (OSError's errno, or safetensors'
    SafetensorError, which carries only the OS's words), anywhere in the exception chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ERRNOS:
            return True
        if any(words in str(current).lower() for words in _NO_SPACE_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


def _no_space_message(out_dir: Path, model: Any) -> str:
    needed = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        free = f"{_size(shutil.disk_usage(out_dir.parent).free)} free now"
    except OSError:
        free = "free space unknown"
    return (f"{out_dir}: no space left on the device while writing the merged model (it "
            f"needs about {_size(needed)}; {free}); no partial folder was left "
            "and the adapter is untouched; grow spec.storage.size or free space on the "
            "output volume")


def _size(count: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count / 2**10:.1f} KiB"


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory
    finally:
        os.close(fd)
