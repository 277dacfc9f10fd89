"""The datasets: load (Hub id or local files), pick splits, check columns and labels, tokenize.

Every problem a user can fix in the manifest or the data raises InvalidData naming the
spec field and the file or split, so the operator can fail the job at once instead of
restarting it.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftjob_api import api, dataset_formats

from . import causal_lm_data, preference
from .exits import HubUnreachable, InvalidData, is_network_error

log = logging.getLogger(__name__)

_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Splits:
    train: Any
    eval: Any | None
    test: Any | None
    origin: dict[str, str]  # split -> where it came from, for messages


# --------------------------------------------------------------------------- loading


def load_splits(ds: api.DatasetSource, files_base: Path | None = None) -> Splits:
    if ds.files is not None:
        raw, origin = _load_files(ds.files, files_base)
    else:
        raw, origin = _load_hub(ds)

    train = _split(raw, ds.train_split, "spec.dataset.trainSplit", origin)
    evaluation = None
    if ds.eval_fraction is not None:
        if len(train) < 2:
            raise InvalidData(f"spec.dataset.evalFraction: the train split ({origin[ds.train_split]}) "
                              f"has {len(train)} rows, too few to carve out an evaluation split")
        carved = train.train_test_split(test_size=ds.eval_fraction, seed=ds.shuffle_seed)
        train, evaluation = carved["train"], carved["test"]
        origin["eval"] = f"{ds.eval_fraction:g} of {origin[ds.train_split]}"
    elif ds.resolved_eval_split is not None:
        evaluation = _split(raw, ds.resolved_eval_split, "spec.dataset.evalSplit", origin)
        origin["eval"] = origin[ds.resolved_eval_split]
    test = None
    if ds.resolved_test_split is not None:
        test = _split(raw, ds.resolved_test_split, "spec.dataset.testSplit", origin)
        origin["test"] = origin[ds.resolved_test_split]
    origin["train"] = origin[ds.train_split]

    if ds.max_train_samples is not None and len(train) > ds.max_train_samples:
        train = train.shuffle(seed=ds.shuffle_seed).select(range(ds.max_train_samples))
    if evaluation is not None and ds.max_eval_samples is not None and len(evaluation) > ds.max_eval_samples:
        evaluation = evaluation.shuffle(seed=ds.shuffle_seed).select(range(ds.max_eval_samples))
    if len(train) == 0:
        raise InvalidData(f"spec.dataset: the train split ({origin['train']}) has no rows")
    return Splits(train, evaluation, test, origin)


def _load_files(files: api.DataFiles, base: Path | None) -> tuple[Any, dict[str, str]]:
    import datasets

    paths: dict[str, str] = {}
    for split in ("train", "validation", "test"):
        value = getattr(files, split)
        if value is None:
            continue
        path = Path(value)
        if base is not None and not path.is_absolute():
            path = base / path
        field = f"spec.dataset.files.{split}"
        if not path.is_file():
            raise InvalidData(f"{field}: {path}: no such file")
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise InvalidData(f"{field}: {path}: cannot read: {exc.strerror}") from exc
        paths[split] = str(path)

    fmt = _FORMATS[Path(paths["train"]).suffix.lower()]
    for split, path in paths.items():
        check_file_bytes(Path(path), f"spec.dataset.files.{split}", fmt)
    loaded = {}
    for split, path in paths.items():
        # One file at a time, so a broken file is named in the error.
        try:
            loaded[split] = datasets.load_dataset(fmt, data_files={split: path}, split=split)
        except Exception as exc:  # noqa: BLE001 - any parse error is a data problem here
            raise InvalidData(f"spec.dataset.files.{split}: {path}: cannot be read as {fmt}: "
                              f"{_load_error(exc)}") from exc
    return loaded, dict(paths)


_CHUNK = 1 << 20


def check_file_bytes(path: Path, field: str, fmt: str) -> None:
    """An empty file, or a json/csv file that is not UTF-8, named with its line (streamed)."""
    if path.stat().st_size == 0:
        raise InvalidData(f"{field}: {path}: the file is empty")
    if fmt == "parquet":
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                # exc.object is the decoder's carried-over bytes (at most 3) + this chunk
                carried = len(exc.object) - len(chunk)
                line += chunk.count(b"\n", 0, max(0, exc.start - carried))
                raise InvalidData(f"{field}: {path}: line {line}: not UTF-8 text (byte "
                                  f"0x{exc.object[exc.start]:02x}); save the file as "
                                  "UTF-8") from None
            if not chunk:
                return
            line += chunk.count(b"\n")


_GENERIC = ("An error occurred while generating the dataset",)


def _load_error(exc: BaseException) -> str:
    """The cause a user can act on: the outermost exception datasets chained that says more
    than "An error occurred while generating the dataset" (its JSON loader re-raises Arrow's
    parse error, which names the row, over pandas' fallback)."""
    chain: list[BaseException] = []
    seen = exc
    while seen is not None and seen not in chain and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for inner in chain:
        text = str(inner).strip()
        if isinstance(inner, StopIteration) or not text:
            continue
        if "corresponds to no data" in text:
            return "the file has no rows (only a header?)"
        if not text.startswith(_GENERIC):
            return _first_line(inner)
    if any(isinstance(e, StopIteration) for e in chain):
        return "no rows could be read (empty, or only whitespace?)"
    return _first_line(exc)


def _load_hub(ds: api.DatasetSource) -> tuple[Any, dict[str, str]]:
    import datasets

    try:
        raw = datasets.load_dataset(ds.name, ds.config, revision=ds.revision)
    except ConnectionError as exc:  # includes "couldn't reach the Hub": retry later
        raise HubUnreachable(f"spec.dataset.name: cannot reach the Hub for {ds.name!r}: "
                             f"{_first_line(exc)}") from exc
    except (datasets.exceptions.DatasetNotFoundError, FileNotFoundError) as exc:
        if is_network_error(exc):
            raise HubUnreachable(f"spec.dataset.name: cannot reach the Hub for {ds.name!r}: "
                                 f"{_first_line(exc)}") from exc
        raise InvalidData(f"spec.dataset.name: cannot load dataset {ds.name!r}"
                          f"{f' config {ds.config!r}' if ds.config else ''}: {_first_line(exc)}") from exc
    except ValueError as exc:  # unknown config name, among others
        raise InvalidData(f"spec.dataset.config: {ds.name}: {_first_line(exc)}") from exc
    where = f"{ds.name}{f'/{ds.config}' if ds.config else ''}"
    return raw, {split: f"{where}[{split}]" for split in raw}


def _split(raw: Any, name: str, field: str, origin: dict[str, str]) -> Any:
    if name not in raw:
        raise InvalidData(f"{field}: no split {name!r}; available: {', '.join(sorted(raw))}")
    return raw[name]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:400]


