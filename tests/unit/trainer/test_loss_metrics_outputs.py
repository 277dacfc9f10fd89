"""Loss averaging across processes, GLUE-style F1, and the maxLength clamp (pure pieces)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from ftjob_api import api
from ftjob_trainer import trainer_arguments, data, metrics, modeling


def spec(task="sequence-classification", **training):
    doc = {"task": task, "model": {"path": "/m"},
           "dataset": {"files": {"train": "t.jsonl"},
                       **({"targetColumn": "y"} if task == "seq2seq" else {})},
           "trainingArguments": training}
    return api.parse_spec(doc)


@pytest.mark.parametrize("task, divides, user, expected", [
    ("sequence-classification", False, None, False),
    ("sequence-classification", True, None, False),   # per-example mean whatever the model
    ("causal-lm", True, None, True),                   # ForCausalLMLoss: sum / all-ranks count
    ("causal-lm", False, None, False),
    ("seq2seq", False, None, False),                   # T5, BART: CrossEntropyLoss() mean
    ("sequence-classification", False, True, True),    # the user's value wins
    ("causal-lm", True, False, False),
])
def test_average_tokens_across_devices(task, divides, user, expected):
    training = {} if user is None else {"average_tokens_across_devices": user}
    assert trainer_arguments.average_tokens_across_devices(spec(task, **training), divides) is expected


def _tiny(cls_name: str, config):
    import transformers

    return getattr(transformers, cls_name)(config)


def test_which_models_divide_their_loss_by_the_item_count():
    from transformers import BertConfig, GPT2Config, T5Config

    bert = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=8, num_labels=3)
    gpt2 = GPT2Config(vocab_size=30, n_embd=8, n_layer=1, n_head=2, n_positions=16,
                      bos_token_id=0, eos_token_id=0)
    t5 = T5Config(vocab_size=30, d_model=8, d_kv=4, d_ff=8, num_layers=1, num_heads=2,
                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    assert not modeling.loss_divides_by_item_count(_tiny("BertForSequenceClassification", bert))
    assert modeling.loss_divides_by_item_count(_tiny("GPT2LMHeadModel", gpt2))
    assert not modeling.loss_divides_by_item_count(_tiny("T5ForConditionalGeneration", t5))
    # What the check relies on, measured: GPT-2's loss divides by the count it is given,
    # T5's ignores it (a per-rank mean), so Trainer's x world size is right only for GPT-2.
    import torch

    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    model = _tiny("GPT2LMHeadModel", gpt2).eval()
    plain = model(input_ids=ids, labels=ids).loss
    halved = model(input_ids=ids, labels=ids, num_items_in_batch=torch.tensor(10)).loss
    assert math.isclose(halved.item(), plain.item() * 5 / 10, rel_tol=1e-5)
    model = _tiny("T5ForConditionalGeneration", t5).eval()
    plain = model(input_ids=ids, labels=ids).loss
    ignored = model(input_ids=ids, labels=ids, num_items_in_batch=torch.tensor(60)).loss
    assert math.isclose(ignored.item(), plain.item(), rel_tol=1e-6)


def test_lora_wrapped_model_is_judged_by_its_base():
    from transformers import GPT2Config

    gpt2 = _tiny("GPT2LMHeadModel", GPT2Config(vocab_size=30, n_embd=8, n_layer=1, n_head=2,
                                                n_positions=16, bos_token_id=0, eos_token_id=0))
    wrapped = modeling.add_lora(gpt2, "causal-lm", api.LoraSpec(r=2, target_modules=["c_attn"]))
    assert modeling.loss_divides_by_item_count(wrapped)


def test_f1_is_positive_class_for_two_labels_and_macro_for_more():
    assert metrics.f1_average(2) == "binary" and metrics.f1_average(3) == "macro"
    labels = np.array([1, 1, 1, 0])
    logits = np.array([[0, 1], [0, 1], [1, 0], [1, 0]], dtype=float)  # predicts 1, 1, 0, 0
    binary = metrics.classification_metrics(2)(SimpleNamespace(predictions=logits, label_ids=labels))
    # Positive class: precision 2/2, recall 2/3 -> F1 0.8 (macro would be (0.8 + 2/3) / 2).
    assert binary == {"accuracy": 0.75, "f1": pytest.approx(0.8)}
    labels = np.array([0, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 2, 0]]
    multi = metrics.classification_metrics(3)(SimpleNamespace(predictions=(logits,), label_ids=labels))
    # Per class F1: 2/3, 1, 2/3 -> macro 7/9.
    assert multi["f1"] == pytest.approx(7 / 9) and multi["accuracy"] == 0.75


@pytest.mark.parametrize("requested, limit, expected, warns", [
    (512, 128, 128, True),
    (64, 128, 64, False),
    (128, 128, 128, False),
    (512, int(1e30), 512, False),  # a tokenizer that knows no limit
    (512, None, 512, False),
])
def test_max_length_is_clamped_to_the_tokenizer_limit(requested, limit, expected, warns):
    length, warning = data.clamp_max_length(requested, limit, "spec.dataset.maxLength")
    assert length == expected
    assert (warning is not None) is warns
    if warns:
        assert warning.startswith("spec.dataset.maxLength 512") and "128" in warning


def test_ddp_does_not_search_for_unused_parameters_unless_asked(tmp_path):
    kwargs, _ = trainer_arguments.settings(spec(), tmp_path, world_size=2)
    assert kwargs["ddp_find_unused_parameters"] is False
    kwargs, _ = trainer_arguments.settings(spec(ddp_find_unused_parameters=True), tmp_path, world_size=2)
    assert kwargs["ddp_find_unused_parameters"] is True


def test_the_log_says_why():
    assert "per-example mean" in trainer_arguments.average_tokens_reason(spec(), "BertX", False)
    assert trainer_arguments.average_tokens_reason(spec("causal-lm"), "GPT2LMHeadModel", True) == (
        "GPT2LMHeadModel's loss divides by the token count of all ranks")
    assert "each rank's own tokens" in trainer_arguments.average_tokens_reason(spec("seq2seq"), "T5", False)
    assert trainer_arguments.average_tokens_reason(
        spec(average_tokens_across_devices=True), "BertX", False) == "set in spec.trainingArguments"


def test_tokenize_truncates_to_the_tokenizer_limit_and_warns(tmp_path, caplog):
    import datasets
    from tests import tinymodels as tm

    tokenizer = tm.build_tokenizer(tmp_path / "tok")
    tokenizer.model_max_length = 8
    long_text = " ".join(["goal"] * 40)
    rows = datasets.Dataset.from_list([{"text": long_text, "label": "sports"}])
    splits = data.Splits(rows, None, None, {"train": "rows"})
    job = api.parse_spec({"task": "sequence-classification", "model": {"path": "/m"},
                          "dataset": {"files": {"train": "t.jsonl"}, "maxLength": 32}})
    labels = data.Labels(["sports"], {"sports": 0})
    with caplog.at_level("WARNING"):
        out = data.tokenize(splits, job, tokenizer, labels)
    assert len(out.train[0]["input_ids"]) == 8
    assert "spec.dataset.maxLength 32 is longer than the tokenizer's model_max_length 8" in caplog.text
