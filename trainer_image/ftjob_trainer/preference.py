"""Task `preference`: DPO with TRL's `DPOTrainer` on prompt / chosen / rejected pairs.

ftjob checks the data and hands TRL the raw splits with the columns renamed to TRL's
names; TRL tokenizes them (text, or `{role, content}` turns through the chat template),
so a plain TRL script on the same data, seed and model computes the same losses
(`benchmarks/trainer_dpo_plain.py`). What TRL would do silently is refused here with
the field, split and rows: a pair whose two answers are equal in every row, and prompts
that fill `maxLength` (TRL drops them).
"""

from __future__ import annotations

import logging
from typing import Any

from ftjob_api import api, dataset_formats

from .exits import InvalidData, InvalidSpec

log = logging.getLogger(__name__)

ROWS_NAMED = 5  # rows a message names when many break a rule
_MESSAGES = "a list of {role, content} turns"


def required_columns(ds: api.DatasetSource) -> dict[str, str]:
    """spec field -> column name: promptColumn, chosenColumn, rejectedColumn."""
    return {c.field: c.resolve(ds) for c in dataset_formats.PREFERENCE_COLUMNS}


def _kind(dataset: Any, column: str) -> str:
    """"text", "turns" or what else the column holds (Arrow metadata only)."""
    import pyarrow as pa

    kind = dataset.data.column(column).type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        item = kind.value_type
        if pa.types.is_struct(item) and {"role", "content"} <= {f.name for f in item}:
            return "turns"
    return str(kind)


def check_split(dataset: Any, ds: api.DatasetSource, where: str) -> bool:
    """The three columns hold text, or all three hold turns (True: conversational); no
    empty values; chosen differs from rejected somewhere. Raises InvalidData naming the
    field and split."""
    import pyarrow.compute as pc

    columns = required_columns(ds)
    kinds = {field: _kind(dataset, column) for field, column in columns.items()}
    for field, kind in kinds.items():
        if kind not in ("text", "turns"):
            raise InvalidData(f"{field}: column {columns[field]!r} of the {where} holds {kind}; "
                              f"preference data is text or {_MESSAGES}")
    if len(set(kinds.values())) > 1:
        shown = ", ".join(f"{f.rsplit('.', 1)[1]} {k}" for f, k in kinds.items())
        raise InvalidData(f"spec.dataset: the {where} mixes text and turns ({shown}); use text "
                          f"in all three columns or {_MESSAGES} in all three")
    for field, column in columns.items():
        values = dataset.data.column(column)
        if values.null_count:
            row = pc.index(pc.is_null(values), True).as_py()
            raise InvalidData(f"{field}: column {columns[field]!r} of the {where} has no value "
                              f"in row {row} ({values.null_count} such rows); fill or drop them")
    _check_answers_differ(dataset, columns, where)
    return kinds[dataset_formats.CHOSEN.field] == "turns"


def _check_answers_differ(dataset: Any, columns: dict[str, str], where: str) -> None:
    chosen = dataset[columns[dataset_formats.CHOSEN.field]]
    rejected = dataset[columns[dataset_formats.REJECTED.field]]
    same = [row for row, (a, b) in enumerate(zip(chosen, rejected)) if a == b]
    if same and len(same) == len(chosen):
        raise InvalidData(f"{dataset_formats.REJECTED.field}: the chosen and rejected answers "
                          f"are equal in every one of the {len(same)} rows of the {where}: "
                          "nothing to prefer (the same column twice, or a broken export?)")
    if same:
        log.warning("%s: chosen equals rejected in %d of %d rows of the %s (rows %s): those "
                    "pairs add nothing to the loss's gradient", dataset_formats.REJECTED.field,
                    len(same), len(chosen), where, _rows(same))


def _rows(rows: list[int]) -> str:
    more = f", ... ({len(rows)} in all)" if len(rows) > ROWS_NAMED else ""
    return ", ".join(map(str, rows[:ROWS_NAMED])) + more


