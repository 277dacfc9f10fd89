"""The reference side of the trainer benchmark: a plain Hugging Face Trainer script.

Run under torchrun by trainer_bench.py with the same model, data, seed and
TrainingArguments that `ftjob run --local` gets from the manifest. It does what a careful
user would write by hand (same tokenization, same label order, seed before the model) and
nothing ftjob adds (no checkpoint markers, no stop agreement, no progress reporting).

    torchrun --standalone --nproc-per-node 2 benchmarks/trainer_plain_hf.py MANIFEST OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def main() -> None:
    manifest, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    spec = yaml.safe_load(manifest.read_text())["spec"]
    base = manifest.resolve().parent

    import datasets
    from ftjob_trainer.modeling import resolve_model_path
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, Trainer, TrainingArguments, set_seed)

    ds = spec["dataset"]
    files = {split: str(base / path) for split, path in ds["files"].items()}
    train = datasets.load_dataset("json", data_files={"train": files["train"]}, split="train")
    evaluation = datasets.load_dataset("json", data_files={"validation": files["validation"]},
                                       split="validation")
    names = sorted(set(train["label"]))
    label2id = {n: i for i, n in enumerate(names)}

    args = TrainingArguments(output_dir=str(out_dir), use_cpu=True, ddp_backend="gloo",
                             **spec["trainingArguments"])
    model_path = resolve_model_path(spec["model"]["path"], base)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id,
        ignore_mismatched_sizes=True)

    def encode(batch):
        out = tokenizer(batch["text"], truncation=True, max_length=ds["maxLength"])
        out["labels"] = [label2id[v] for v in batch["label"]]
        return out

    with args.main_process_first(local=False):
        train = train.map(encode, batched=True, remove_columns=train.column_names)
        evaluation = evaluation.map(encode, batched=True, remove_columns=evaluation.column_names)

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                      processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer))
    result = trainer.train()
    if trainer.is_world_process_zero():
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        (out_dir / "plain-result.json").write_text(json.dumps({
            "globalStep": trainer.state.global_step,
            "metrics": result.metrics,
            "lastLoggedLoss": losses[-1] if losses else None,
        }, indent=1))


if __name__ == "__main__":
    main()