def load_checked(spec: api.FineTuneJobSpec, first=contextlib.nullcontext
                 ) -> tuple[Splits, Labels | None]:
    """The splits as the trainer reads them: loaded (inside `first`, the main process
    first), columns checked, and the class labels of a classification job."""
    with first():
        splits = load_splits(spec.dataset)
    # Preference columns hold text or turns: preference.check_split checks them (for_trl).
    check_columns(splits, required_columns(spec),
                  check_values=spec.task != api.Task.PREFERENCE.value)
    labels = (infer_labels(splits, spec.dataset.label_column)
              if spec.task == api.Task.SEQUENCE_CLASSIFICATION.value else None)
    return splits, labels


# --------------------------------------------------------------------------- checks


def named_splits(splits: Splits) -> list[tuple[str, Any]]:
    return [(n, d) for n, d in (("train", splits.train), ("eval", splits.eval),
                                ("test", splits.test)) if d is not None]


def check_columns(splits: Splits, required: dict[str, str], check_values: bool = True) -> None:
    """`required` maps a spec field (e.g. spec.dataset.textColumn) to a column name; each
    must exist, and (`check_values`) hold text, or turns for a messages column."""
    for split, dataset in named_splits(splits):
        for field, column in required.items():
            if column not in dataset.column_names:
                hint = ("; is this JSON in a .csv file?" if any(
                    c.lstrip().startswith(("{", "[")) for c in dataset.column_names) else "")
                raise InvalidData(f"{field}: column {column!r} not found in the {split} split "
                                  f"({splits.origin[split]}); columns: "
                                  f"{_clip(', '.join(map(str, dataset.column_names)))}{hint}")
            if not check_values:
                continue
            if field in dataset_formats.message_fields():
                causal_lm_data.check_messages_column(dataset, column, field,
                                                     f"{split} split ({splits.origin[split]})")
            elif field != "spec.dataset.labelColumn":
                check_text_column(dataset, column, field, f"{split} split ({splits.origin[split]})")


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_text_column(dataset: Any, column: str, field: str, where: str) -> None:
    """Text must be strings (numbers pass as their text): no nulls, lists or mappings.

    Reads Arrow metadata only (type, null count), so it stays cheap on large data."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = dataset.data.column(column)
    kind = values.type
    if pa.types.is_nested(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        raise InvalidData(f"{field}: column {column!r} of the {where} holds {kind}, not text")
    if values.null_count:
        row = pc.index(pc.is_null(values), True).as_py()
        raise InvalidData(f"{field}: column {column!r} of the {where} has no value in row {row} "
                          f"({values.null_count} such rows); fill or drop them")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        empty = pc.sum(pc.equal(pc.utf8_length(values), 0)).as_py() or 0
        if empty:
            log.warning("%s: column %r of the %s has %d empty strings", field, column, where,
                        empty)


@dataclass(frozen=True)
class Labels:
    names: list[str]
    encode: dict[Any, int] | None  # raw value -> id, when the data holds strings

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))


def infer_labels(splits: Splits, column: str) -> Labels:
    """Class names from a ClassLabel feature, else from the training data; checks every split."""
    import datasets

    field = "spec.dataset.labelColumn"
    feature = splits.train.features[column]
    if isinstance(feature, datasets.ClassLabel):
        labels = Labels(list(feature.names), None)
    else:
        values = [v for v in splits.train[column]]
        if any(v is None for v in values):
            raise InvalidData(f"{field}: the train split ({splits.origin['train']}) has rows "
                              f"without a label in column {column!r}")
        if all(isinstance(v, str) for v in values):
            names = sorted(set(values))
            labels = Labels(names, {n: i for i, n in enumerate(names)})
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            labels = Labels([str(i) for i in range(max(values) + 1)], None)
        else:
            raise InvalidData(f"{field}: column {column!r} of the train split "
                              f"({splits.origin['train']}) must hold integers or strings"
                              f"{_odd_label(values)}")
    for split, dataset in named_splits(splits):
        _check_range(dataset[column], labels, split, splits.origin[split], column)
    if len(labels.names) < 2:
        raise InvalidData(f"{field}: the train split ({splits.origin['train']}) has only "
                          f"{len(labels.names)} class; classification needs at least 2")
    return labels


def _odd_label(values: list[Any]) -> str:
    """`; row 3 holds 'x' (str), row 0 holds 1 (int)`: where a label breaks the pattern."""
    def kind(v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            return "other"
        return type(v).__name__
    first = kind(values[0]) if values else "other"
    for row, value in enumerate(values):
        if kind(value) != first or first == "other":
            shown = _clip(repr(value), 60)
            if row == 0 or first == "other":
                return f"; row {row} holds {shown} ({type(value).__name__})"
            return (f"; row {row} holds {shown} ({type(value).__name__}), row 0 holds "
                    f"{_clip(repr(values[0]), 60)} ({type(values[0]).__name__})")
    return ""


def _check_range(values: list[Any], labels: Labels, split: str, origin: str, column: str) -> None:
    n = len(labels.names)
    for row, value in enumerate(values):
        if labels.encode is not None:
            ok = value in labels.encode
            what = f"{value!r} does not occur in the train split"
        else:
            ok = isinstance(value, int) and 0 <= value < n
            what = f"{value!r} is out of range 0..{n - 1}"
        if not ok:
            raise InvalidData(f"spec.dataset.labelColumn: label {what} (column {column!r}, "
                              f"{split} split {origin}, row {row})")


# --------------------------------------------------------------------------- tokenization


def _text(values: list[Any]) -> list[str]:
    return ["" if v is None else str(v) for v in values]


# Tokenizers that know no limit report a huge sentinel (transformers' VERY_LARGE_INTEGER).
UNKNOWN_MODEL_MAX_LENGTH = 10**9


def clamp_max_length(requested: int, model_max_length: int | None,
                     field: str) -> tuple[int, str | None]:
    """(the length to tokenize to, a warning or None) (pure).

    Longer than the tokenizer's `model_max_length` would give position ids the model has no
    embedding for (an index error mid-training, or a CUDA assert on a GPU)."""
    if (model_max_length is None or model_max_length <= 0
            or model_max_length >= UNKNOWN_MODEL_MAX_LENGTH or requested <= model_max_length):
        return requested, None
    return model_max_length, (f"{field} {requested} is longer than the tokenizer's "
                              f"model_max_length {model_max_length}; using {model_max_length}")


def tokenize(splits: Splits, spec: api.FineTuneJobSpec, tokenizer: Any,
             labels: Labels | None, first=contextlib.nullcontext) -> Splits:
    """Tokenize every split for the task; keeps only the model's input columns."""
    max_length, max_target_length, warnings = token_limits(spec, tokenizer)
    for text in warnings:
        log.warning("%s", text)
    with first():
        return map_splits(splits, spec, tokenizer, labels, max_length, max_target_length)


