"""`status`: what the operator and the trainer write back (phase, conditions, progress,
attempts, goodput, search, output). Writers build their patches from these models."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import Field

from .base import ApiModel


class Phase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


FINISHED_PHASES = frozenset({Phase.SUCCEEDED.value, Phase.FAILED.value})


class Condition(ApiModel):
    type: str = Field(description="Condition type, e.g. `Running`, `Succeeded`, `InvalidSpec`.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="The spec generation this condition was computed from."
    )


class Progress(ApiModel):
    """Written by the trainer's rank-0 process while it trains."""

    global_step: int | None = Field(default=None, description="Optimizer steps done.")
    max_steps: int | None = Field(default=None, description="Optimizer steps in the whole run.")
    percent: float | None = Field(default=None, description="globalStep / maxSteps in percent.")
    epoch: float | None = Field(default=None, description="Fractional epoch.")
    loss: float | None = Field(default=None, description="Latest logged training loss.")
    learning_rate: float | None = Field(default=None, description="Latest learning rate.")
    samples_per_second: float | None = Field(default=None, description="Training throughput.")
    eta_seconds: float | None = Field(default=None, description="Estimated seconds to finish.")
    eval_metrics: dict[str, float] | None = Field(
        default=None, description="Latest evaluation metrics (e.g. `eval_loss`, `eval_accuracy`)."
    )
    updated_at: str | None = Field(
        default=None, description="When this was written (RFC 3339); refreshed at least every "
        "minute while the trainer runs, even during one long step, evaluation or save."
    )
    activity: Literal["loading", "training", "evaluating", "saving"] | None = Field(
        default=None, description="What the trainer is doing: `loading`, `training`, "
        "`evaluating` or `saving`."
    )
    attempt: int | None = Field(default=None, description="The attempt that wrote this.")
    activity_since: str | None = Field(
        default=None, description="When `activity` last changed (RFC 3339)."
    )
    last_step_time: str | None = Field(
        default=None, description="When `globalStep` last advanced in this attempt (RFC 3339); "
        "absent before the attempt's first step."
    )


class CheckpointRef(ApiModel):
    step: int = Field(description="Global step of the checkpoint.")
    path: str = Field(description="Directory of the checkpoint on the output volume.")
    saved_at: str | None = Field(default=None, description="When it was completed (RFC 3339).")


class CheckpointStatus(ApiModel):
    latest: CheckpointRef | None = Field(
        default=None, description="Newest complete (verified) checkpoint."
    )
    resumed_from_step: int | None = Field(
        default=None, description="Step the current attempt resumed from; 0 for a fresh start."
    )
    adopted_from_job_uid: str | None = Field(
        default=None, description="The uid of the job whose output folder this job took over "
        "(`spec.storage.adoptPreviousOutput`); absent when the folder was this job's from the "
        "start."
    )


class AttemptRecord(ApiModel):
    """One attempt (one set of pods) of the job, as the operator saw it."""

    attempt: int = Field(description="Attempt number (pods are named by it).")
    start_time: str | None = Field(default=None, description="When its pods were created.")
    first_step_time: str | None = Field(
        default=None, description="When its first training step was seen (RFC 3339)."
    )
    end_time: str | None = Field(default=None, description="When it ended; absent while it runs.")
    reason: str | None = Field(
        default=None, description="How it ended: `Succeeded`, `Failed`, `Preempted`, `Stalled`, "
        "`Suspended`, `Deleted`."
    )
    message: str | None = Field(
        default=None, description="Detail: the rank and exit code or `OOMKilled`, the pod, the node."
    )
    resumed_from_step: int | None = Field(default=None, description="Step it resumed from.")
    last_step: int | None = Field(default=None, description="Last step it reported.")
    steps_lost: int | None = Field(
        default=None, description="Steps done after the checkpoint the next attempt resumes from."
    )
    downtime_seconds: float | None = Field(
        default=None, description="From its end to the first step of the next attempt."
    )


class Goodput(ApiModel):
    """How much of the job's time went into training steps that were kept.

    Updated when an attempt starts stepping and when one ends."""

    productive_seconds: float = Field(
        default=0.0, description="Time spent stepping, less the time of steps lost to restarts."
    )
    wall_seconds: float = Field(default=0.0, description="From the job's start to now or its end.")
    ratio: float | None = Field(default=None, description="productiveSeconds / wallSeconds.")
    steps_lost: int = Field(default=0, description="Steps redone after restarts, all attempts.")
    attempts_folded: int = Field(
        default=0, description="Oldest attempts dropped from `attempts` (counted in these totals)."
    )


class SearchStatus(ApiModel):
    """Written by the trainer's rank-0 process during a hyperparameter search."""

    trials: str | None = Field(
        default=None, description="Finished trials out of the total, e.g. `2/4`."
    )
    trials_completed: int = Field(default=0, description="Trials finished (completed or pruned).")
    trials_total: int = Field(default=0, description="Trials the search runs in all.")
    best_trial: int | None = Field(default=None, description="Number of the best trial so far.")
    best_value: float | None = Field(default=None, description="Its value of the metric.")
    best_params: dict[str, Any] | None = Field(default=None, description="Its parameters.")


