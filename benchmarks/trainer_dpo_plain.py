"""Benchmark: a plain TRL DPOTrainer script vs `ftjob run --local` with `task: preference`.

Same model (a GPT-2 over the tests' word vocabulary, 4 layers, 128 wide, built here), data
(`tests/tinymodels.preference_rows`: chosen answers on the prompt's topic, rejected ones off
it), seed and DPOConfig; CPU with gloo, `OMP_NUM_THREADS=1`. Reports the training loss at
every logged step of both (expected bit-identical at 1 process: ftjob hands TRL the raw
pairs and TRL tokenizes them), and steps/s of each (Trainer's train_steps_per_second) with
their ratio. Runs alternate (plain, ftjob, plain, ftjob, ...) so drifting load hits both.

    .venv/bin/python -m benchmarks.trainer_dpo_plain [--repeats 2] [--max-steps 60] [--nproc 1]

The plain side is this file run under torchrun with `--plain MANIFEST OUT_DIR`: what a
careful user writes by hand (TRL's defaults, except the values the manifest spells out so
that both sides train the same way). Figures go in docs/benchmarks.md; nothing here is
asserted by a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MAX_LENGTH = 64


def manifest(root: Path, max_steps: int) -> Path:
    from benchmarks.trainer_sft_packing import build_model
    from tests import tinymodels as tm

    model = build_model(root / "model")
    tm.write_jsonl(root / "train.jsonl", tm.preference_rows(2048, 31))
    doc = {
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "bench-dpo"},
        "spec": {
            "task": "preference", "model": {"path": str(model)},
            "dataset": {"files": {"train": str(root / "train.jsonl")}, "maxLength": MAX_LENGTH},
            "trainingArguments": {
                "max_steps": max_steps, "per_device_train_batch_size": 8,
                "learning_rate": 1e-3, "beta": 0.1, "logging_steps": 1, "seed": 7,
                "save_strategy": "steps", "save_steps": max_steps, "disable_tqdm": True,
                "report_to": "none",
                # What ftjob chooses for this task anyway, spelled out so that the plain
                # script (TRL's defaults otherwise: bf16 autocast on CPU, activation
                # checkpointing) trains exactly the same way.
                "bf16": False, "activation_checkpointing": False,
                "ddp_find_unused_parameters": False, "average_tokens_across_devices": False,
            },
        },
    }
    path = root / "bench-dpo.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def plain(manifest_path: Path, out_dir: Path) -> None:
    """The plain TRL script (run under torchrun)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    spec = yaml.safe_load(manifest_path.read_text())["spec"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = DPOConfig(output_dir=str(out_dir), use_cpu=True, max_length=MAX_LENGTH,
                     **({"ddp_backend": "gloo"} if world > 1 else {}),
                     **spec["trainingArguments"])
    model_path = spec["model"]["path"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    train = datasets.load_dataset("json", data_files={"train": spec["dataset"]["files"]["train"]},
                                  split="train")
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    result = trainer.train()
    if trainer.is_world_process_zero():
        (out_dir / "plain-result.json").write_text(json.dumps({
            "metrics": result.metrics,
            "losses": {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e},
        }, indent=1))


def env() -> dict[str, str]:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                OMP_NUM_THREADS="1", FTJOB_REPORTER="none",
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                         os.environ.get("PYTHONPATH")])))


def run_plain(path: Path, out: Path, nproc: int) -> dict:
    out.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc-per-node={nproc}", str(Path(__file__).resolve()), "--plain",
                    str(path), str(out)], check=True, env=env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    result = json.loads((out / "plain-result.json").read_text())
    return {"steps_per_second": result["metrics"]["train_steps_per_second"],
            "losses": {int(k): v for k, v in result["losses"].items()}}


def run_ftjob(path: Path, out: Path, nproc: int) -> dict:
    subprocess.run([str(Path(sys.executable).parent / "ftjob"), "run", str(path), "--local",
                    "--nproc", str(nproc), "--output", str(out)], check=True, env=env(),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    return {"steps_per_second": metrics["metrics"]["train_steps_per_second"],
            "losses": {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--plain", nargs=2, metavar=("MANIFEST", "OUT_DIR"))
    opts = parser.parse_args()
    if opts.plain:
        return plain(Path(opts.plain[0]), Path(opts.plain[1]))
    with tempfile.TemporaryDirectory(prefix="ftjob-dpo-bench-") as tmp:
        path = manifest(Path(tmp), opts.max_steps)
        runs: dict[str, list[dict]] = {"plain": [], "ftjob": []}
        for i in range(opts.repeats):
            runs["plain"].append(run_plain(path, Path(tmp) / f"plain-{i}", opts.nproc))
            runs["ftjob"].append(run_ftjob(path, Path(tmp) / f"ftjob-{i}", opts.nproc))
            print(f"repeat {i}: " + "  ".join(f"{k} {v[-1]['steps_per_second']} steps/s"
                                              for k, v in runs.items()), flush=True)
    p = statistics.median(r["steps_per_second"] for r in runs["plain"])
    f = statistics.median(r["steps_per_second"] for r in runs["ftjob"])
    ours, theirs = runs["ftjob"][0]["losses"], runs["plain"][0]["losses"]
    diffs = [abs(ours[s] - theirs[s]) for s in theirs]
    print(json.dumps({
        "max_steps": opts.max_steps, "repeats": opts.repeats, "nproc": opts.nproc,
        "plain_steps_per_second": p, "ftjob_steps_per_second": f, "ratio": round(f / p, 4),
        "logged_steps_compared": len(diffs), "same_steps": sorted(ours) == sorted(theirs),
        "max_loss_difference": max(diffs), "identical_losses": max(diffs) == 0.0,
        "first_loss": theirs[min(theirs)], "last_loss": [ours[max(ours)], theirs[max(theirs)]],
    }, indent=1))


if __name__ == "__main__":
    main()