def token_limits(spec: api.FineTuneJobSpec, tokenizer: Any) -> tuple[int, int, list[str]]:
    """(maxLength, maxTargetLength as tokenized, warnings): both clamped to the tokenizer's
    `model_max_length`."""
    ds = spec.dataset
    limit = getattr(tokenizer, "model_max_length", None)
    max_length, warning = clamp_max_length(ds.max_length, limit, "spec.dataset.maxLength")
    max_target_length, target_warning = clamp_max_length(
        ds.max_target_length or ds.max_length, limit,
        "spec.dataset.maxTargetLength" if ds.max_target_length else "spec.dataset.maxLength")
    warnings = [warning, target_warning if spec.task == api.Task.SEQ2SEQ.value else None]
    return max_length, max_target_length, list(dict.fromkeys(w for w in warnings if w))


def map_splits(splits: Splits, spec: api.FineTuneJobSpec, tokenizer: Any, labels: Labels | None,
               max_length: int | None, max_target_length: int | None) -> Splits:
    """Every split through the task's tokenization; `None` lengths truncate nothing (what
    `ftjob inspect` measures the lengths before truncation with)."""
    task = spec.task
    if task == api.Task.PREFERENCE.value:  # TRL's DPOTrainer tokenizes (preference.py)
        return preference.for_trl(splits, spec.dataset, tokenizer, tokenizer.name_or_path)
    fn = task_function(spec, tokenizer, labels, max_length, max_target_length)

    def apply(dataset, split):
        if dataset is None:
            return None
        try:
            origin = splits.origin.get(split, split)
            if task == api.Task.CAUSAL_LM.value and max_length is None:
                return causal_lm_data.tokenize_examples(dataset, spec.dataset, tokenizer, None,
                                                        split, origin)
            if task == api.Task.CAUSAL_LM.value:
                return causal_lm_data.tokenize_split(dataset, spec.dataset, tokenizer, max_length,
                                                     split, origin)
            return dataset.map(fn, batched=True, remove_columns=dataset.column_names,
                               desc=f"tokenize {split}")
        except UnicodeDecodeError as exc:
            raise InvalidData(f"spec.dataset: the {split} split ({splits.origin.get(split)}) "
                              f"holds text that is not UTF-8: {_first_line(exc)}") from exc

    return Splits(apply(splits.train, "train"), apply(splits.eval, "eval"),
                  apply(splits.test, "test"), splits.origin)


