"""causal-lm data fields (format, prompt/completion/messages columns, completionOnlyLoss,
packing): what is valid, and each misuse named at its field path."""

from __future__ import annotations

import pytest

from ftjob_api import api
from ftjob_api.problems import errors
from ftjob_api.validation import validate_document


def job(task: str = "causal-lm", **dataset) -> dict:
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": "chat"},
            "spec": {"task": task, "model": {"path": "/models/m"},
                     **({"dataset": {"files": {"train": "/d/train.jsonl"}, **dataset}}),
                     "trainingArguments": {"max_steps": 10}}}


VALID = [
    {},
    {"format": "prompt-completion"},
    {"format": "prompt-completion", "promptColumn": "question", "completionColumn": "answer",
     "completionOnlyLoss": False, "packing": True},
    {"format": "conversational", "messagesColumn": "turns", "completionOnlyLoss": True},
    {"format": "text", "packing": True},
]


@pytest.mark.parametrize("dataset", VALID, ids=range(len(VALID)))
def test_valid_causal_lm_datasets(dataset):
    assert errors(validate_document(job(**dataset))) == []


def test_defaults_follow_the_format():
    parse = lambda **d: api.parse_spec(job(**d)["spec"]).dataset  # noqa: E731
    text = parse()
    assert text.format == "text" and text.packing is False
    assert text.resolved_completion_only_loss is False
    pc = parse(format="prompt-completion")
    assert (pc.resolved_prompt_column, pc.resolved_completion_column) == ("prompt", "completion")
    assert pc.resolved_completion_only_loss is True
    chat = parse(format="conversational", completionOnlyLoss=False)
    assert chat.resolved_messages_column == "messages"
    assert chat.resolved_completion_only_loss is False


INVALID = [
    ("unknown-format", {"format": "chat"}, "causal-lm", "spec.dataset.format", "conversational"),
    ("packing-not-bool", {"packing": "sometimes"}, "causal-lm", "spec.dataset.packing", ""),
    ("format-other-task", {"format": "prompt-completion"}, "seq2seq", "spec.dataset.format",
     "only to task causal-lm"),
    ("packing-other-task", {"packing": True}, "sequence-classification", "spec.dataset.packing",
     "only to task causal-lm"),
    ("prompt-column-on-text", {"promptColumn": "q"}, "causal-lm", "spec.dataset.promptColumn",
     "only to format prompt-completion"),
    ("completion-column-on-chat", {"format": "conversational", "completionColumn": "a"},
     "causal-lm", "spec.dataset.completionColumn", "only to format prompt-completion"),
    ("messages-column-on-pc", {"format": "prompt-completion", "messagesColumn": "m"},
     "causal-lm", "spec.dataset.messagesColumn", "only to format conversational"),
    ("completion-only-on-text", {"completionOnlyLoss": True}, "causal-lm",
     "spec.dataset.completionOnlyLoss", "only to formats prompt-completion and conversational"),
    ("text-column-on-chat", {"format": "conversational", "textColumn": "body"}, "causal-lm",
     "spec.dataset.textColumn", "does not apply to format conversational"),
    ("same-columns", {"format": "prompt-completion", "promptColumn": "x",
                      "completionColumn": "x"}, "causal-lm", "spec.dataset.completionColumn",
     "must differ"),
    ("empty-messages-column", {"format": "conversational", "messagesColumn": ""}, "causal-lm",
     "spec.dataset.messagesColumn", ""),
]


@pytest.mark.parametrize(("dataset", "task", "path", "fragment"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_dataset_field_is_named(dataset, task, path, fragment):
    doc = job(task, **dataset)
    if task == "seq2seq":
        doc["spec"]["dataset"]["targetColumn"] = "target"
    if task == "sequence-classification":
        doc["spec"]["model"] = {"path": "/models/bert"}
    problems = errors(validate_document(doc))
    at_path = [p for p in problems if p.path == path]
    assert at_path, f"no error at {path}; got {[str(p) for p in problems]}"
    assert any(fragment in p.message for p in at_path), [str(p) for p in at_path]
