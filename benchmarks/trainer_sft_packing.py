"""Benchmark: causal-LM fine-tuning on chat-shaped data, padded batches vs packing.

One process on CPU, a tiny GPT-2-like model (tests/tinymodels.py vocabulary, 4 layers, 128
wide, 256 positions) and prompt/completion data with a chat-like length distribution (most
examples short, a few long). Three runs of Hugging Face Trainer with the same model, data,
seed, batch size and steps:

- plain: a plain Hugging Face causal-LM script as a user writes it: prompt + completion
  joined into one text, tokenized with truncation, `DataCollatorForLanguageModeling`
  padding each batch to its longest example;
- ftjob: `format: prompt-completion` (completion-only loss), padded batches;
- ftjob packed: the same with `packing: true` (sequences of exactly `maxLength` tokens).

Reports, for each, the padding fraction of the batches the model saw (pad slots / all
slots) and non-pad tokens per second (real tokens fed / Trainer's train_runtime) and per
CPU second of the process (torch on one thread: what other load on a shared machine does
not change), with the ratios against the plain script. Runs alternate so that drifting
load hits all three.

    .venv/bin/python -m benchmarks.trainer_sft_packing [--repeats 2] [--max-steps 30]

Figures go in docs/benchmarks.md; nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

MAX_LENGTH = 256
BATCH = 8


def chat_like_rows(n: int, seed: int) -> list[dict]:
    """Prompt 5-12 words; completion mostly 3-30 words, one in ten 80-230 (long answers)."""
    from tests import tinymodels as tm

    rng = random.Random(seed)
    words = [w for ws in tm.TOPICS.values() for w in ws] + tm.FILLER
    rows = []
    for _ in range(n):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(5, 12)))
        length = rng.randint(80, 230) if rng.random() < 0.1 else rng.randint(3, 30)
        rows.append({"prompt": prompt, "completion": " ".join(rng.choice(words)
                                                               for _ in range(length))})
    return rows


def build_model(folder: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests import tinymodels as tm

    tokenizer = tm.build_tokenizer(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=128, n_layer=4, n_head=4,
                        n_positions=MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


class Counting:
    """Wraps a collator; counts the real and the padded token slots it hands out."""

    def __init__(self, inner) -> None:
        self.inner, self.real, self.slots = inner, 0, 0

    def __call__(self, features):
        batch = self.inner(features)
        self.real += int(batch["attention_mask"].sum())
        self.slots += batch["attention_mask"].numel()
        return batch


def train(model_dir: Path, train_set, collate, out: Path, max_steps: int) -> dict:
    from transformers import (AutoModelForCausalLM, PrinterCallback, Trainer, TrainingArguments,
                              set_seed)

    args = TrainingArguments(output_dir=str(out), use_cpu=True, max_steps=max_steps,
                             per_device_train_batch_size=BATCH, learning_rate=1e-3, seed=7,
                             logging_steps=max_steps, save_strategy="no", report_to=[],
                             disable_tqdm=True, dataloader_drop_last=False)
    set_seed(7)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    counting = Counting(collate)
    trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=counting)
    trainer.remove_callback(PrinterCallback)
    cpu_start = time.process_time()
    result = trainer.train()
    cpu = time.process_time() - cpu_start
    seconds = result.metrics["train_runtime"]
    return {"padding_fraction": round(1 - counting.real / counting.slots, 4),
            "real_tokens": counting.real, "seconds": round(seconds, 2),
            "tokens_per_second": round(counting.real / seconds, 1),
            "tokens_per_cpu_second": round(counting.real / cpu, 1)}


def plain_dataset(rows, tokenizer):
    """What a plain Hugging Face causal-LM script does with prompt/completion data."""
    import datasets

    def encode(batch):
        texts = [p + " " + c for p, c in zip(batch["prompt"], batch["completion"])]
        return tokenizer(texts, truncation=True, max_length=MAX_LENGTH)

    raw = datasets.Dataset.from_list(rows)
    return raw.map(encode, batched=True, remove_columns=raw.column_names)


def ftjob_dataset(rows, tokenizer, packing: bool, data_file: Path):
    from ftjob_api import api
    from ftjob_trainer import data

    spec = api.parse_spec({"task": "causal-lm", "model": {"path": "/m"},
                           "dataset": {"files": {"train": str(data_file)},
                                       "format": "prompt-completion", "packing": packing,
                                       "maxLength": MAX_LENGTH}})
    splits = data.load_splits(spec.dataset)
    train_set = data.tokenize(splits, spec, tokenizer, None).train
    return train_set, data.collator("causal-lm", tokenizer, None, spec.dataset)


def main() -> None:
    import torch
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    from tests import tinymodels as tm

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=30)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    rows = chat_like_rows(2000, seed=1)
    with tempfile.TemporaryDirectory(prefix="ftjob-sft-bench-") as tmp:
        root = Path(tmp)
        model_dir = build_model(root / "model")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        data_file = tm.write_jsonl(root / "train.jsonl", rows)
        sets = {
            "plain": (plain_dataset(rows, tokenizer),
                      DataCollatorForLanguageModeling(tokenizer, mlm=False)),
            "ftjob": ftjob_dataset(rows, tokenizer, False, data_file),
            "ftjob_packed": ftjob_dataset(rows, tokenizer, True, data_file),
        }
        lengths = [len(x) for x in sets["plain"][0]["input_ids"]]
        results: dict[str, list[dict]] = {name: [] for name in sets}
        for i in range(opts.repeats):
            for name, (train_set, collate) in sets.items():
                results[name].append(train(model_dir, train_set, collate, root / f"{name}-{i}",
                                           opts.max_steps))
                print(f"repeat {i} {name}: {results[name][-1]}", flush=True)

    def median(name, key):
        return statistics.median(r[key] for r in results[name])

    plain_tps = median("plain", "tokens_per_second")
    plain_cpu = median("plain", "tokens_per_cpu_second")
    print(json.dumps({
        "max_steps": opts.max_steps, "repeats": opts.repeats, "batch": BATCH,
        "max_length": MAX_LENGTH, "examples": len(rows),
        "example_tokens": {"median": statistics.median(lengths), "max": max(lengths),
                           "share_over_100": round(sum(n > 100 for n in lengths) / len(lengths), 3)},
        **{name: {"padding_fraction": median(name, "padding_fraction"),
                  "tokens_per_second": median(name, "tokens_per_second"),
                  "tokens_per_second_vs_plain": round(median(name, "tokens_per_second")
                                                      / plain_tps, 2),
                  "tokens_per_cpu_second": median(name, "tokens_per_cpu_second"),
                  "tokens_per_cpu_second_vs_plain": round(
                      median(name, "tokens_per_cpu_second") / plain_cpu, 2)}
           for name in results},
    }, indent=1))


if __name__ == "__main__":
    main()
