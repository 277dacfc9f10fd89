"""`python -m ftjob_operator`: run the operator with the settings from the environment.

Equivalent to `kopf run -m ftjob_operator.handlers` plus the liveness endpoint, namespace
scope, peering and log format from FTJOB_* variables (docs/operator.md).
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time

import kopf

from . import handlers  # noqa: F401  (registers the handlers)
from .settings import SettingsError, from_env

PRIORITY_EPOCH_MS = 2**42  # after any start time in ms until the year 2109


def replica_priority(now: float | None = None) -> int:
    """The older replica outranks the newer: a replica restarted after a crash (or a new one
    in a rollout) waits behind the one already serving instead of taking over at once, which
    would be a second hand-over. kopf pauses every replica that shares the highest priority,
    so a random tail keeps two started in the same millisecond apart."""
    started_ms = int((time.time() if now is None else now) * 1000)
    return (PRIORITY_EPOCH_MS - started_ms) * 1024 + random.SystemRandom().randrange(1024)


def main() -> int:
    try:
        config = from_env(os.environ)
    except SettingsError as exc:
        print(f"ftjob-operator: {exc}", file=sys.stderr)
        return 2
    kopf.configure(
        debug=config.log_level == "DEBUG",
        verbose=config.log_level in ("DEBUG", "INFO"),
        quiet=config.log_level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(config.log_level)
    kopf.run(
        standalone=config.peering is None,
        peering_name=config.peering,
        # One serves, the others wait and take over when it goes away (replica_priority).
        priority=replica_priority() if config.peering else None,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
