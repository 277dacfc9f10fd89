"""Long CPU runs: LoRA, and DeepSpeed ZeRO-2/3 training and resuming (first use JIT-compiles
a DeepSpeed op for about a minute). Marked slow: `make test` runs them, `make test-fast` not."""

from __future__ import annotations

import json

import pytest
from tests.integration.trainer.helpers import classification_spec, run_to_end
from ftjob_trainer import checkpoints

pytestmark = pytest.mark.slow


def test_lora_trains_and_saves_an_adapter(tiny, tmp_path):
    spec = classification_spec(tiny, max_steps=40, save_steps=20)
    spec["peft"] = {"r": 4, "alpha": 8, "targetModules": ["query", "value"]}
    run = run_to_end(tmp_path, spec)
    assert run.proc.returncode == 0, run.log()
    final = run.output_dir / "final"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and sorted(adapter["target_modules"]) == ["query", "value"]
    assert (final / "adapter_model.safetensors").is_file()
    assert not (final / "model.safetensors").exists()  # only the adapter, not the base model
    assert "eval_accuracy" in run.metrics()["metrics"]

    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    labels = json.loads((final / "labels.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(tiny["bert"], num_labels=len(labels))
    model = PeftModel.from_pretrained(base, final)
    assert model.peft_config["default"].r == 4


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_trains_and_resumes(stage, tiny, tmp_path):
    spec = classification_spec(tiny, max_steps=10, save_steps=10, logging_steps=5)
    spec["deepspeed"] = {"zeroStage": stage}
    first = run_to_end(tmp_path, spec)
    assert first.proc.returncode == 0, first.log()
    ckpt = checkpoints.latest_complete(first.output_dir)
    assert ckpt.step == 10
    marker = json.loads((ckpt.path / checkpoints.MARKER).read_text())
    # Both ranks' optimizer shards are part of the verified checkpoint.
    shards = [f for f in marker["files"] if f.startswith("global_step10/") and "optim_states" in f]
    assert len(shards) == 2, sorted(marker["files"])

    spec["trainingArguments"]["max_steps"] = 20
    second = run_to_end(tmp_path, spec)
    assert second.proc.returncode == 0, second.log()
    assert second.summary()["resumedFromStep"] == 10
    assert second.summary()["globalStep"] == 20

    from transformers import AutoModelForSequenceClassification

    AutoModelForSequenceClassification.from_pretrained(second.output_dir / "final")


def _descendants(root: int) -> set[int]:
    """Pids below `root` in the process tree (from the ppid field of /proc/<pid>/stat)."""
    from pathlib import Path

    parent = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            parent[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def _worker_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of this run's worker with RANK=rank (only among the launcher's descendants:
    other trainers may run on the same machine)."""
    from pathlib import Path

    for pid in sorted(_descendants(launcher_pid)):
        proc = Path("/proc") / str(pid)
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"ftjob_trainer.entrypoint" in cmdline and b"ftjob_trainer.torchrun" not in cmdline \
                and f"RANK={rank}".encode() in environ:
            return pid
    return None


def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tiny, tmp_path):
    """As when only one node of a gang is drained: the ranks agree, all save, all stop."""
    import signal

    from tests.integration.trainer.helpers import poll, start
    from ftjob_api.contract import ExitCode

    spec = classification_spec(tiny)
    run = start(tmp_path, spec)
    rank1 = poll(lambda: _worker_pid(run.proc.pid, 1), 120, "the rank-1 worker")
    poll(lambda: (checkpoints.latest_complete(run.output_dir) or checkpoints.Checkpoint(0, tmp_path)).step >= 20,
         240, "a complete checkpoint-20")
    import os

    os.kill(rank1, signal.SIGTERM)
    assert run.wait(120) == ExitCode.PREEMPTED, run.log()
    stopped = run.summary()["globalStep"]
    assert 20 <= stopped < 160
    newest = checkpoints.latest_complete(run.output_dir)
    assert newest.step == stopped
    # Both ranks wrote their part of that checkpoint (their RNG states), then stopped.
    assert (newest.path / "rng_state_0.pth").is_file() and (newest.path / "rng_state_1.pth").is_file()
