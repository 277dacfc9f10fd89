"""What every policy reads about one decision on a started job (`Ctx`), the actions that
create its objects and pods (rendered here, where the decision is made), and timer
helpers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from ftjob_api import api

from .. import kueue, render
from . import started_spec
from ..observe import PodView, Refusal
from ..plan import (Case, CreatePods, DeletePods, EnsureJobObjects, EnsureWorkload, Event,
                    JobState, Plan)
from ..settings import Settings
from ..status import StatusBuilder, condition_of

# How often to look again at pods that are stopping (pod events wake the loop sooner).
DELETED_POD_RECHECK_SECONDS = 5.0


@dataclass
class Ctx:
    """What every step of one decision about a started job reads."""

    job: JobState
    spec: api.FineTuneJobSpec  # the effective spec: as started, mutable fields as now
    raw_spec: dict[str, Any]
    pods: list[PodView]  # this job's pods, all attempts
    live: list[PodView]  # ...of them not being deleted
    attempt: int  # the newest attempt (status or pods)
    ensure: bool  # the job's objects (ConfigMap...) may not exist yet
    out: StatusBuilder
    now: datetime
    deadline: datetime | None  # when activeDeadlineSeconds ends the job, if set
    refusal: Refusal | None = None  # the API server refuses to create the pods
    settings: Settings = Settings()  # what the manifests are rendered with
    conflict: Refusal | None = None  # an object the job creates is owned by another
    placement: kueue.Placement = kueue.Placement()  # from the flavors Kueue admitted it with

    @property
    def phase(self) -> str | None:
        return self.job.status.get("phase")

    @property
    def deadline_wait(self) -> float | None:
        """Seconds until activeDeadlineSeconds, if set."""
        return seconds_until(self.deadline, self.now) if self.deadline is not None else None

    def plan(self, case: Case) -> Plan:
        return Plan(case, requeue_after=self.deadline_wait)

    def job_objects(self) -> EnsureJobObjects:
        """Create the job's objects (ServiceAccount ... ConfigMap) from the effective spec;
        the ConfigMap's digest goes on record (`started_spec`)."""
        started_spec.record(self.job, self.raw_spec, self.out)
        return EnsureJobObjects(tuple(render.render_job_objects(
            self.job, self.spec, self.raw_spec, self.settings)))

    def ensure_workload(self) -> EnsureWorkload:
        """The job's Kueue Workload: one pod set shaped like its pods."""
        pod = render.render_pod(self.job, self.spec, 1, 0, self.settings)
        return EnsureWorkload(kueue.render_workload(self.job, self.spec, pod,
                                                    render.owner_reference(self.job)))

    def create_pods(self, attempt: int, ranks: Iterable[int]) -> CreatePods:
        """Create the pods of `attempt` for `ranks`, each told the digest of its job file."""
        digest = started_spec.digest(self.job, self.raw_spec)
        return CreatePods(attempt, tuple(kueue.place(render.render_pod(
            self.job, self.spec, attempt, rank, self.settings, digest), self.placement)
            for rank in ranks))

    @cached_property
    def current(self) -> dict[int, PodView]:
        """The pods of the current attempt by rank."""
        nodes = self.spec.resources.nodes
        return {p.rank: p for p in self.pods if p.attempt == self.attempt and p.rank < nodes}

    @cached_property
    def missing(self) -> list[int]:
        """The ranks of the current attempt that have no pod."""
        return [r for r in range(self.spec.resources.nodes) if r not in self.current]

    def attempt_plan(self, case: Case) -> Plan:
        """A plan that keeps the current attempt and deletes any other live pod (an older
        attempt's, or a rank beyond spec.resources.nodes)."""
        plan = self.plan(case)
        nodes = self.spec.resources.nodes
        leftovers = tuple(p.name for p in self.live if p.attempt != self.attempt
                          or p.rank >= nodes)
        if leftovers:
            plan.actions.append(DeletePods(leftovers))
        return plan

    def wait_for_old_pods(self, case: Case) -> Plan | None:
        """Gang semantics: the next attempt starts only when every old pod is gone. A plan
        that deletes them while any is left; None once they are all gone."""
        if not self.pods:
            return None
        plan = self.plan(case)
        if self.live:
            plan.actions.append(DeletePods(tuple(p.name for p in self.live)))
        self.out.set(phase=self.phase)
        return plan


def seconds_until(moment: datetime, now: datetime) -> float:
    return max((moment - now).total_seconds(), 0.0)


def min_requeue(*values: float | None) -> float | None:
    """The soonest of the timers that are set (None: no timer)."""
    present = [v for v in values if v is not None]
    return min(present) if present else None


def announce_once(status: dict[str, Any], out: StatusBuilder, plan: Plan, condition: str,
                  reason: str, event_type: str, text: str | None) -> None:
    """Set `condition` True with `text` and post an Event, unless the condition already
    says `text`: it remembers what was announced, so an operator restart does not announce
    it again. Nothing when `text` is None."""
    if text is None:
        return
    previous = condition_of(status, condition)
    if previous is not None and previous.get("message") == text:
        return
    out.condition(condition, True, reason, text)
    plan.events.append(Event(event_type, reason, text))
