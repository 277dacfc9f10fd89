"""Benchmark: pushing the demo's model to a real registry (spec.output.oci).

The demo's job (MiniLM on the headlines, examples/demo-local.yaml) trained with LoRA twice,
with two seeds (two adapters on the same base), each delivered to the same repository of a
local registry (Debian's docker-registry with TLS and htpasswd, tests/registry.py):

- the adapter alone (what a LoRA job pushes without `mergeAdapter`), first and second;
- merged into the base (`mergeAdapter: true`), first and second, with the merged weights in
  one shard (the default for a model this size) and in 20 MB shards (as a large model's
  shards would be: the embedding shard, which LoRA on the attention leaves unchanged, is the
  same file in both merges);
- the first merged push again (nothing new).

Reports time, blobs and bytes sent for each push. The training runs themselves are not
timed.

    .venv/bin/python benchmarks/delivery_push.py [--max-steps 30]

Figures go in docs/benchmarks.md; nothing here is asserted by a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "api"), str(REPO / "trainer_image")]
DEMO = REPO / "examples" / "demo-local.yaml"


def train(tmp: Path, seed: int, max_steps: int) -> Path:
    doc = yaml.safe_load(DEMO.read_text())
    doc["metadata"]["name"] = f"push-bench-{seed}"
    doc["spec"]["peft"] = {"r": 8, "alpha": 16, "dropout": 0.0}
    doc["spec"]["trainingArguments"].update({
        "max_steps": max_steps, "seed": seed, "eval_strategy": "no", "save_strategy": "no",
        "learning_rate": 1e-3})
    for split, rel in doc["spec"]["dataset"]["files"].items():
        doc["spec"]["dataset"]["files"][split] = str((DEMO.parent / rel).resolve())
    manifest = tmp / f"seed{seed}.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    out = tmp / f"out-{seed}"
    subprocess.run([str(Path(sys.executable).parent / "ftjob"), "run", str(manifest),
                    "--local", "--nproc", "1", "--output", str(out)], check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return out


def push(label: str, folder: Path, ref: str, registry) -> None:
    from ftjob_trainer.delivery import oci

    started = time.perf_counter()
    result = oci.push(folder, ref, docker_config=registry.docker_config(),
                      ca_file=registry.ca_file)
    seconds = time.perf_counter() - started
    print(f"{label:<44} {seconds:6.2f} s  {result.blobs_sent}/"
          f"{result.blobs_sent + result.blobs_skipped} blobs  "
          f"{result.bytes_sent / 1e6:8.2f} MB of {result.size / 1e6:8.2f} MB")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-steps", type=int, default=30)
    args = parser.parse_args()
    from ftjob_api import api
    from ftjob_trainer import modeling
    from ftjob_trainer.delivery import merge

    from tests.registry import TestRegistry

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        runs = [train(tmp, seed, args.max_steps) for seed in (1, 2)]
        spec = api.parse_spec(yaml.safe_load(DEMO.read_text())["spec"])
        source, _ = modeling.model_source(spec, base=DEMO.parent)
        for run in runs:
            merge.merge_adapter(run / "final", run / "merged", base_model=source)
            merge.merge_adapter(run / "final", run / "merged-20mb", base_model=source,
                                max_shard_size="20MB")
        registry = TestRegistry.create(tmp / "registry")
        try:
            repo = f"{registry.host}/demo"
            print(f"demo model, LoRA r=8, {args.max_steps} steps; registry {registry.host}")
            for kind, folder in (("adapter", "final"), ("merged, 1 shard", "merged"),
                                 ("merged, 20 MB shards", "merged-20mb")):
                slug = folder.replace("-", "")
                push(f"{kind}: first push", runs[0] / folder, f"{repo}/{slug}:seed1", registry)
                push(f"{kind}: second (new adapter)", runs[1] / folder,
                     f"{repo}/{slug}:seed2", registry)
            push("merged, 1 shard: first pushed again", runs[0] / "merged",
                 f"{repo}/merged:seed1", registry)
            shards = sorted(p.name for p in (runs[0] / "merged-20mb").glob("*.safetensors"))
            same = [s for s in shards if (runs[0] / "merged-20mb" / s).read_bytes()
                    == (runs[1] / "merged-20mb" / s).read_bytes()]
            print(f"20 MB shards: {len(shards)}; the same in both merges: {same}")
        finally:
            registry.close()
            shutil.rmtree(tmp / "registry", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
