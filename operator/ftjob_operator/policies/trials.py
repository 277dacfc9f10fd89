"""Hyperparameter search: an Event each time the trainer's status.search shows another
finished trial. The SearchProgress condition remembers what was announced, so an operator
restart does not announce it again."""

from __future__ import annotations

from typing import Any

from ..plan import Event, Plan
from ..reasons import ConditionType, EventType, Reason
from ..status import StatusBuilder, condition_of


def announce(status: dict[str, Any], out: StatusBuilder, plan: Plan) -> None:
    text = search_message(status.get("search"))
    if text is None:
        return
    previous = condition_of(status, ConditionType.SEARCH_PROGRESS)
    if previous is not None and previous.get("message") == text:
        return
    out.condition(ConditionType.SEARCH_PROGRESS, True, Reason.TRIAL_FINISHED, text)
    plan.events.append(Event(EventType.NORMAL, Reason.TRIAL_FINISHED, text))


def search_message(search: Any) -> str | None:
    """`2/4 trials finished; best trial 1: 0.689` from status.search, or None before the
    first finished trial (pure)."""
    if not isinstance(search, dict) or not search.get("trialsCompleted"):
        return None
    text = f"{search['trialsCompleted']}/{search.get('trialsTotal')} trials finished"
    if search.get("bestTrial") is not None and isinstance(search.get("bestValue"), (int, float)):
        text += f"; best trial {search['bestTrial']}: {search['bestValue']:.4g}"
    return text
