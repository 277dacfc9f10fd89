"""causal-lm formats on hand-made examples: where the labels are -100, packing, the collator,
and the fast defaults (a user's own setting always wins).

The expected counts come from the tiny tokenizer's definition (tests/tinymodels.py): one
token per whitespace-separated word, `[CLS] ... [SEP]` around a text tokenized alone, and
CHAT_TEMPLATE opening each user turn with [CLS] and each assistant turn with [SEP]."""

from __future__ import annotations

import datasets
import pytest
import torch
from ftjob_api import api
from ftjob_trainer import trainer_arguments, causal_lm_data as c, data
from ftjob_trainer.exits import InvalidData, InvalidSpec
from torch.utils.data import DistributedSampler

from tests import tinymodels as tm


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    tm.build_tokenizer(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = tm.CHAT_TEMPLATE
    return tok


def spec(task="causal-lm", training=None, resources=None, **dataset):
    return api.parse_spec({"task": task, "model": {"path": "/m"},
                           "dataset": {"files": {"train": "t.jsonl"}, **dataset},
                           "trainingArguments": training or {},
                           **({"resources": resources} if resources else {})})


def test_prompt_completion_masks_exactly_the_prompt(tokenizer):
    prompt, completion = "goal match team", "win cup"
    ids, labels = c.prompt_completion_example(tokenizer, prompt, completion, completion_only=True)
    prompt_tokens = len(prompt.split()) + 2  # [CLS] words [SEP]
    completion_tokens = len(completion.split()) + 1  # words </s>
    assert len(ids) == len(labels) == prompt_tokens + completion_tokens
    assert labels.count(c.IGNORE) == prompt_tokens
    assert labels[:prompt_tokens] == [c.IGNORE] * prompt_tokens
    assert labels[prompt_tokens:] == ids[prompt_tokens:]
    assert ids[-1] == tokenizer.eos_token_id
    _, everything = c.prompt_completion_example(tokenizer, prompt, completion, False)
    assert everything == ids


def test_conversational_trains_on_assistant_turns_only(tokenizer):
    turns = [{"role": "user", "content": "goal match"},
             {"role": "assistant", "content": "team win cup"},
             {"role": "user", "content": "bank price"},
             {"role": "assistant", "content": "tax"}]
    ids, labels = c.conversational_example(tokenizer, turns, True, "row 0")
    # one marker token per turn plus its words
    total = sum(1 + len(t["content"].split()) for t in turns)
    assistant_words = [w for t in turns if t["role"] == "assistant" for w in t["content"].split()]
    assert len(ids) == total
    assert labels.count(c.IGNORE) == total - len(assistant_words)
    trained = tokenizer.convert_ids_to_tokens([t for t in labels if t != c.IGNORE])
    assert trained == assistant_words
    _, everything = c.conversational_example(tokenizer, turns, False, "row 0")
    assert c.IGNORE not in everything


def test_chat_template_that_is_not_prefix_stable_is_reported(tokenizer):
    other = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    # Renders the turn count first, so the first turns are not a prefix of the whole.
    other.chat_template = "{{ messages|length }} {% for m in messages %}{{ m['content'] }} {% endfor %}"
    turns = [{"role": "user", "content": "goal"}, {"role": "assistant", "content": "win"}]
    with pytest.raises(InvalidSpec, match="spec.dataset.completionOnlyLoss.*row 3"):
        c.conversational_example(other, turns, True, "row 3")


def test_no_chat_template_is_a_spec_error(tokenizer):
    bare = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    with pytest.raises(InvalidSpec, match="spec.dataset.format: .*/models/x has none"):
        c.require_chat_template(bare, "/models/x")
    c.require_chat_template(tokenizer, "/models/x")


def splits_of(rows):
    return data.Splits(datasets.Dataset.from_list(rows), None, None, {"train": "/d/t.jsonl"})


def test_messages_column_of_the_wrong_shape_names_field_and_file():
    with pytest.raises(InvalidData, match=r"spec.dataset.messagesColumn: column 'messages' of "
                       r"the train split \(/d/t.jsonl\) holds string"):
        data.check_columns(splits_of([{"messages": "hi"}]),
                           {"spec.dataset.messagesColumn": "messages"})
    with pytest.raises(InvalidData, match="have no content"):
        data.check_columns(splits_of([{"messages": [{"role": "user", "text": "x"}]}]),
                           {"spec.dataset.messagesColumn": "messages"})
    data.check_columns(splits_of([{"messages": [{"role": "user", "content": "x"}]}]),
                       {"spec.dataset.messagesColumn": "messages"})


def test_a_turn_without_content_names_row_and_turn(tokenizer):
    rows = [{"messages": [{"role": "user", "content": "goal"}]},
            {"messages": [{"role": "user", "content": None}]}]
    s = spec(format="conversational")
    with pytest.raises(InvalidData, match="spec.dataset.messagesColumn: row 1 turn 0"):
        data.tokenize(splits_of(rows), s, tokenizer, None)
    rows[1] = {"messages": [{"role": "user", "content": "goal"}, None]}
    with pytest.raises(InvalidData, match="spec.dataset.messagesColumn: row 1 turn 1"):
        data.tokenize(splits_of(rows), s, tokenizer, None)
    rows[1] = {"messages": []}
    with pytest.raises(InvalidData, match="spec.dataset.messagesColumn: row 1 .* has no turns"):
        data.tokenize(splits_of(rows), s, tokenizer, None)


def test_packing_cuts_the_concatenation_into_full_rows_and_one_partial(tokenizer):
    rows = tm.prompt_completion_rows(60, seed=1)
    s = spec(format="prompt-completion", packing=True, maxLength=16)
    packed = data.tokenize(splits_of(rows), s, tokenizer, None).train
    separate = [c.prompt_completion_example(tokenizer, r["prompt"], r["completion"], True)
                for r in rows]
    stream = [t for ids, _ in separate for t in ids]
    label_stream = [t for _, lab in separate for t in lab]
    lengths = [len(x) for x in packed["input_ids"]]
    assert sum(lengths) == len(stream)
    assert [t for x in packed["input_ids"] for t in x] == stream  # order kept, nothing lost
    assert [t for x in packed["labels"] for t in x] == label_stream
    assert all(n == 16 for n in lengths[:-1]) and 0 < lengths[-1] <= 16

    # What each of 2 ranks sees in an epoch (Trainer's distributed sampler): at most one
    # sequence shorter than maxLength.
    for rank in range(2):
        sampler = DistributedSampler(packed, num_replicas=2, rank=rank, shuffle=True, seed=7)
        partial = sum(1 for i in sampler if lengths[i] < 16)
        assert partial <= 1


def test_packing_offsets_past_two_to_the_31_tokens_are_int64(monkeypatch):
    small = c.pack_offsets(10, 4)
    assert small.tolist() == [0, 4, 8, 10] and small.dtype.itemsize == 4
    total = 2**31 + 5  # more tokens than an int32 offset counts
    large = c.pack_offsets(total, 2**30)
    assert large.tolist() == [0, 2**30, 2**31, total] and large.dtype.itemsize == 8
    assert c.pack_offsets(2**31 - 1, 2**30)[-1] == 2**31 - 1  # the last int32 one

    # The large-list path end to end, with the limit lowered to a tiny dataset's size.
    monkeypatch.setattr(c, "INT32_MAX", 3)
    rows = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3], [4, 5]],
                                       "labels": [[-100, 2, 3], [4, 5]]})
    packed = c.pack(rows, 2)
    assert packed["input_ids"] == [[1, 2], [3, 4], [5]]
    assert packed["labels"] == [[-100, 2], [3, 4], [5]]
    assert "large_list" in str(packed.data.schema.field("input_ids").type)