def for_trl(splits: Any, ds: api.DatasetSource, tokenizer: Any, source: str) -> Any:
    """Each split checked, with only the three columns, named prompt/chosen/rejected as
    TRL reads them (`data.Splits`); conversational data needs a chat template."""
    from . import data

    renamed = {}
    conversational = False
    for split, dataset in data.named_splits(splits):
        conversational |= check_split(dataset, ds, f"{split} split ({splits.origin[split]})")
        to_trl = {column: trl for trl, column in ds.preference_columns.items()}
        kept = dataset.select_columns(list(to_trl))
        renamed[split] = kept.rename_columns({c: t for c, t in to_trl.items() if c != t})
    if conversational and not getattr(tokenizer, "chat_template", None):
        raise InvalidSpec(f"spec.model: the preference data holds {_MESSAGES}, rendered with "
                          f"the tokenizer's chat template, and the tokenizer of {source} has "
                          "none; use a chat or instruct model's tokenizer, or text columns")
    return data.Splits(renamed["train"], renamed.get("eval"), renamed.get("test"),
                       splits.origin)


def prompt_length_problem(lengths: list[int], limit: int, split: str) -> str | None:
    """The message for prompts of `limit` tokens or more, which TRL would drop (pure)."""
    long = [row for row, n in enumerate(lengths) if n >= limit]
    if not long:
        return None
    return (f"spec.dataset.maxLength: {len(long)} of {len(lengths)} prompts of the {split} "
            f"split are {limit} tokens or longer, leaving no room for the answers (rows "
            f"{_rows(long)}; longest {max(lengths)} tokens); raise maxLength or shorten them")


def trainer_class() -> type:
    """DPOTrainer, with TRL's silent drop of over-long prompts turned into InvalidData."""
    from trl import DPOTrainer

    class PreferenceTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            # TRL filters out prompts that fill max_length; tokenize without that filter
            # and refuse them instead. With none dropped the rows are TRL's, in its order.
            prepared = tokenize_like_trl(dataset, processing_class, dataset_name,
                                         args.dataset_num_proc)
            if args.max_length is not None and args.truncation_mode == "keep_start":
                lengths = _lengths(prepared, "prompt_ids")
                problem = prompt_length_problem(lengths, args.max_length, dataset_name)
                if problem:
                    raise InvalidData(problem)
            return prepared

        def log(self, logs, start_time=None):
            # TRL names its evaluation metrics eval_* whatever the prefix: the test split's
            # (evaluate(metric_key_prefix="test")) would overwrite the eval split's.
            mode = "train" if self.model.training else "eval"
            averaged = {key: sum(v) / len(v) for key, v in self._metrics[mode].items()}
            if mode == "eval":
                prefix = _metric_prefix(logs)
                averaged = {f"{prefix}_{key}": value for key, value in averaged.items()}
            logs.update(averaged)
            super(DPOTrainer, self).log(logs, start_time)  # Trainer.log: TRL's is done here
            self._metrics[mode].clear()

    return PreferenceTrainer


def tokenize_like_trl(dataset: Any, tokenizer: Any, name: str,
                      num_proc: int | None = None) -> Any:
    """A split as DPOTrainer tokenizes it (prompt_ids, chosen_ids, rejected_ids): TRL's own
    `_prepare_dataset` without max_length, so no row is dropped, given only what it reads
    of its trainer (the tokenizer) and its arguments. PreferenceTrainer and `ftjob
    inspect` (which builds no Trainer) both tokenize here."""
    from types import SimpleNamespace

    from trl import DPOTrainer

    trainer = SimpleNamespace(_tokenizer=tokenizer)
    args = SimpleNamespace(dataset_num_proc=num_proc, max_length=None,
                           truncation_mode="keep_start")
    return DPOTrainer._prepare_dataset(trainer, dataset, tokenizer, args, name)


def identical_rows(dataset: Any) -> list[int]:
    """Rows of a TRL-named split whose chosen answer equals the rejected one."""
    return [row for row, (a, b) in enumerate(zip(dataset["chosen"], dataset["rejected"]))
            if a == b]


def _metric_prefix(logs: dict[str, Any]) -> str:
    """The prefix Trainer.evaluate gave this evaluation's metrics (eval, test, ...)."""
    return next((key[:-len("_runtime")] for key in logs if key.endswith("_runtime")), "eval")


def _lengths(dataset: Any, column: str) -> list[int]:
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.data.column(column)).to_pylist()
