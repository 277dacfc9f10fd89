"""`python -m ftjob_trainer.torchrun OPTIONS...`: torchrun, without its failure report.

When a worker fails, torchrun raises `ChildFailedError` and Python prints it as a 30-line
traceback ("Root Cause (first observed failure) ..."). The launcher already reports the
cause in one line (the worker's classified failure), so that block only buries it, in a
terminal and in `kubectl logs` alike. Here the error becomes an exit status instead: the
worker's own exit code, or 128 + N for a worker killed by signal N (what a shell reports),
which the launcher then names. `FTJOB_DEBUG=1` keeps torchrun's full report.
"""

from __future__ import annotations

import logging
import os
import sys

from ftjob_api.contract import debugging

WORKER_PROCESS_LOGGERS = "torch.distributed.elastic.multiprocessing"
GENERIC_FAILURE = 1  # what an uncaught exception gives; also torchrun's own choice


def exit_status(worker_exitcode: int) -> int:
    """The status for a failed worker's exit code (negative: killed by that signal) (pure)."""
    if worker_exitcode < 0:
        return 128 + (-worker_exitcode)
    return worker_exitcode or GENERIC_FAILURE


def quiet_failure_logs() -> None:
    """torchrun's agent logs each failed worker ("failed (exitcode: 11) local_rank: 0 ... of
    binary ...") and the SIGTERM it sends the others: the launcher's line says it better."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(WORKER_PROCESS_LOGGERS):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if not debugging(os.environ):
        quiet_failure_logs()
    try:
        torchrun(argv)
    except ChildFailedError as exc:
        if debugging(os.environ):
            raise
        _rank, failure = exc.get_first_failure()
        return exit_status(failure.exitcode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
