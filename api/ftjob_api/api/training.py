"""How training runs: LoRA, DeepSpeed, restarts, early stopping and the hyperparameter search."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import ApiModel, ConfigMapKeyRef


class LoraSpec(ApiModel):
    """LoRA adapters through `peft`: only the adapter weights are trained and saved."""

    r: int = Field(default=8, ge=1, le=1024, description="Rank of the LoRA update matrices.")
    alpha: int = Field(default=16, ge=1, description="LoRA scaling factor (lora_alpha).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on LoRA layers.")
    target_modules: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Module names to adapt (e.g. `q_proj`, `v_proj`). Defaults to peft's choice "
        "for the model's architecture.",
    )
    bias: Literal["none", "all", "lora_only"] = Field(
        default="none", description="Which biases to train."
    )
    modules_to_save: list[str] | None = Field(
        default=None,
        description="Extra modules trained in full and saved with the adapter (e.g. a "
        "classification head).",
    )


class DeepSpeedSpec(ApiModel):
    """DeepSpeed ZeRO, either generated from a few switches or taken from a full config."""

    zero_stage: int | None = Field(
        default=None,
        ge=0,
        le=3,
        description="ZeRO stage 0-3. The generated config uses `auto` values so it follows "
        "trainingArguments.",
    )
    offload_optimizer: bool = Field(
        default=False, description="Offload optimizer state to CPU memory (ZeRO 2 and 3)."
    )
    offload_params: bool = Field(
        default=False, description="Offload parameters to CPU memory (ZeRO 3 only)."
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None,
        description="A ConfigMap key holding a complete DeepSpeed JSON config, used as is.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DeepSpeedSpec:
        generated = self.zero_stage is not None
        if generated == (self.config_map_ref is not None):
            raise ValueError("set exactly one of `zeroStage` or `configMapRef`")
        if self.config_map_ref is not None and (self.offload_optimizer or self.offload_params):
            raise ValueError("offload switches apply only to a generated config (`zeroStage`)")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("`offloadParams` needs `zeroStage: 3`")
        if self.offload_optimizer and (self.zero_stage or 0) < 2:
            raise ValueError("`offloadOptimizer` needs `zeroStage` 2 or 3")
        return self


class RestartPolicy(ApiModel):
    max_restarts: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="Gang restarts allowed after retryable failures. Preemptions do not count.",
    )
    backoff_seconds: int = Field(
        default=10,
        ge=0,
        le=3600,
        description="Wait before the first restart; doubles with each further restart.",
    )
    max_backoff_seconds: int = Field(
        default=600, ge=0, le=86400, description="Upper bound of the restart wait."
    )
    pending_timeout_seconds: int = Field(
        default=1800,
        ge=30,
        description="Fail the job when a pod stays Pending (unschedulable, image pull) this "
                    "long, or when the API server refuses to create the pods (a missing "
                    "RuntimeClass, a ResourceQuota) this long.",
    )
    stall_timeout_seconds: int = Field(
        default=1800,
        ge=0,
        description="Restart the whole gang (reason `Stalled`, counted against `maxRestarts`) "
        "when every pod is Running but `status.progress.globalStep` has not advanced for this "
        "long, as when a rank hangs in a collective. 0 turns stall detection off.",
    )
    startup_timeout_seconds: int = Field(
        default=3600,
        ge=0,
        description="Stall allowance before an attempt's first step, counted from when all its "
        "pods run (loading the model and data, resuming a checkpoint). 0: no limit.",
    )
    evaluation_timeout_seconds: int = Field(
        default=7200,
        ge=0,
        description="Stall allowance while the trainer reports an evaluation or a checkpoint "
        "save (`status.progress.activity`), counted from the last step. 0: no limit.",
    )


class EarlyStopping(ApiModel):
    """Hugging Face `EarlyStoppingCallback`, with what it watches in `trainingArguments`."""

    patience: int = Field(
        ge=1,
        le=10000,
        description="Stop after this many evaluations in a row without improvement of "
        "`trainingArguments.metric_for_best_model`.",
    )
    threshold: float = Field(
        default=0.0,
        ge=0,
        description="Least change of the metric, in its own units, that counts as an "
        "improvement.",
    )


class SearchParameter(ApiModel):
    """One searched `TrainingArguments` key: a float or int range, or a list of choices."""

    type: Literal["float", "int", "categorical"] = Field(
        description="`float` (Optuna `suggest_float`), `int` (`suggest_int`) or `categorical` "
        "(`suggest_categorical`)."
    )
    low: float | None = Field(default=None, description="Lower bound (float and int).")
    high: float | None = Field(default=None, description="Upper bound, included (float and int).")
    log: bool = Field(
        default=False, description="Sample on a log scale (e.g. learning rates); needs low > 0."
    )
    step: float | None = Field(
        default=None, gt=0, description="Discretisation step of the range; not with `log`."
    )
    choices: list[Any] | None = Field(
        default=None,
        min_length=1,
        description="The values to choose from (categorical only): numbers, strings or "
        "booleans.",
    )

    @model_validator(mode="after")
    def _shape(self) -> SearchParameter:
        if self.choices is not None:
            odd = [c for c in self.choices if not isinstance(c, (bool, int, float, str))]
            if odd:
                raise ValueError(f"`choices` must be numbers, strings or booleans, got {odd[0]!r}")
        if self.type == "categorical":
            if self.choices is None:
                raise ValueError("a categorical parameter needs `choices`")
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("`low`, `high`, `step` and `log` apply to float and int ranges, "
                                 "not to a categorical parameter")
            return self
        if self.choices is not None:
            raise ValueError(f"`choices` applies only to type categorical, not {self.type}")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"`low` ({self.low:g}) is greater than `high` ({self.high:g})")
        if self.log and self.step is not None:
            raise ValueError("set either `log` or `step`, not both")
        if self.log and self.low <= 0:
            raise ValueError(f"`log` needs `low` > 0, got {self.low:g}")
        if self.type == "int":
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                if value is not None and value != int(value):
                    raise ValueError(f"`{name}` of an int parameter must be a whole number, "
                                     f"got {value:g}")
        return self

    def grid(self) -> list[Any] | None:
        """Every value of a discrete parameter in order, or None for a continuous range."""
        if self.choices is not None:
            return list(self.choices)
        if self.log or (self.type == "float" and self.step is None):
            return None
        step = self.step or 1
        count = int(round((self.high - self.low) / step)) + 1
        values = [self.low + i * step for i in range(count) if self.low + i * step <= self.high + 1e-12]
        return [int(v) for v in values] if self.type == "int" else values


class HyperparameterSearch(ApiModel):
    """Optuna through `Trainer.hyperparameter_search`: `trials` runs, each from the pretrained
    weights with some `trainingArguments` drawn from `space`; the best parameters then train
    the final model."""

    trials: int = Field(ge=1, le=10000, description="Trials to finish (completed or pruned).")
    direction: Literal["minimize", "maximize"] = Field(
        default="minimize", description="Whether a smaller or a larger `metric` is better."
    )
    metric: str = Field(
        default="eval_loss",
        pattern=r"^eval_[A-Za-z0-9_]+$",
        description="Evaluation metric to optimise, as Trainer logs it (e.g. `eval_loss`, "
        "`eval_accuracy`).",
    )
    sampler: Literal["tpe", "random", "grid"] = Field(
        default="tpe", description="Optuna sampler: `tpe`, `random`, or `grid` (every "
        "combination of discrete values; needs `trials` <= the number of combinations)."
    )
    seed: int | None = Field(default=None, ge=0, description="Seed of the sampler.")
    pruner: Literal["none", "median"] = Field(
        default="none",
        description="`median` stops a trial whose intermediate evaluation is worse than the "
        "median of earlier trials at the same step (needs evaluations during training).",
    )
    space: dict[str, SearchParameter] = Field(
        min_length=1,
        description="`TrainingArguments` key -> how to draw it, e.g. `learning_rate: {type: "
        "float, low: 1e-5, high: 1e-3, log: true}`.",
    )

    def grid_size(self) -> int | None:
        """Number of combinations when every parameter is discrete, else None."""
        size = 1
        for param in self.space.values():
            values = param.grid()
            if values is None:
                return None
            size *= len(values)
        return size

    @model_validator(mode="after")
    def _grid(self) -> HyperparameterSearch:
        if self.sampler != "grid":
            return self
        size = self.grid_size()
        if size is None:
            continuous = [k for k, p in self.space.items() if p.grid() is None]
            raise ValueError(f"sampler grid needs discrete values: give {', '.join(continuous)} "
                             "a `step` (and no `log`) or `choices`")
        if self.trials > size:
            raise ValueError(f"sampler grid has {size} combinations, fewer than trials "
                             f"({self.trials})")
        return self