def test_text_packing_separates_examples_with_eos(tokenizer):
    s = spec(packing=True, maxLength=8)
    packed = data.tokenize(splits_of([{"text": "goal match"}, {"text": "bank"}]), s,
                           tokenizer, None).train
    tokens = tokenizer.convert_ids_to_tokens(packed["input_ids"][0])
    assert tokens == ["[CLS]", "goal", "match", "[SEP]", "</s>", "[CLS]", "bank", "[SEP]"]
    assert packed["labels"][0] == packed["input_ids"][0]


def test_collator_pads_labels_with_ignore_not_the_pad_id(tokenizer):
    collate = data.collator("causal-lm", tokenizer, None, spec(format="prompt-completion").dataset)
    batch = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                     {"input_ids": [5], "labels": [5]}])
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["input_ids"][1].tolist() == [5, tokenizer.pad_token_id, tokenizer.pad_token_id]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long


def test_fast_defaults_on_gpu_and_the_users_setting_wins(tmp_path):
    gpu = {"gpusPerNode": 1}
    kwargs, _ = trainer_arguments.settings(spec(resources=gpu), tmp_path, bf16_supported=True)
    assert kwargs["bf16"] is True
    assert kwargs["dataloader_num_workers"] == trainer_arguments.GPU_DATALOADER_WORKERS
    assert kwargs["dataloader_pin_memory"] is True
    assert kwargs["ddp_find_unused_parameters"] is False
    # No bf16 where the GPU lacks it, or on CPU, or when the spec chose a precision.
    assert "bf16" not in trainer_arguments.settings(spec(resources=gpu), tmp_path)[0]
    assert "bf16" not in trainer_arguments.settings(spec(), tmp_path, bf16_supported=True)[0]
    fp16, _ = trainer_arguments.settings(spec(training={"fp16": True}, resources=gpu), tmp_path,
                                 bf16_supported=True)
    assert "bf16" not in fp16 and fp16["fp16"] is True
    cpu, _ = trainer_arguments.settings(spec(), tmp_path)
    assert "dataloader_num_workers" not in cpu and "dataloader_pin_memory" not in cpu
    mine = {"bf16": False, "dataloader_num_workers": 0, "dataloader_pin_memory": False,
            "ddp_find_unused_parameters": True, "eval_strategy": "steps"}
    kwargs, _ = trainer_arguments.settings(spec(training=mine, resources=gpu), tmp_path,
                                   bf16_supported=True)
    assert {k: kwargs[k] for k in mine} == mine
    listed = trainer_arguments.defaults(spec(training=mine, resources=gpu), bf16_supported=True)
    assert not set(listed) & set(mine)  # what the log lists as ftjob's is really ftjob's


