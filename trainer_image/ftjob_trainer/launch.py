"""`ftjob-launch TORCHRUN-OPTIONS...`: PID 1 of a training container.

Runs `torchrun <options> --max-restarts=0 -m ftjob_trainer.entrypoint` and turns what the
workers left behind into the container's exit code and one-line termination message.

On SIGTERM (pod deletion, preemption, node drain) torchrun is NOT killed: the launcher
creates the stop file, the workers agree on a step, save it and exit PREEMPTED. A second
SIGTERM/SIGINT forwards SIGTERM to torchrun for an impatient stop; so does the first when
no worker has begun training (no `job.TRAINING_STARTED` marker): there is nothing to
save, and a rank waiting for a rendezvous that cannot happen would otherwise hold its pod
(and its GPUs) until the grace period ends.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftjob_api.contract import (DEFAULT_TERMINATION_LOG, ENV_TERMINATION_LOG, ExitCode,
                                     exit_reason)

from . import exits
from .job import ENV_RESULT_DIR, ENV_STOP_FILE, TRAINING_STARTED

log = logging.getLogger("ftjob_trainer.launch")

WORKER_MODULE = "ftjob_trainer.entrypoint"
TORCHRUN_MODULE = "ftjob_trainer.torchrun"  # torchrun, its failure report left to the launcher
QUICK_STOP_SECONDS = 10  # a stop before training began: how long torchrun gets to exit


@dataclass(frozen=True)
class Decision:
    exit_code: int
    summary: dict[str, Any]


def torchrun_command(options: list[str], python: str = sys.executable) -> list[str]:
    return [python, "-m", TORCHRUN_MODULE, *options, "--max-restarts=0",
            "-m", WORKER_MODULE]


def signal_name(status: int) -> str | None:
    """SIGKILL for -9 (a process killed by a signal) or 137 (128 + 9, as ftjob_trainer.torchrun
    and shells report a worker killed by it); None for an ordinary exit status (pure)."""
    number = -status if status < 0 else status - 128 if status > 128 else 0
    try:
        return signal.Signals(number).name if number else None
    except ValueError:
        return f"signal {number}"


def decide_exit(torchrun_rc: int, failures: list[exits.RankFailure], result: dict[str, Any] | None,
           stop_requested: bool) -> Decision:
    """Exit code and summary from what torchrun and the workers reported (pure)."""
    if torchrun_rc == 0 and not failures:
        return Decision(0, exits.success_summary(result or {}))
    failure = exits.most_significant(failures)
    if failure is None:
        # Killed before it could write anything (OOM killer, SIGKILL) or torchrun itself broke.
        if stop_requested:
            code = ExitCode.PREEMPTED
            message = "stopped on request before a checkpoint could be saved"
        else:
            code = ExitCode.UNKNOWN
            message = f"torchrun exited with {torchrun_rc} and no worker recorded a failure"
            killer = signal_name(torchrun_rc)
            if killer:
                message += f" (a worker was killed by {killer}, e.g. by the OOM killer)"
        failure = exits.RankFailure(int(code), exit_reason(code), message)
    return Decision(failure.exit_code, exits.failure_summary(failure))


def termination_log_path(env: dict[str, str] | os._Environ) -> Path | None:
    configured = env.get(ENV_TERMINATION_LOG)
    if configured:
        return Path(configured)
    default = Path(DEFAULT_TERMINATION_LOG)
    if default.exists() and os.access(default, os.W_OK):
        return default
    return None


def write_termination_log(path: Path | None, line: str) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n")
    except OSError as exc:
        log.warning("could not write the termination message to %s: %s", path, exc)


def run(options: list[str], env: dict[str, str] | None = None) -> Decision:
    """Run torchrun to the end and decide; writes nothing but its own temp folder."""
    base_env = dict(os.environ if env is None else env)
    with tempfile.TemporaryDirectory(prefix="ftjob-launch-") as tmp:
        result_dir = Path(tmp) / "results"
        result_dir.mkdir()
        stop_file = Path(tmp) / "stop"
        base_env[ENV_RESULT_DIR] = str(result_dir)
        base_env[ENV_STOP_FILE] = str(stop_file)
        # Own session: a terminal's Ctrl-C reaches only this process, which stops gracefully.
        proc = subprocess.Popen(torchrun_command(options), env=base_env, start_new_session=True)
        requests = 0
        kill_at: float | None = None  # when torchrun, asked to stop, is killed instead

        def on_signal(signum: int, _frame: Any) -> None:
            nonlocal requests, kill_at
            requests += 1
            if requests == 1 and not (result_dir / TRAINING_STARTED).exists():
                log.warning("received %s before training began: stopping the workers now",
                            signal.Signals(signum).name)
                stop_file.touch()
                proc.send_signal(signal.SIGTERM)
                # torchrun waiting for a rendezvous sits in C++ and sees no signal: killed
                # after a short while (in a pod, the launcher's exit ends every process).
                kill_at = time.monotonic() + QUICK_STOP_SECONDS
            elif requests == 1:
                log.warning("received %s: asking the workers to checkpoint and stop",
                            signal.Signals(signum).name)
                stop_file.touch()
            else:
                log.warning("received %s again: terminating torchrun", signal.Signals(signum).name)
                proc.send_signal(signal.SIGTERM)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while True:
                try:
                    rc = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    if kill_at is not None and time.monotonic() >= kill_at:
                        log.warning("torchrun did not stop within %ds: killing it",
                                    QUICK_STOP_SECONDS)
                        proc.kill()
                        kill_at = None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        result = None
        result_file = result_dir / exits.RESULT_FILE
        if result_file.exists():
            import json

            result = json.loads(result_file.read_text())
        return decide_exit(rc, exits.read_failures(result_dir), result, stop_file.exists())


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s launch: %(message)s")
    options = list(sys.argv[1:] if argv is None else argv)
    decision = run(options)
    line = exits.encode_summary(decision.summary)
    write_termination_log(termination_log_path(os.environ), line)
    print(line, flush=True)
    sys.exit(decision.exit_code)


if __name__ == "__main__":
    main()
