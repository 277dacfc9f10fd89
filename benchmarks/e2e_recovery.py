"""Recovery on a real cluster: the operator (the chart), the trainer image, kubelets.

    make kind-up    # once: the kind cluster, images and chart (scripts/kind-up.sh)
    KUBECONFIG=... python -m benchmarks.e2e_recovery [--steps 120] [--save-steps 20]

Measures, for one 2-node x 1-process tiny-BERT job each:

- apply -> first training step;
- SIGKILL of rank 1 after a checkpoint: kill -> first training step of the new attempt,
  and steps lost (steps done before the kill minus the step the resume started from);
- graceful deletion of rank 1 (preemption, checkpoint on SIGTERM): the same two figures.

Step times come from the trainer's per-step log lines (`logging_steps: 1`) as timestamped
by the kubelet (`kubectl logs -f --timestamps`, followed from the start because a restart
deletes the pods), so they do not depend on how often progress reaches the job's status.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ftjob_api import naming  # noqa: E402

from tests.e2e import jobs, kit  # noqa: E402
from tests.e2e.backends import ClusterBackend, wait_ready  # noqa: E402
from tests.polling import wait_for  # noqa: E402

LOSS_LINE = re.compile(rb"^(\S+) \{'loss'")
RESUMED = re.compile(rb"resuming from \S+ \(step (\d+)\)")


LOGS = Path(tempfile.mkdtemp(prefix="ftjob-bench-logs-"))
FOLLOWERS: dict[str, subprocess.Popen] = {}


def follow(backend: ClusterBackend, pod: str) -> None:
    """Keep the pod's log with the kubelet's timestamps, from its container's start to its
    end (the operator deletes an attempt's pods when the gang restarts)."""
    def started():
        seen = backend.get("pods", pod) or {}
        return any("running" in cs.get("state", {}) or "terminated" in cs.get("state", {})
                   for cs in (seen.get("status") or {}).get("containerStatuses") or [])
    wait_for(started, 600, f"pod {pod} to start")
    out = (LOGS / f"{pod}.log").open("wb")
    FOLLOWERS[pod] = subprocess.Popen(
        [backend.kubectl_binary, f"--kubeconfig={backend.kubeconfig}",
         f"--namespace={backend.namespace}", "logs", "-f", "--timestamps", pod], stdout=out)


def pod_log(backend: ClusterBackend, pod: str) -> bytes:
    follower = FOLLOWERS.get(pod)
    if follower is None:
        raise SystemExit(f"pod {pod}'s log was not followed")
    follower.wait(timeout=300)  # its container has ended
    return (LOGS / f"{pod}.log").read_bytes()


def resumed_step(backend: ClusterBackend, pod: str) -> int:
    """The step the trainer in this pod resumed from (its own log line), 0 if fresh."""
    match = RESUMED.search(pod_log(backend, pod))
    return int(match.group(1)) if match else 0


def step_times(backend: ClusterBackend, pod: str) -> list[float]:
    """Epoch seconds at which the pod's rank-0 trainer logged each training step."""
    out = []
    for line in pod_log(backend, pod).splitlines():
        match = LOSS_LINE.match(line)
        if match:
            stamp = match.group(1).decode().rstrip("Z")
            whole, _, frac = stamp.partition(".")
            seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
            out.append(seconds + float(f"0.{frac or 0}"))
    return out


def run_interrupted(backend: ClusterBackend, name: str, steps: int, save_steps: int,
                    how: str, stop_at: int) -> dict:
    """SIGKILL rank 1 at the first checkpoint >= stop_at, or delete its pod at step >= stop_at."""
    applied = time.time()
    backend.apply(jobs.training_job(name, steps, save_steps))
    follow(backend, naming.pod(name, 1, 0))
    if how == "sigkill":
        ready = kit.wait_status(backend, name, lambda s: kit.checkpoint_step(s) >= stop_at
                                or kit.finished(s), "a checkpoint", 600, interval=0.2)
    else:
        ready = kit.wait_status(backend, name, lambda s: kit.step_of(s) >= stop_at
                                or kit.finished(s), f"step {stop_at}", 600, interval=0.2)
    if kit.finished(ready):
        raise SystemExit(f"{name} finished before it could be interrupted: use more --steps")
    attempt = ready["attempt"]
    stopped = time.time()
    if how == "sigkill":
        backend.kill_container(naming.pod(name, attempt, 1))
    else:
        backend.delete("pods", naming.pod(name, attempt, 1))
    follow(backend, naming.pod(name, attempt + 1, 0))
    done = kit.wait_status(backend, name, kit.finished, "the end", 900)
    if done["phase"] != "Succeeded":
        raise SystemExit(f"{name} ended {done['phase']}: {done.get('message')}")
    before = step_times(backend, naming.pod(name, attempt, 0))
    # The attempt right after the stop (a later one would mean it failed again: reported).
    after = step_times(backend, naming.pod(name, attempt + 1, 0))
    if not after:
        raise SystemExit(f"{name}: attempt {attempt + 1} logged no training step")
    resumed = resumed_step(backend, naming.pod(name, attempt + 1, 0))
    return {
        "case": how,
        "apply_to_first_step_s": before[0] - applied,
        "steps_before_stop": len(before),
        "resumed_from_step": resumed,
        "steps_lost": len(before) - resumed,
        "stop_to_first_new_step_s": after[0] - stopped,
        "attempts": done["attempt"],
        "restarts": done.get("restarts", 0),
        "preemptions": done.get("preemptions", 0),
        "steps_per_s": (len(before) - 1) / (before[-1] - before[0]) if len(before) > 1 else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--save-steps", type=int, default=20)
    args = parser.parse_args()
    if not os.environ.get("KUBECONFIG"):
        raise SystemExit("KUBECONFIG must name a cluster with ftjob installed (make kind-up "
                         "prints one)")
    backend = ClusterBackend()
    try:
        wait_ready(backend)
        kit.seed(backend, ["bench-kill", "bench-preempt"])
        results = [
            run_interrupted(backend, "bench-kill", args.steps, args.save_steps, "sigkill",
                            stop_at=args.save_steps),
            # Periodic checkpoints off: the resume point is the checkpoint saved on SIGTERM.
            run_interrupted(backend, "bench-preempt", args.steps, 10 * args.steps, "preempt",
                            stop_at=args.save_steps),
        ]
    finally:
        backend.close()
    print("| case | apply -> first step | steps done before stop | resumed from | steps lost "
          "| stop -> first new step | attempts | restarts | preemptions | steps/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['apply_to_first_step_s']:.1f} s | {r['steps_before_stop']} | "
              f"{r['resumed_from_step']} | {r['steps_lost']} | "
              f"{r['stop_to_first_new_step_s']:.1f} s | {r['attempts']} | {r['restarts']} | "
              f"{r['preemptions']} | "
              f"{r['steps_per_s']:.1f} |")


if __name__ == "__main__":
    main()
