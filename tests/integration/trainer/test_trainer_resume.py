"""Resume that cannot go wrong: kill -9, a truncated checkpoint, and a graceful SIGTERM."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

from tests.integration.trainer.helpers import classification_spec, logged_losses, poll, start
from ftjob_api.contract import ExitCode
from ftjob_trainer import checkpoints

# Measured: resumed and uninterrupted runs agree to the last bit on CPU/gloo (difference
# 0.0). The bound leaves room for summation-order noise on other CPUs, far below any
# real divergence (a lost or repeated step moves the loss by > 1e-3 here).
LOSS_TOLERANCE = 1e-6
MAX_STEPS = 160


def complete_checkpoint_at_least(output_dir, step):
    latest = checkpoints.latest_complete(output_dir)
    return latest if latest is not None and latest.step >= step else None


def assert_same_end(resumed, baseline):
    resumed_losses = logged_losses(resumed.output_dir / f"checkpoint-{MAX_STEPS}")
    baseline_losses = logged_losses(baseline.output_dir / f"checkpoint-{MAX_STEPS}")
    assert math.isclose(resumed_losses[MAX_STEPS], baseline_losses[MAX_STEPS],
                        rel_tol=0, abs_tol=LOSS_TOLERANCE), (resumed_losses[MAX_STEPS],
                                                             baseline_losses[MAX_STEPS])
    resumed_eval = resumed.metrics()["metrics"]["eval_loss"]
    baseline_eval = baseline.metrics()["metrics"]["eval_loss"]
    assert math.isclose(resumed_eval, baseline_eval, rel_tol=0, abs_tol=LOSS_TOLERANCE)


def test_kill9_then_truncated_newest_checkpoint_resumes_from_last_complete(baseline, tiny,
                                                                           tmp_path):
    spec = classification_spec(tiny)
    killed = start(tmp_path, spec, isolate=True)
    ckpt = poll(lambda: complete_checkpoint_at_least(killed.output_dir, 20), 240,
                "a complete checkpoint-20")
    os.kill(killed.proc.pid, signal.SIGKILL)  # the PID namespace dies with it, like a pod
    killed.wait(30)
    assert not (killed.output_dir / "final").exists(), "the run ended before it was killed"

    # A save that was cut short: newer than every complete checkpoint, weights truncated.
    last_good = checkpoints.latest_complete(killed.output_dir)
    assert last_good.step >= ckpt.step
    torn = killed.output_dir / f"checkpoint-{MAX_STEPS - 1}"
    checkpoints_before = {p.name for p in checkpoints.candidates(killed.output_dir)}
    if torn.name not in checkpoints_before:
        import shutil

        shutil.copytree(last_good.path, torn)
        (torn / checkpoints.MARKER).unlink()
        weights = torn / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])

    resumed = start(tmp_path, spec)
    assert resumed.wait() == 0, resumed.log()
    summary = resumed.summary()
    assert summary["resumedFromStep"] == last_good.step
    assert summary["globalStep"] == MAX_STEPS
    # The torn folder was moved aside for inspection, not deleted and not resumed from.
    assert (killed.output_dir / checkpoints.ASIDE_DIR / torn.name).is_dir()
    assert "skipping incomplete checkpoint" in resumed.log(tail=None)
    assert_same_end(resumed, baseline)


def test_sigterm_checkpoints_current_step_exits_preempted_and_resume_loses_nothing(
        baseline, tiny, tmp_path):
    spec = classification_spec(tiny)
    run = start(tmp_path, spec)
    poll(lambda: complete_checkpoint_at_least(run.output_dir, 20), 240, "a complete checkpoint-20")
    run.proc.send_signal(signal.SIGTERM)  # to the launcher, as the kubelet does to PID 1
    assert run.wait(120) == ExitCode.PREEMPTED, run.log()
    summary = run.summary()
    assert summary["reason"] == "Preempted"
    stopped = summary["globalStep"]
    assert 20 <= stopped < MAX_STEPS
    # The stop step itself was saved and verified, whatever save_steps says.
    newest = checkpoints.latest_complete(run.output_dir)
    assert newest.step == stopped
    assert not (run.output_dir / "final").exists()

    resumed = start(tmp_path, spec)
    assert resumed.wait() == 0, resumed.log()
    assert resumed.summary()["resumedFromStep"] == stopped  # zero steps lost
    assert resumed.summary()["globalStep"] == MAX_STEPS
    assert_same_end(resumed, baseline)


def test_sigterm_before_training_begins_ends_the_run_within_seconds(tiny, tmp_path):
    """Rank 1 of a gang whose rank 0 never started (Kueue evicts such a gang for not getting
    Ready): it waits in the rendezvous, where no step will come. With nothing to save, the
    launcher stops it at once instead of holding the pod, and its GPUs, until the end of the
    grace period."""
    import socket
    import time

    with socket.socket() as probe:  # a port nobody listens on: rank 0 is not there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = start(tmp_path, classification_spec(tiny), options=[
        "--nnodes=2", "--node-rank=1", "--nproc-per-node=1", "--master-addr=127.0.0.1",
        f"--master-port={port}", "--rdzv-id=never"])
    poll(lambda: Path(f"/proc/{run.proc.pid}/task/{run.proc.pid}/children").read_text().split(),
         60, "torchrun to start")
    signalled = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(60) == ExitCode.PREEMPTED, run.log()
    print(f"stopped {time.monotonic() - signalled:.1f}s after SIGTERM")
    assert "before training began" in run.log(), run.log()
    assert not checkpoints.latest_complete(run.output_dir)


def test_resuming_a_run_stopped_after_its_last_step_trains_no_step_more(baseline, tiny, tmp_path):
    """Stopped after checkpoint-MAX_STEPS but before its final save (a preemption or a kill
    during the final evaluation): the next attempt evaluates and saves the weights it resumes,
    without the extra step Trainer would take, and ends where the baseline ended."""
    import shutil

    shutil.copytree(baseline.output_dir, tmp_path / "output")
    shutil.rmtree(tmp_path / "output" / "final")
    (tmp_path / "output" / "metrics.json").unlink(missing_ok=True)
    resumed = start(tmp_path, classification_spec(tiny))
    assert resumed.wait() == 0, resumed.log()
    summary = resumed.summary()
    assert summary["resumedFromStep"] == MAX_STEPS
    assert summary["globalStep"] == MAX_STEPS  # not MAX_STEPS + 1
    assert (resumed.output_dir / "final").is_dir()
    assert_same_end(resumed, baseline)  # the same weights: the same eval loss
