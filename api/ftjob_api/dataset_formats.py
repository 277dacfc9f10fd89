"""The causal-lm dataset formats (`spec.dataset.format`): one entry per format.

Each entry owns the facts both sides need: the columns it reads (spec field, model
attribute, default name, whether they hold text or `{role, content}` turns), whether
`completionOnlyLoss` applies (and is on by default), whether it needs the tokenizer's chat
template, and its own extra checks. The API model (`api.DatasetSource.format` and its
`resolved_*` properties) and validation read them from here; the trainer registers one
tokenization per format name (`ftjob_trainer.causal_lm_data.TOKENIZATIONS`), and a unit
test keeps the two name sets equal.

This module sits in the API package because validation (the webhook, `ftjob validate`)
needs the columns and checks without the trainer's dependencies (torch, datasets); the
tokenization stays in the trainer, which imports this module and never the reverse.

Adding a format: an entry in `FORMATS` here and its tokenization in
`ftjob_trainer/causal_lm_data.py` (plus a `DatasetSource` field if it reads a column no
format has yet), then regenerate the CRD (`make crds`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .problems import Problem

DATASET = "spec.dataset"


@dataclass(frozen=True)
class Column:
    """A column a format reads: spec key (camelCase), DatasetSource attribute, default."""

    key: str
    attr: str
    default: str
    holds: Literal["text", "messages", "text-or-turns"] = "text"

    @property
    def field(self) -> str:
        return f"{DATASET}.{self.key}"

    def resolve(self, ds: Any) -> str:
        return getattr(ds, self.attr) or self.default


@dataclass(frozen=True)
class DatasetFormat:
    name: str
    summary: str  # how the examples are laid out, for the CRD description
    columns: tuple[Column, ...]
    masks_labels: bool = False  # completionOnlyLoss applies (on by default)
    needs_chat_template: bool = False
    checks: Callable[[Any], list[Problem]] = field(default=lambda ds: [])


TEXT = Column("textColumn", "text_column", "text")
PROMPT = Column("promptColumn", "prompt_column", "prompt")
COMPLETION = Column("completionColumn", "completion_column", "completion")
MESSAGES = Column("messagesColumn", "messages_column", "messages", holds="messages")

# Task `preference` (DPO, TRL's formats): text columns, or lists of `{role, content}` turns
# (the prompt's turns, and the assistant turn of each answer) rendered with the chat template.
PREFERENCE_TASK = "preference"
PREFERENCE_PROMPT = Column("promptColumn", "prompt_column", "prompt", holds="text-or-turns")
CHOSEN = Column("chosenColumn", "chosen_column", "chosen", holds="text-or-turns")
REJECTED = Column("rejectedColumn", "rejected_column", "rejected", holds="text-or-turns")
PREFERENCE_COLUMNS = (PREFERENCE_PROMPT, CHOSEN, REJECTED)


def _distinct_prompt_completion(ds: Any) -> list[Problem]:
    if PROMPT.resolve(ds) == COMPLETION.resolve(ds):
        return [Problem(COMPLETION.field, "must differ from promptColumn")]
    return []


FORMATS: dict[str, DatasetFormat] = {f.name: f for f in (
    DatasetFormat("text", "one text column, `textColumn`", (TEXT,)),
    DatasetFormat("prompt-completion", "two text columns, `promptColumn` and "
                  "`completionColumn`", (PROMPT, COMPLETION), masks_labels=True,
                  checks=_distinct_prompt_completion),
    DatasetFormat("conversational", "a `messagesColumn` holding a list of `{role, content}` "
                  "turns, rendered with the tokenizer's chat template", (MESSAGES,),
                  masks_labels=True, needs_chat_template=True),
)}
DEFAULT = "text"  # the format of every task other than causal-lm

FormatName = Literal[tuple(FORMATS)]  # type: ignore[valid-type]


def get(name: str) -> DatasetFormat:
    return FORMATS[name]


def description() -> str:
    """The CRD description of `spec.dataset.format`, from the entries."""
    parts = [f"`{f.name}` ({f.summary})" for f in FORMATS.values()]
    listed = ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
    return f"How causal-lm examples are laid out: {listed}. Other tasks use `{DEFAULT}`."


def required_columns(ds: Any) -> dict[str, str]:
    """spec field -> column name, for the columns of `ds.format`."""
    return {c.field: c.resolve(ds) for c in get(ds.format).columns}


def message_fields() -> set[str]:
    """The spec fields whose columns hold `{role, content}` turns rather than text."""
    return {c.field for f in FORMATS.values() for c in f.columns if c.holds == "messages"}


def completion_only_loss(ds: Any) -> bool:
    """Masked prompt / non-assistant tokens: the default of the formats that mask labels."""
    if not get(ds.format).masks_labels:
        return False
    return True if ds.completion_only_loss is None else ds.completion_only_loss


def _owners(column: Column) -> list[str]:
    return [f.name for f in FORMATS.values() if column in f.columns]


def _names(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def check_preference(task: str, ds: Any) -> list[Problem]:
    """The preference columns: only with task preference, distinct there; the causal-lm
    format fields do not apply to it."""
    problems: list[Problem] = []
    if task != PREFERENCE_TASK:
        for column in (CHOSEN, REJECTED):
            if getattr(ds, column.attr) is not None:
                problems.append(Problem(column.field, f"applies only to task "
                                        f"{PREFERENCE_TASK}, not {task}"))
        return problems
    for key, on in (("format", ds.format != DEFAULT), ("packing", ds.packing),
                    ("completionOnlyLoss", ds.completion_only_loss is not None),
                    ("completionColumn", ds.completion_column is not None),
                    ("messagesColumn", ds.messages_column is not None),
                    ("textColumn", ds.text_column != TEXT.default)):
        if on:
            problems.append(Problem(f"{DATASET}.{key}", f"does not apply to task "
                                    f"{PREFERENCE_TASK} (its columns are promptColumn, "
                                    "chosenColumn and rejectedColumn)"))
    names = [c.resolve(ds) for c in PREFERENCE_COLUMNS]
    for column, name in zip(PREFERENCE_COLUMNS[1:], names[1:]):
        if names.count(name) > 1:
            problems.append(Problem(column.field, f"column {name!r} is used for more than "
                                    "one of promptColumn, chosenColumn and rejectedColumn"))
    return problems


def check(task_is_causal_lm: bool, task: str, ds: Any) -> list[Problem]:
    """The causal-lm data fields: each only with the format or task it belongs to."""
    if task == PREFERENCE_TASK:
        return check_preference(task, ds)
    problems: list[Problem] = check_preference(task, ds)
    if not task_is_causal_lm:
        for key, on in (("format", ds.format != DEFAULT), ("packing", ds.packing)):
            if on:
                problems.append(Problem(f"{DATASET}.{key}", f"applies only to task "
                                        f"causal-lm, not {task}"))
    fmt = get(ds.format)
    columns = [c for f in FORMATS.values() for c in f.columns if c is not TEXT]
    for column in dict.fromkeys(columns):  # once each, in registry order
        owners = _owners(column)
        if getattr(ds, column.attr) is not None and ds.format not in owners:
            plural = "s" if len(owners) > 1 else ""
            problems.append(Problem(column.field, f"applies only to format{plural} "
                                    f"{_names(owners)}, not {ds.format}"))
    if ds.completion_only_loss is not None and not fmt.masks_labels:
        masking = [f.name for f in FORMATS.values() if f.masks_labels]
        problems.append(Problem(f"{DATASET}.completionOnlyLoss", f"applies only to formats "
                                f"{_names(masking)} (format {ds.format} trains on every "
                                f"token)"))
    if TEXT not in fmt.columns and ds.text_column != TEXT.default:
        problems.append(Problem(TEXT.field, f"does not apply to format {ds.format}"))
    problems.extend(fmt.checks(ds))
    return problems