class OutputPhase(str, Enum):
    """Where the delivery of `spec.output` stands."""

    PENDING = "Pending"  # training has not succeeded yet
    MERGING = "Merging"  # merging the LoRA adapter into the base model
    PUSHING = "Pushing"  # pushing to the registry (again after a failed try)
    PUSHED = "Pushed"  # in the registry: `reference`, `digest`
    READY = "Ready"  # done without a push (no `oci`): merged and/or gate met
    WITHHELD = "Withheld"  # trained, but the gate was not met: not pushed
    FAILED = "Failed"  # the merge or the push failed for good (`message`)


OUTPUT_FINISHED_PHASES = frozenset({OutputPhase.PUSHED.value, OutputPhase.READY.value,
                                    OutputPhase.WITHHELD.value, OutputPhase.FAILED.value})


class GateResult(ApiModel):
    """How the final metrics fared against `spec.output.gate`."""

    metric: str = Field(description="The metric read, e.g. `eval_accuracy`.")
    value: float | None = Field(
        default=None, description="Its final value; absent when the final metrics lack it "
        "(the gate is then not met)."
    )
    bound: float = Field(description="The gate's `min` or `max`.")
    comparison: Literal["min", "max"] = Field(
        description="`min`: met when value >= bound; `max`: met when value <= bound."
    )
    passed: bool = Field(description="Whether the gate was met.")


class OutputStatus(ApiModel):
    """Written while and after the model is delivered (`spec.output`)."""

    phase: OutputPhase | None = Field(
        default=None, description="`Pending`, `Merging`, `Pushing`, `Pushed`, `Ready` (done "
        "without a push), `Withheld` (the gate was not met: not pushed) or `Failed`."
    )
    reference: str | None = Field(
        default=None, description="The image pushed, `REPOSITORY:TAG`; serve it with "
        "`storageUri: oci://REPOSITORY:TAG`."
    )
    digest: str | None = Field(
        default=None, description="Digest of the pushed manifest (`sha256:...`), to pin it "
        "(`oci://REPOSITORY@DIGEST`)."
    )
    size: int | None = Field(default=None, description="Bytes pushed (the image's layers).")
    gate: GateResult | None = Field(default=None, description="The gate's result.")
    pushed_at: str | None = Field(default=None, description="When the push completed (RFC 3339).")
    attempts: int = Field(default=0, description="Delivery tries so far (merge and push).")
    message: str | None = Field(
        default=None, description="Detail: why it is withheld or failed, or the last try's error."
    )


class FineTuneJobStatus(ApiModel):
    phase: Phase | None = Field(default=None, description="Where the job is in its life.")
    message: str | None = Field(default=None, description="Why the job is in this phase.")
    conditions: list[Condition] = Field(default_factory=list, description="Latest observations.")
    restarts: int = Field(default=0, description="Gang restarts that counted against the budget.")
    preemptions: int = Field(default=0, description="Restarts after preemption (not counted).")
    attempt: int = Field(default=0, description="Current attempt number (pods are named by it).")
    start_time: str | None = Field(default=None, description="When the first attempt started.")
    completion_time: str | None = Field(default=None, description="When the job finished.")
    observed_generation: int | None = Field(default=None, description="Last spec generation seen.")
    progress: Progress | None = Field(default=None, description="Training progress.")
    checkpoint: CheckpointStatus | None = Field(default=None, description="Checkpoints on the volume.")
    attempts: list[AttemptRecord] = Field(
        default_factory=list, description="The last 20 attempts, newest last."
    )
    goodput: Goodput | None = Field(default=None, description="Productive share of the time.")
    metrics: dict[str, float] | None = Field(
        default=None, description="Final metrics of a succeeded job."
    )
    search: SearchStatus | None = Field(default=None, description="Hyperparameter search.")
    output: OutputStatus | None = Field(
        default=None, description="Delivery of the trained model (`spec.output`)."
    )
    started_spec_digest: str | None = Field(
        default=None, description="SHA-256 of the spec the job started with, as its ConfigMap "
        "`<job>-job` holds it (the fields that cannot change after the start); the operator "
        "checks the ConfigMap against it before each attempt."
    )


def to_patch(model: ApiModel, *, keep_none: bool = False) -> dict[str, Any]:
    """A status model as a merge patch: `model_dump(by_alias=True, exclude_none=True)`, so
    every writer of `status` spells a field as the model does and an unknown field fails
    when the model is built instead of being dropped by the API server.

    Only the fields the writer set are sent (`exclude_unset`): a default never overwrites
    what another writer put there. `keep_none`: a field the writer set to None stays, as
    null, which deletes it in a merge patch."""
    return model.model_dump(by_alias=True, exclude_unset=True, exclude_none=not keep_none)