def task_function(spec: api.FineTuneJobSpec, tokenizer: Any, labels: Labels | None,
                  max_length: int | None, max_target_length: int | None):
    """The batched `datasets.map` function of sequence classification or seq2seq (None for
    causal-lm, whose formats have their own in causal_lm_data)."""
    ds = spec.dataset

    def classification(batch):
        pair = _text(batch[ds.text_pair_column]) if ds.text_pair_column else None
        out = tokenizer(_text(batch[ds.text_column]), pair, truncation=max_length is not None,
                        max_length=max_length)
        raw = batch[ds.label_column]
        out["labels"] = [labels.encode[v] for v in raw] if labels.encode is not None else list(raw)
        return out

    def seq2seq(batch):
        out = tokenizer(_text(batch[ds.text_column]), truncation=max_length is not None,
                        max_length=max_length)
        targets = tokenizer(text_target=_text(batch[ds.target_column]),
                            truncation=max_target_length is not None,
                            max_length=max_target_length)
        out["labels"] = targets["input_ids"]
        return out

    return {api.Task.SEQUENCE_CLASSIFICATION.value: classification,
            api.Task.SEQ2SEQ.value: seq2seq}.get(spec.task)


def required_columns(spec: api.FineTuneJobSpec) -> dict[str, str]:
    ds = spec.dataset
    if spec.task == api.Task.CAUSAL_LM.value:
        return causal_lm_data.required_columns(ds)
    if spec.task == api.Task.PREFERENCE.value:
        return preference.required_columns(ds)
    columns = {"spec.dataset.textColumn": ds.text_column}
    if ds.text_pair_column:
        columns["spec.dataset.textPairColumn"] = ds.text_pair_column
    if spec.task == api.Task.SEQUENCE_CLASSIFICATION.value:
        columns["spec.dataset.labelColumn"] = ds.label_column
    if spec.task == api.Task.SEQ2SEQ.value and ds.target_column:
        columns["spec.dataset.targetColumn"] = ds.target_column
    return columns


def collator(task: str, tokenizer: Any, model: Any = None,
             source: api.DatasetSource | None = None):
    from transformers import (DataCollatorForLanguageModeling, DataCollatorForSeq2Seq,
                              DataCollatorWithPadding)

    if task == api.Task.CAUSAL_LM.value and source is not None and \
            causal_lm_data.uses_own_collator(source):
        return causal_lm_data.Collator(tokenizer.pad_token_id)
    if task == api.Task.CAUSAL_LM.value:
        return DataCollatorForLanguageModeling(tokenizer, mlm=False)  # labels = input_ids
    if task == api.Task.SEQ2SEQ.value:
        return DataCollatorForSeq2Seq(tokenizer, model=model)
    return DataCollatorWithPadding(tokenizer)
