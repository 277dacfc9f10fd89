"""An output folder taken over from another job (`spec.storage.adoptPreviousOutput`): the
trainer reports the previous owner's uid in `status.checkpoint.adoptedFromJobUid`, and the
operator says so once, in the OutputAdopted condition and a Warning Event."""

from __future__ import annotations

from typing import Any

from ..plan import Plan
from ..reasons import ConditionType, EventType, Reason
from ..status import StatusBuilder
from .context import announce_once


def announce(status: dict[str, Any], out: StatusBuilder, plan: Plan) -> None:
    announce_once(status, out, plan, ConditionType.OUTPUT_ADOPTED, Reason.OUTPUT_ADOPTED,
                  EventType.WARNING, adoption_message(status.get("checkpoint")))


def adoption_message(checkpoint: Any) -> str | None:
    """What the condition and the Event say (pure), or None when nothing was adopted."""
    uid = checkpoint.get("adoptedFromJobUid") if isinstance(checkpoint, dict) else None
    if not isinstance(uid, str) or not uid:
        return None
    return (f"resumed from the output folder of job uid {uid} "
            "(spec.storage.adoptPreviousOutput): its checkpoints and search study are this "
            "job's now")
