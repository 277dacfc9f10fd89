"""Benchmark: DDP with and without the search for unused parameters (steps/s ratio).

ftjob sets `ddp_find_unused_parameters: false` for its built-in tasks unless the user sets
it; Hugging Face's default without gradient checkpointing is true, which walks the autograd
graph after every forward. Same manifest as trainer_bench (MiniLM, demo headlines, 2 CPU
workers, gloo), no checkpoints, runs alternating (true, false, true, false, ...).

    .venv/bin/python benchmarks/trainer_ddp_unused.py [--repeats 2] [--max-steps 40]

Figures go in docs/benchmarks.md; nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

try:
    from benchmarks.trainer_bench import env, manifest
except ImportError:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.trainer_bench import env, manifest


def run(path: Path, out: Path, find_unused: bool) -> dict:
    doc = yaml.safe_load(path.read_text())
    args = doc["spec"]["trainingArguments"]
    args.update(save_strategy="no", ddp_find_unused_parameters=find_unused)
    variant = path.with_name(f"{path.stem}-{str(find_unused).lower()}.yaml")
    variant.write_text(yaml.safe_dump(doc))
    try:
        subprocess.run([str(Path(sys.executable).parent / "ftjob"), "run", str(variant), "--local",
                        "--output", str(out)], check=True, env=env(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    finally:
        variant.unlink()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    return {"steps_per_second": metrics["train_steps_per_second"], "loss": metrics["train_loss"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=40)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftjob-bench-ddp-") as tmp:
        path = manifest(Path(tmp), opts.max_steps)
        try:
            runs: dict[bool, list[dict]] = {True: [], False: []}
            for i in range(opts.repeats):
                for find_unused in (True, False):
                    runs[find_unused].append(run(path, Path(tmp) / f"{find_unused}-{i}", find_unused))
                    print(f"repeat {i}: find_unused_parameters={find_unused} {runs[find_unused][-1]}",
                          flush=True)
        finally:
            path.unlink()
    on = statistics.median(r["steps_per_second"] for r in runs[True])
    off = statistics.median(r["steps_per_second"] for r in runs[False])
    print(json.dumps({
        "max_steps": opts.max_steps, "repeats": opts.repeats,
        "find_unused_true_steps_per_second": on, "find_unused_false_steps_per_second": off,
        "ratio_false_over_true": round(off / on, 4),
        "train_loss": {"true": [r["loss"] for r in runs[True]],
                       "false": [r["loss"] for r in runs[False]]},
    }, indent=1))


if __name__ == "__main__":
    main()
