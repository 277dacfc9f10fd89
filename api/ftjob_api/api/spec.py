"""The FineTuneJob resource: `spec` as a whole, the metadata the API checks, and parsing."""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic.alias_generators import to_camel

from .base import ApiModel
from .output import OutputSpec
from .pods import EnvVar, Monitoring, PodTemplate, Resources, Scheduling, Storage, VolumeMount
from .sources import DatasetSource, ModelSource
from .status import FineTuneJobStatus
from .training import DeepSpeedSpec, EarlyStopping, HyperparameterSearch, LoraSpec, RestartPolicy


class Task(str, Enum):
    SEQUENCE_CLASSIFICATION = "sequence-classification"
    CAUSAL_LM = "causal-lm"
    SEQ2SEQ = "seq2seq"
    PREFERENCE = "preference"


class FineTuneJobSpec(ApiModel):
    task: Task = Field(
        description="What to fine-tune for: `sequence-classification`, `causal-lm` (SFT on a "
        "text column), `seq2seq` or `preference` (DPO on prompt/chosen/rejected pairs with TRL)."
    )
    model: ModelSource = Field(description="The pretrained model to start from.")
    dataset: DatasetSource = Field(description="The data to train and evaluate on.")
    training_arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="Hugging Face `TrainingArguments`, keys spelled exactly as in transformers "
        "(e.g. `per_device_train_batch_size`); for task `preference`, TRL's `DPOConfig` "
        "(adds `beta`, `loss_type`, ...). `output_dir`, `resume_from_checkpoint`, "
        "`deepspeed` and distributed settings are managed by ftjob.",
    )
    peft: LoraSpec | None = Field(default=None, description="Train LoRA adapters with peft.")
    deepspeed: DeepSpeedSpec | None = Field(default=None, description="Use DeepSpeed ZeRO.")
    resources: Resources = Field(
        default_factory=Resources, description="Nodes, GPUs and pod resources."
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        description="Trainer image; defaults to the one the operator is configured with.",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Extra environment variables for the training container. torchrun, NCCL "
        "and ftjob's own variables are reserved.",
    )
    volumes: list[VolumeMount] = Field(
        default_factory=list,
        description="Extra PersistentVolumeClaims mounted into every training pod (models, "
        "datasets). The output volume is separate: see `storage`.",
    )
    scheduling: Scheduling = Field(
        default_factory=Scheduling, description="Where the training pods may run."
    )
    pod_template: PodTemplate = Field(
        default_factory=PodTemplate,
        description="Labels, annotations, RuntimeClass and environment sources added to every "
        "training pod.",
    )
    monitoring: Monitoring = Field(
        default_factory=Monitoring,
        description="The trainer's Prometheus endpoint and how often it writes progress.",
    )
    storage: Storage = Field(
        default_factory=Storage, description="The volume for checkpoints and the final model."
    )
    restart_policy: RestartPolicy = Field(
        default_factory=RestartPolicy, description="How failures are retried."
    )
    early_stopping: EarlyStopping | None = Field(
        default=None,
        description="Stop training once the evaluation metric stops improving; the job "
        "then succeeds with the best model. Needs `load_best_model_at_end: true`, "
        "`metric_for_best_model` and matching `eval_strategy` and `save_strategy` in "
        "`trainingArguments`.",
    )
    hyperparameter_search: HyperparameterSearch | None = Field(
        default=None,
        description="Search `trainingArguments` with Optuna before training the final model "
        "with the best values found. The study lives on the output volume, so a restarted job "
        "keeps its finished trials. Needs evaluation data.",
    )
    output: OutputSpec | None = Field(
        default=None,
        description="What is done with the model once training has succeeded: check a quality "
        "gate, merge the LoRA adapter, push it to an OCI registry (a KServe modelcar). "
        "Progress and result in `status.output`.",
    )
    clean_pod_policy: Literal["None", "Running", "All"] = Field(
        default="Running",
        description="Pods to delete once the job has succeeded or failed: `Running` (default) "
        "deletes ranks still running, `All` deletes every pod, `None` keeps them all (their "
        "logs stay readable either way until the pods are deleted).",
    )
    suspend: bool = Field(
        default=False,
        description="`true` stops the pods (they checkpoint first); `false` resumes from the "
        "newest complete checkpoint.",
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job when it runs longer than this."
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        description="Delete the job this long after it succeeds or fails (the claim follows "
        "`storage.reclaimPolicy`).",
    )


class ObjectMeta(ApiModel):
    """The part of metadata the API checks; everything else passes through untouched."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = Field(
        min_length=1,
        max_length=40,
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
        description="Job name: lowercase letters, digits and '-', starting with a letter, at most "
        "40 characters (pod and Service names are built from it).",
    )
    namespace: str | None = Field(default=None, description="Namespace of the job.")


class FineTuneJob(ApiModel):
    api_version: Literal["finetune.dev/v1alpha1"] = Field(
        alias="apiVersion", description="finetune.dev/v1alpha1"
    )
    kind: Literal["FineTuneJob"] = Field(description="FineTuneJob")
    metadata: ObjectMeta
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None


def parse_spec(spec: dict[str, Any]) -> FineTuneJobSpec:
    """Parse a raw `spec` mapping (from the cluster or a file) into the typed model."""
    return FineTuneJobSpec.model_validate(spec)