@pytest.mark.parametrize("deepspeed,bf16", [
    ({"zeroStage": 2}, True),  # the generated config says "auto": it follows bf16
    ({"configMapRef": {"name": "ds", "key": "ds.json"}}, None),  # may fix fp16 itself
])
def test_bf16_default_leaves_a_users_own_deepspeed_config_alone(tmp_path, deepspeed, bf16):
    s = api.parse_spec({"task": "causal-lm", "model": {"path": "/m"},
                        "dataset": {"files": {"train": "t.jsonl"}},
                        "resources": {"gpusPerNode": 1}, "deepspeed": deepspeed})
    user_config = {"fp16": {"enabled": True}, "zero_optimization": {"stage": 2}}
    kwargs, _ = trainer_arguments.settings(s, tmp_path, bf16_supported=True, deepspeed=user_config)
    assert kwargs.get("bf16") is bf16
    assert ("bf16" in trainer_arguments.defaults(s, bf16_supported=True)) is (bf16 is True)


def test_examples_left_without_a_trained_token_are_counted(tokenizer, caplog):
    rows = [{"prompt": "goal match team win cup league", "completion": "bank"},  # 8 prompt tokens
            {"prompt": "goal", "completion": "bank tax"}]
    s = spec(format="prompt-completion", maxLength=8)
    with caplog.at_level("WARNING"):
        out = data.tokenize(splits_of(rows), s, tokenizer, None).train
    assert set(out["labels"][0]) == {c.IGNORE}  # truncated inside the prompt
    assert c.examples_without_trained_tokens(out) == 1
    assert "1 of 2 examples in the train split (/d/t.jsonl) have no token left" in caplog.text


def test_every_format_has_one_tokenization():
    """The API's format entries and the trainer's tokenizations name the same formats."""
    from ftjob_api import dataset_formats

    assert list(c.TOKENIZATIONS) == list(dataset_formats.FORMATS)


def test_the_format_field_lists_the_registered_formats():
    from ftjob_api import dataset_formats

    schema = api.DatasetSource.model_json_schema(by_alias=True)["properties"]["format"]
    assert schema["enum"] == list(dataset_formats.FORMATS)
    assert schema["description"] == dataset_formats.description()
