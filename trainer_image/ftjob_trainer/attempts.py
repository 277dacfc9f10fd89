"""`attempts.jsonl` in the output folder: one line per attempt, written by world rank 0 when
the attempt starts (when, the step it resumed from, the world size). `ftjob report` reads
it to mark where each attempt resumed."""

from __future__ import annotations

import json
from pathlib import Path

ATTEMPTS_FILE = "attempts.jsonl"


def record_attempt(output_dir: Path, resumed_from_step: int, world_size: int, now: str) -> None:
    """Append this attempt to attempts.jsonl (world rank 0 calls this once per attempt)."""
    with open(output_dir / ATTEMPTS_FILE, "a") as out:
        out.write(json.dumps({"startedAt": now, "resumedFromStep": resumed_from_step,
                              "worldSize": world_size}) + "\n")
