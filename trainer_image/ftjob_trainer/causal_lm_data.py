"""causal-lm data: the formats' tokenization, the completion-only labels, packing and the
collator.

Formats (`spec.dataset.format`, names as in TRL's SFTTrainer; each format's columns,
checks and chat-template need are its entry in `ftjob_api.dataset_formats`, its
tokenization is its entry in `TOKENIZATIONS` here):

- `text`: one text column; every token is trained on.
- `prompt-completion`: the prompt is tokenized as the tokenizer does it alone (its special
  tokens included), the completion after it without special tokens, then EOS. With
  `completionOnlyLoss` (the default) the prompt's labels are -100.
- `conversational`: a list of `{role, content}` turns rendered with the tokenizer's chat
  template. With `completionOnlyLoss` (the default) only the tokens of the assistant turns
  are trained on: turn i spans the text between the rendering of turns 0..i-1 with the
  generation prompt and the rendering of turns 0..i, which works with any chat template
  that renders a conversation's first turns as a prefix of the whole (all common ones do;
  one that does not is reported, not guessed at).

Packing (`spec.dataset.packing`) concatenates the tokenized examples of a split, in the
split's order, and cuts the stream into sequences of exactly `maxLength` tokens, like the
Hugging Face `run_clm` example; only the last sequence of a split can be shorter (it is
kept, not dropped). It runs once, before Trainer's sampler, so every rank and every
attempt sees the same packed sequences in the same order: resume after a kill replays the
same batches. Attention is not reset at example boundaries (every token of a packed
sequence can attend to the earlier examples in it, as in run_clm); examples are separated
by EOS, and with completion-only loss the labels still cover only the completions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftjob_api import api, dataset_formats

from .exits import InvalidData, InvalidSpec

log = logging.getLogger(__name__)

IGNORE = -100  # the label PyTorch's cross-entropy (and every HF causal-LM loss) skips


def required_columns(ds: api.DatasetSource) -> dict[str, str]:
    """spec field -> column, for the format's columns (its entry in dataset_formats)."""
    return dataset_formats.required_columns(ds)


def check_messages_column(dataset: Any, column: str, field: str, where: str) -> None:
    """A list of {role, content} string structs in every row, from Arrow's type; the rows'
    values are checked where they are rendered."""
    import pyarrow as pa

    arrow = dataset.data.column(column).type
    if not (pa.types.is_list(arrow) or pa.types.is_large_list(arrow)) or \
            not pa.types.is_struct(arrow.value_type):
        raise InvalidData(f"{field}: column {column!r} of the {where} holds {arrow}, not a list "
                          f"of {{role, content}} turns")
    names = {arrow.value_type.field(i).name for i in range(arrow.value_type.num_fields)}
    missing = {"role", "content"} - names
    if missing:
        raise InvalidData(f"{field}: the turns in column {column!r} of the {where} have no "
                          f"{' or '.join(sorted(missing))} (they have: {', '.join(sorted(names))})")


def _check_turns(messages: Any, row: int, field: str, where: str) -> list[dict[str, str]]:
    if not messages:
        raise InvalidData(f"{field}: row {row} of the {where} has no turns")
    turns = []
    for i, turn in enumerate(messages):
        role, content = (turn.get("role"), turn.get("content")) if isinstance(turn, dict) \
            else (None, None)
        if not isinstance(role, str) or not isinstance(content, str):
            raise InvalidData(f"{field}: row {row} turn {i} of the {where} needs a string "
                              f"`role` and `content` (got {role!r}, {content!r})")
        turns.append({"role": role, "content": content})
    return turns


def require_chat_template(tokenizer: Any, source: str, fmt: str = "conversational") -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise InvalidSpec(f"spec.dataset.format: {fmt} renders the turns with the "
                          f"tokenizer's chat template, and the tokenizer of {source} has none; "
                          f"use a chat or instruct model's tokenizer, or format prompt-completion")


# --------------------------------------------------------------------------- tokenizing


def _eos(tokenizer: Any) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def prompt_completion_example(tokenizer: Any, prompt: str, completion: str,
                              completion_only: bool) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one example, untruncated."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + _eos(tokenizer)
    ids = prompt_ids + completion_ids
    labels = ([IGNORE] * len(prompt_ids) if completion_only else list(prompt_ids)) + completion_ids
    return ids, labels


