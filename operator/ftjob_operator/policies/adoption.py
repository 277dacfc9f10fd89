"""An output folder taken over from another job (`spec.storage.adoptPreviousOutput`): the
trainer reports the previous owner's uid in `status.checkpoint.adoptedFromJobUid`, and the
operator says so once, in the OutputAdopted condition and a Warning Event."""

from __future__ import annotations

from typing import Any

from ..plan import Event, Plan
from ..reasons import ConditionType, EventType, Reason
from ..status import StatusBuilder, condition_of


def announce(status: dict[str, Any], out: StatusBuilder, plan: Plan) -> None:
    text = adoption_message(status.get("checkpoint"))
    if text is None:
        return
    previous = condition_of(status, ConditionType.OUTPUT_ADOPTED)
    if previous is not None and previous.get("message") == text:
        return
    out.condition(ConditionType.OUTPUT_ADOPTED, True, Reason.OUTPUT_ADOPTED, text)
    plan.events.append(Event(EventType.WARNING, Reason.OUTPUT_ADOPTED, text))


def adoption_message(checkpoint: Any) -> str | None:
    """What the condition and the Event say (pure), or None when nothing was adopted."""
    uid = checkpoint.get("adoptedFromJobUid") if isinstance(checkpoint, dict) else None
    if not isinstance(uid, str) or not uid:
        return None
    return (f"resumed from the output folder of job uid {uid} "
            "(spec.storage.adoptPreviousOutput): its checkpoints and search study are this "
            "job's now")
