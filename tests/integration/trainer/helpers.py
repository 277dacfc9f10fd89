"""Helpers for trainer runs under torchrun: launching, polling, the classification spec.

Imported as `tests.integration.trainer.helpers` (tests/conftest.py puts the checkout on
sys.path), so the name cannot collide with another suite's helpers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.polling import wait_for

PYTHON = sys.executable


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    return wait_for(check, timeout, what, interval)


@dataclass
class Run:
    proc: subprocess.Popen
    output_dir: Path
    termination_log: Path
    log_file: Path

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"run did not finish in {timeout}s; log:\n{self.log()}")

    def summary(self) -> dict[str, Any]:
        return json.loads(self.termination_log.read_text())

    def metrics(self) -> dict[str, Any]:
        return json.loads((self.output_dir / "metrics.json").read_text())

    def log(self, tail: int | None = 6000) -> str:
        text = self.log_file.read_text()
        return text[-tail:] if tail else text


def classification_spec(tiny: dict[str, Path], **training: Any) -> dict[str, Any]:
    args = {"max_steps": 160, "per_device_train_batch_size": 8, "learning_rate": 3e-3,
            "logging_steps": 1, "save_steps": 20, "eval_strategy": "no", "seed": 7,
            "lr_scheduler_type": "linear", "warmup_steps": 10}
    args.update(training)
    return {
        "task": "sequence-classification",
        "model": {"path": str(tiny["bert"])},
        "dataset": {"files": {"train": str(tiny["cls_train"]), "validation": str(tiny["cls_val"])},
                    "maxLength": 32},
        "trainingArguments": args,
    }


def start(workdir: Path, spec: dict[str, Any], *, nproc: int = 2, isolate: bool = False,
          env: dict[str, str] | None = None, name: str = "tiny", uid: str | None = None,
          options: list[str] | None = None) -> Run:
    """Start `ftjob-launch --standalone` on a job (or with torchrun `options`); `isolate`
    runs it in its own PID namespace so that killing it kills the whole tree, as a pod kill
    does. `uid`: the job's identity, in the job file and $FTJOB_JOB_UID as a pod has it (the
    output folder is then claimed for it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    job_file = workdir / "job.json"
    metadata = {"name": name, "namespace": "test", **({"uid": uid} if uid else {})}
    job_file.write_text(json.dumps({"metadata": metadata, "spec": spec}))
    output_dir = workdir / "output"
    termination_log = workdir / "termination-log"
    termination_log.unlink(missing_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FTJOB_")}
    full_env.update({
        "FTJOB_JOB_FILE": str(job_file),
        "FTJOB_OUTPUT_DIR": str(output_dir),
        "FTJOB_TERMINATION_LOG": str(termination_log),
        "FTJOB_REPORTER": "none",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DS_ACCELERATOR": "cpu",
        "PYTHONUNBUFFERED": "1",
        **({"FTJOB_JOB_UID": uid} if uid else {}),
    })
    full_env.update(env or {})
    cmd = [PYTHON, "-m", "ftjob_trainer.launch",
           *(options or ["--standalone", f"--nproc-per-node={nproc}"])]
    if isolate:
        # --mount-proc: psutil (DeepSpeed's CPU accelerator, imported by accelerate) looks up
        # its own PID in /proc, which must be the namespace's, not the host's.
        cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *cmd]
    log_file = workdir / f"run-{time.monotonic_ns()}.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    return Run(proc, output_dir, termination_log, log_file)


def run_to_end(workdir: Path, spec: dict[str, Any], **kwargs: Any) -> Run:
    run = start(workdir, spec, **kwargs)
    run.wait()
    return run


def logged_losses(checkpoint: Path) -> dict[int, float]:
    """step -> training loss from a checkpoint's trainer_state.json."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return {e["step"]: e["loss"] for e in state["log_history"] if "loss" in e}