def _render(tokenizer: Any, turns: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(turns, tokenize=False,
                                         add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer: Any, turns: list[dict[str, str]], text: str,
                    where: str) -> list[tuple[int, int]]:
    """Character spans of the assistant turns in `text`, the rendering of all `turns`."""
    spans = []
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        start = _render(tokenizer, turns[:i], generation_prompt=True) if i else ""
        end = _render(tokenizer, turns[: i + 1])
        if not (text.startswith(end) and end.startswith(start)):
            raise InvalidSpec(f"spec.dataset.completionOnlyLoss: the tokenizer's chat template "
                              f"does not render the first turns of {where} as a prefix of the "
                              f"whole conversation, so the assistant turns cannot be located; "
                              f"set completionOnlyLoss: false to train on every token")
        spans.append((len(start), len(end)))
    return spans


def conversational_example(tokenizer: Any, turns: list[dict[str, str]], completion_only: bool,
                           where: str) -> tuple[list[int], list[int]]:
    text = _render(tokenizer, turns)
    if not completion_only:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids, list(ids)
    if not getattr(tokenizer, "is_fast", False):
        raise InvalidSpec("spec.dataset.completionOnlyLoss: locating the assistant turns needs "
                          "a fast tokenizer (character offsets); set completionOnlyLoss: false")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = assistant_spans(tokenizer, turns, text, where)
    ids = encoded["input_ids"]
    labels = [tok if any(s <= begin < e for s, e in spans) else IGNORE
              for tok, (begin, _) in zip(ids, encoded["offset_mapping"])]
    return ids, labels


@dataclass(frozen=True)
class Example:
    """What a format's tokenization sees: the spec, the tokenizer and where the rows are."""

    ds: api.DatasetSource
    tokenizer: Any
    max_length: int | None  # None: no truncation
    where: str  # "<split> split (<origin>)", for messages

    def finish(self, pairs: list[tuple[list[int], list[int]]]) -> dict[str, list]:
        """input_ids, attention_mask and labels, whole (`fit` truncates or packs them)."""
        ids = [i for i, _ in pairs]
        labels = [lab for _, lab in pairs]
        return {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids], "labels": labels}


@dataclass(frozen=True)
class Tokenization:
    """A format's tokenization: `build(example)` returns the batched `datasets.map` function;
    `with_indices` passes the row numbers too; `labels` says the function writes labels
    (without, as format text unpacked, the language-modelling collator copies the inputs)."""

    build: Callable[[Example], Callable[..., Any]]
    with_indices: bool = False
    labels: bool = True


def _text(ex: Example):
    ds, tokenizer = ex.ds, ex.tokenizer

    def text(batch):
        values = ["" if v is None else str(v) for v in batch[ds.text_column]]
        if not ds.packing:  # unchanged: the collator copies input_ids into the labels
            return tokenizer(values, truncation=ex.max_length is not None,
                             max_length=ex.max_length)
        encoded = tokenizer(values)["input_ids"]
        pairs = []
        for ids in encoded:
            ids = ids + _eos(tokenizer) if not ids or ids[-1] != tokenizer.eos_token_id else ids
            pairs.append((ids, list(ids)))
        return ex.finish(pairs)

    return text


def _prompt_completion(ex: Example):
    ds, completion_only = ex.ds, ex.ds.resolved_completion_only_loss

    def prompt_completion(batch):
        return ex.finish([prompt_completion_example(ex.tokenizer, str(p), str(c),
                                                    completion_only)
                          for p, c in zip(batch[ds.resolved_prompt_column],
                                          batch[ds.resolved_completion_column])])

    return prompt_completion


def _conversational(ex: Example):
    ds, completion_only = ex.ds, ex.ds.resolved_completion_only_loss
    field = dataset_formats.MESSAGES.field

    def conversational(batch, indices):
        return ex.finish([conversational_example(
            ex.tokenizer, _check_turns(m, row, field, ex.where), completion_only,
            f"row {row} of the {ex.where}")
            for m, row in zip(batch[ds.resolved_messages_column], indices)])

    return conversational


# One tokenization per format of ftjob_api.dataset_formats.FORMATS (a unit test keeps the
# names equal): the trainer's half of a format's entry.
TOKENIZATIONS: dict[str, Tokenization] = {
    "text": Tokenization(_text, labels=False),
    "prompt-completion": Tokenization(_prompt_completion),
    "conversational": Tokenization(_conversational, with_indices=True),
}


def tokenize_function(ds: api.DatasetSource, tokenizer: Any, max_length: int | None, split: str,
                      origin: str):
    """The batched `datasets.map` function for the format: input_ids, attention_mask and,
    outside format text without packing, labels. Only format text without packing (the
    tokenizer's own truncation) uses `max_length`; the others return whole examples."""
    example = Example(ds, tokenizer, max_length, f"{split} split ({origin})")
    return TOKENIZATIONS[ds.format].build(example)


