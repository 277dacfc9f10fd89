"""Hyperparameter search: an Event each time the trainer's status.search shows another
finished trial. The SearchProgress condition remembers what was announced, so an operator
restart does not announce it again."""

from __future__ import annotations

from typing import Any

from ..plan import Plan
from ..reasons import ConditionType, EventType, Reason
from ..status import StatusBuilder
from .context import announce_once


def announce(status: dict[str, Any], out: StatusBuilder, plan: Plan) -> None:
    announce_once(status, out, plan, ConditionType.SEARCH_PROGRESS, Reason.TRIAL_FINISHED,
                  EventType.NORMAL, search_message(status.get("search")))


def search_message(search: Any) -> str | None:
    """`2/4 trials finished; best trial 1: 0.689` from status.search, or None before the
    first finished trial (pure)."""
    if not isinstance(search, dict) or not search.get("trialsCompleted"):
        return None
    text = f"{search['trialsCompleted']}/{search.get('trialsTotal')} trials finished"
    if search.get("bestTrial") is not None and isinstance(search.get("bestValue"), (int, float)):
        text += f"; best trial {search['bestTrial']}: {search['bestValue']:.4g}"
    return text
