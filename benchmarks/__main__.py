"""`make bench` / `python -m benchmarks [NAME...]`: run the benchmarks one after another.

Each prints its own figures; docs/benchmarks.md records them. Timings are noisy on shared
machines, so every benchmark compares ratios measured within one run.
"""

from __future__ import annotations

import importlib
import os
import sys

# Cheapest first. gpu_paths needs a CUDA machine, e2e_recovery a cluster (make kind-up).
BENCHMARKS = ["operator_lifecycle", "operator_scale", "operator_scale_real", "operator_stall",
              "trainer_bench", "trainer_ddp_unused", "trainer_sft_packing", "trainer_dpo_plain",
              "inspect_large", "delivery_push",
              "fuzz_manifests",
              "e2e_recovery", "gpu_paths"]


def available(name: str) -> tuple[bool, str]:
    if name == "gpu_paths":
        import torch

        return torch.cuda.is_available(), "no CUDA device"
    if name == "fuzz_manifests":
        import importlib.util

        return importlib.util.find_spec("atheris") is not None, "atheris not installed"
    if name == "delivery_push":
        return os.path.exists("/usr/bin/docker-registry"), "docker-registry not installed"
    if name == "e2e_recovery":
        return bool(os.environ.get("KUBECONFIG")), "no cluster (make kind-up, then KUBECONFIG)"
    return True, ""


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    for name in names:
        ok, why = available(name)
        if not ok:
            print(f"== {name}: not run here ({why})", flush=True)
            continue
        print(f"== {name}", flush=True)
        sys.argv = [f"benchmarks.{name}"]  # each benchmark parses its own options: defaults here
        importlib.import_module(f"benchmarks.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