def tokenize_examples(dataset: Any, ds: api.DatasetSource, tokenizer: Any,
                      max_length: int | None, split: str, origin: str) -> Any:
    """One row per example through the format's tokenization, whole except for format
    text without packing, which the tokenizer truncates to `max_length` (None: not at all)."""
    fn = tokenize_function(ds, tokenizer, max_length, split, origin)
    return dataset.map(fn, batched=True, with_indices=TOKENIZATIONS[ds.format].with_indices,
                       remove_columns=dataset.column_names, desc=f"tokenize {split}")


def fit(examples: Any, ds: api.DatasetSource, max_length: int) -> Any:
    """What the trainer feeds from the tokenized examples: all packed into rows of
    `max_length` tokens, or each cut to its first `max_length` (format text without
    packing comes already truncated by the tokenizer)."""
    if ds.packing:
        return pack(examples, max_length)
    if "labels" not in examples.column_names:
        return examples
    return truncate(examples, max_length)


def tokenize_split(dataset: Any, ds: api.DatasetSource, tokenizer: Any, max_length: int,
                   split: str, origin: str) -> Any:
    """What the trainer feeds: the examples truncated to `max_length`, or packed into rows
    of that length."""
    examples = tokenize_examples(dataset, ds, tokenizer, max_length, split, origin)
    fed = fit(examples, ds, max_length)
    untrained = examples_without_trained_tokens(examples if ds.packing else fed)
    if untrained:
        log.warning("spec.dataset.maxLength: %d of %d examples in the %s split (%s) have no "
                    "token left to train on (a prompt of maxLength tokens or more, or no "
                    "assistant turn); they add nothing to the loss", untrained, len(examples),
                    split, origin)
    return fed


def truncate(dataset: Any, max_length: int) -> Any:
    """Every list column of every row cut to its first `max_length` values (vectorised)."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(dataset):
        return dataset
    return datasets.Dataset(pa.table({
        name: pc.list_slice(dataset.data.column(name), 0, max_length)
        for name in dataset.column_names}))


def examples_without_trained_tokens(dataset: Any) -> int:
    """Rows whose labels are all -100 (0 where the labels are the inputs)."""
    import pyarrow.compute as pc

    if "labels" not in dataset.column_names or not len(dataset):
        return 0
    labels = dataset.data.column("labels").combine_chunks()
    trained = pc.not_equal(labels.flatten(), IGNORE)
    rows_with = pc.unique(pc.filter(pc.list_parent_indices(labels), trained))
    return len(dataset) - len(rows_with)


# --------------------------------------------------------------------------- packing


def pack(dataset: Any, max_length: int) -> Any:
    """Concatenate every example in order and cut into rows of `max_length` tokens (the
    last row keeps the remainder). Vectorised over Arrow buffers: no per-example Python."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = {}
    total = None
    for name in ("input_ids", "labels"):
        # Flattened chunk by chunk: combining the chunks first would overflow a list
        # column's int32 offsets past 2**31 tokens.
        flat = pc.list_flatten(dataset.data.column(name)).to_numpy()
        columns[name] = flat
        total = len(flat)
    if not total:
        return dataset.select([])
    offsets = pack_offsets(total, max_length)
    lists = pa.ListArray if offsets.dtype.itemsize == 4 else pa.LargeListArray
    table = pa.table({
        "input_ids": lists.from_arrays(pa.array(offsets), pa.array(columns["input_ids"])),
        "labels": lists.from_arrays(pa.array(offsets), pa.array(columns["labels"])),
    })
    return datasets.Dataset(table)


INT32_MAX = 2**31 - 1


def pack_offsets(total: int, max_length: int) -> Any:
    """Where each packed row starts, then `total` (pure): int32 while every offset fits
    (an Arrow list), int64 beyond 2**31 - 1 tokens (an Arrow large list)."""
    import numpy as np

    offsets = np.append(np.arange(0, total, max_length, dtype=np.int64), np.int64(total))
    return offsets.astype(np.int32) if total <= INT32_MAX else offsets


def padding_stats(lengths: list[int], batch_size: int) -> tuple[int, int]:
    """(real tokens, padded slots) when consecutive rows are padded to their batch's longest."""
    real = padded = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start:start + batch_size]
        real += sum(batch)
        padded += max(batch) * len(batch)
    return real, padded - real


# --------------------------------------------------------------------------- batches


class Collator:
    """Pads input_ids with the pad token and labels with -100 (so a pad id equal to EOS,
    as on GPT-2 and Llama, does not hide the real EOS labels); attention_mask marks the
    real tokens."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.as_tensor(f["labels"], dtype=torch.long)
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def uses_own_collator(ds: api.DatasetSource) -> bool:
    """A format whose tokenization writes no labels, unpacked, keeps
    DataCollatorForLanguageModeling (labels = inputs): format text."""
    return TOKENIZATIONS[ds.format].labels or ds.packing
