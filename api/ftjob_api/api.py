"""FineTuneJob v1alpha1: the pydantic models users write and the cluster stores.

These models are the one source of truth: the CRD schema (`crd.py`), `ftjob validate`,
the operator and the trainer all read them. Field descriptions become `kubectl explain`
text, so they are written for users.

`spec.trainingArguments` is a plain mapping here; its keys and value types come from
Hugging Face `TrainingArguments` and are checked by `training_args.py`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from . import dataset_formats

GROUP = "finetune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"
SINGULAR = "finetunejob"
SHORT_NAMES = ["ftj"]
CATEGORIES = ["all", "ml"]


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )


class Task(str, Enum):
    SEQUENCE_CLASSIFICATION = "sequence-classification"
    CAUSAL_LM = "causal-lm"
    SEQ2SEQ = "seq2seq"


# --------------------------------------------------------------------------- model / data


class SecretKeyRef(ApiModel):
    name: str = Field(min_length=1, description="Name of a Secret in the job's namespace.")
    key: str = Field(min_length=1, description="Key inside the Secret.")


class ConfigMapKeyRef(ApiModel):
    name: str = Field(min_length=1, description="Name of a ConfigMap in the job's namespace.")
    key: str = Field(min_length=1, description="Key inside the ConfigMap.")


class ModelSource(ApiModel):
    """Where the pretrained weights come from: exactly one of `name` or `path`."""

    name: str | None = Field(
        default=None,
        min_length=1,
        description="Hugging Face Hub model id, e.g. `bert-base-uncased` or `klue/roberta-base`.",
    )
    revision: str | None = Field(
        default=None,
        min_length=1,
        description="Hub revision (branch, tag or commit) to pin; only with `name`.",
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        description="Directory holding a saved model (config.json, weights, tokenizer) inside "
        "the trainer image or on a volume from `spec.volumes`; `pkg://PACKAGE/SUBDIR` names a "
        "folder inside an installed Python package.",
    )
    hf_token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Hugging Face token for gated or private models and "
        "datasets. Passed to the pods as the HF_TOKEN environment variable by reference; it is "
        "never copied into the job, its ConfigMap, status or events.",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelSource:
        if (self.name is None) == (self.path is None):
            raise ValueError("set exactly one of `name` (a Hub model id) or `path` (a directory)")
        if self.revision is not None and self.name is None:
            raise ValueError("`revision` applies only to a Hub model given by `name`")
        return self


class DataFiles(ApiModel):
    """Local data files (json, jsonl, csv or parquet), one per split."""

    train: str = Field(min_length=1, description="Training data file.")
    validation: str | None = Field(
        default=None, min_length=1, description="Evaluation data file used during training."
    )
    test: str | None = Field(
        default=None, min_length=1, description="Test data file, evaluated once after training."
    )


DATA_FILE_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


class DatasetSource(ApiModel):
    """The data to train on: exactly one of a Hub dataset (`name`) or local `files`."""

    name: str | None = Field(
        default=None, min_length=1, description="Hugging Face Hub dataset id, e.g. `klue`."
    )
    config: str | None = Field(
        default=None, min_length=1, description="Dataset configuration name, e.g. `ynat`."
    )
    revision: str | None = Field(
        default=None, min_length=1, description="Hub revision of the dataset; only with `name`."
    )
    files: DataFiles | None = Field(
        default=None, description="Local files instead of a Hub dataset."
    )
    text_column: str = Field(
        default="text", min_length=1, description="Column holding the input text."
    )
    text_pair_column: str | None = Field(
        default=None,
        min_length=1,
        description="Second text column for sentence-pair tasks (e.g. MRPC's `sentence2`).",
    )
    label_column: str = Field(
        default="label",
        min_length=1,
        description="Column holding the class label (sequence-classification only).",
    )
    target_column: str | None = Field(
        default=None,
        min_length=1,
        description="Column holding the target text (seq2seq only; required there).",
    )
    train_split: str = Field(
        default="train", min_length=1, description="Split used for training."
    )
    eval_split: str | None = Field(
        default=None,
        min_length=1,
        description="Split used for evaluation. Defaults to `validation` when `files.validation` "
        "is given.",
    )
    test_split: str | None = Field(
        default=None, min_length=1, description="Split evaluated once after training."
    )
    max_train_samples: int | None = Field(
        default=None, ge=1, description="Use at most this many training examples (after shuffling "
        "with `shuffleSeed`)."
    )
    max_eval_samples: int | None = Field(
        default=None, ge=1, description="Use at most this many evaluation examples."
    )
    eval_fraction: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="Carve this fraction of the training split out as the evaluation split "
        "(like `train_test_split(test_size=..., seed=shuffleSeed)`). Not with `evalSplit`.",
    )
    shuffle_seed: int = Field(
        default=42, ge=0, description="Seed for shuffling, sampling and the eval carve-out."
    )
    max_length: int = Field(
        default=512, ge=8, le=131072, description="Tokens per example; longer inputs are truncated."
    )
    max_target_length: int | None = Field(
        default=None, ge=1, le=131072, description="Tokens per target (seq2seq); defaults to "
        "`maxLength`."
    )
    format: dataset_formats.FormatName = Field(
        default=dataset_formats.DEFAULT, description=dataset_formats.description(),
    )
    prompt_column: str | None = Field(
        default=None, min_length=1, description="Column holding the prompt (format "
        "`prompt-completion`); defaults to `prompt`."
    )
    completion_column: str | None = Field(
        default=None, min_length=1, description="Column holding the completion (format "
        "`prompt-completion`); defaults to `completion`."
    )
    messages_column: str | None = Field(
        default=None, min_length=1, description="Column holding the list of `{role, content}` "
        "turns (format `conversational`); defaults to `messages`."
    )
    completion_only_loss: bool | None = Field(
        default=None,
        description="Train on the completion only (format `prompt-completion`) or on the "
        "assistant turns only (format `conversational`): the other tokens get the label -100. "
        "On by default for those two formats; `false` trains on every token.",
    )
    packing: bool = Field(
        default=False,
        description="causal-lm: concatenate the tokenized examples and cut them into "
        "sequences of exactly `maxLength` tokens (the last may be shorter), so no compute "
        "goes to padding. Attention is not reset between examples packed together.",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DatasetSource:
        if (self.name is None) == (self.files is None):
            raise ValueError("set exactly one of `name` (a Hub dataset id) or `files`")
        if self.config is not None and self.name is None:
            raise ValueError("`config` applies only to a Hub dataset given by `name`")
        if self.eval_fraction is not None and self.eval_split is not None:
            raise ValueError("set either `evalSplit` or `evalFraction`, not both")
        return self

    # The columns and the completion-only default come from the format's entry.
    @property
    def resolved_prompt_column(self) -> str:
        return dataset_formats.PROMPT.resolve(self)

    @property
    def resolved_completion_column(self) -> str:
        return dataset_formats.COMPLETION.resolve(self)

    @property
    def resolved_messages_column(self) -> str:
        return dataset_formats.MESSAGES.resolve(self)

    @property
    def resolved_completion_only_loss(self) -> bool:
        """Masked prompt / non-assistant tokens: the default for the formats that mask."""
        return dataset_formats.completion_only_loss(self)

    @property
    def has_eval_data(self) -> bool:
        if self.eval_split is not None or self.eval_fraction is not None:
            return True
        return self.files is not None and self.files.validation is not None

    @property
    def resolved_eval_split(self) -> str | None:
        """The split name the trainer evaluates on (`eval_fraction` carves its own)."""
        if self.eval_split is not None:
            return self.eval_split
        if self.files is not None and self.files.validation is not None:
            return "validation"
        return None

    @property
    def resolved_test_split(self) -> str | None:
        if self.test_split is not None:
            return self.test_split
        if self.files is not None and self.files.test is not None:
            return "test"
        return None


# --------------------------------------------------------------------------- PEFT / DeepSpeed


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


# --------------------------------------------------------------------------- pods


class Resources(ApiModel):
    nodes: int = Field(default=1, ge=1, le=1024, description="Number of pods (one per node).")
    gpus_per_node: int = Field(
        default=0,
        ge=0,
        le=16,
        description="GPUs per pod (`nvidia.com/gpu`); one training process each, NCCL between "
        "them. 0 runs on CPU with the gloo backend.",
    )
    procs_per_node: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Training processes per pod. Defaults to `gpusPerNode`, or 1 on CPU.",
    )
    cpu: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?m?$",
        description="CPU request and limit per pod, a Kubernetes quantity such as `8` or `500m`.",
    )
    memory: str | None = Field(
        default=None,
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$",
        description="Memory request and limit per pod, a Kubernetes quantity such as `64Gi`.",
    )
    shm_size: str = Field(
        default="8Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$",
        description="Size of the in-memory /dev/shm volume (data loaders and NCCL need more than "
        "the container default).",
    )

    @property
    def processes_per_node(self) -> int:
        if self.procs_per_node is not None:
            return self.procs_per_node
        return self.gpus_per_node or 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node


class EnvVar(ApiModel):
    name: str = Field(
        min_length=1,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="Environment variable name.",
    )
    value: str | None = Field(default=None, description="Literal value.")
    secret_key_ref: SecretKeyRef | None = Field(
        default=None, description="Take the value from a Secret key."
    )
    config_map_key_ref: ConfigMapKeyRef | None = Field(
        default=None, description="Take the value from a ConfigMap key."
    )

    @model_validator(mode="after")
    def _one_value(self) -> EnvVar:
        given = [v for v in (self.value, self.secret_key_ref, self.config_map_key_ref) if v is not None]
        if len(given) > 1:
            raise ValueError("set at most one of `value`, `secretKeyRef` or `configMapKeyRef`")
        return self


class Toleration(ApiModel):
    key: str | None = Field(default=None, description="Taint key the toleration applies to.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="`Exists` or `Equal` (default)."
    )
    value: str | None = Field(default=None, description="Taint value to match.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class Scheduling(ApiModel):
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels every training pod requires."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the training pods tolerate (e.g. GPU nodes)."
    )
    affinity: dict[str, Any] | None = Field(
        default=None, description="A Kubernetes `affinity` object, applied to every pod as is."
    )
    priority_class_name: str | None = Field(
        default=None, min_length=1, description="PriorityClass of the training pods."
    )
    queue_name: str | None = Field(
        default=None,
        min_length=1,
        description="Kueue LocalQueue; sets the `kueue.x-k8s.io/queue-name` label.",
    )


class ConfigMapEnvSource(ApiModel):
    name: str = Field(min_length=1, description="Name of a ConfigMap in the job's namespace.")
    optional: bool = Field(
        default=False, description="Start the pods even when the ConfigMap does not exist."
    )


class SecretEnvSource(ApiModel):
    name: str = Field(min_length=1, description="Name of a Secret in the job's namespace.")
    optional: bool = Field(
        default=False, description="Start the pods even when the Secret does not exist."
    )


class EnvFromSource(ApiModel):
    """Every key of one ConfigMap or Secret becomes an environment variable of the training
    container. Variables ftjob sets itself, and those in `spec.env`, take precedence."""

    config_map_ref: ConfigMapEnvSource | None = Field(
        default=None, description="Take every key of this ConfigMap."
    )
    secret_ref: SecretEnvSource | None = Field(
        default=None, description="Take every key of this Secret."
    )
    prefix: str | None = Field(
        default=None,
        min_length=1,
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        description="Put this in front of every key, e.g. `WANDB_`.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvFromSource:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError("set exactly one of `configMapRef` or `secretRef`")
        return self


class PodTemplate(ApiModel):
    """What may be added to every training pod without a change to ftjob. ftjob's own
    labels (`app.kubernetes.io/name`, `app.kubernetes.io/managed-by`, anything under
    `finetune.dev/`, Kueue's queue and pod-group keys) and environment variables stay
    reserved."""

    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels added to every training pod (e.g. for cost allocation or a "
        "NetworkPolicy).",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations added to every training pod (e.g. for a service mesh or a "
        "log collector).",
    )
    runtime_class_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="RuntimeClass of the training pods, e.g. `nvidia` where the GPU runtime "
        "is not the node's default.",
    )
    env_from: list[EnvFromSource] = Field(
        default_factory=list,
        description="ConfigMaps and Secrets whose keys become environment variables of the "
        "training container (e.g. experiment-tracker credentials).",
    )


class Monitoring(ApiModel):
    """How the trainer reports while it trains; unset fields take the operator's defaults."""

    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port on which rank 0 serves Prometheus metrics at /metrics (the "
        "container port named `metrics` on the rank-0 pod). 0 turns them off; unset uses the "
        "operator's default (off unless the operator sets one).",
    )
    progress_interval_seconds: int | None = Field(
        default=None,
        ge=1,
        le=60,
        description="Least seconds between two writes of `status.progress` (saves, "
        "evaluations and the end are always written). Unset uses the operator's default (5).",
    )


class VolumeMount(ApiModel):
    """A PersistentVolumeClaim mounted into every training pod: models, datasets or caches that
    live in the cluster (air-gapped clusters, pre-downloaded weights)."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Volume name, unique within the job (a DNS label).",
    )
    claim_name: str = Field(min_length=1, description="PersistentVolumeClaim in the job's namespace.")
    mount_path: str = Field(
        pattern=r"^/",
        description="Absolute path in the container, e.g. /models; point `model.path` or "
        "`dataset.files` there.",
    )
    sub_path: str | None = Field(default=None, min_length=1, description="Folder of the claim to mount.")
    read_only: bool = Field(default=True, description="Mount read-only (the default).")


class Storage(ApiModel):
    """The volume holding `output_dir`: checkpoints, the final model and metrics."""

    existing_claim: str | None = Field(
        default=None,
        min_length=1,
        description="Use this PersistentVolumeClaim instead of creating one.",
    )
    size: str = Field(
        default="20Gi",
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$",
        description="Size of the claim the operator creates.",
    )
    storage_class_name: str | None = Field(
        default=None, description="StorageClass of the created claim; empty uses the default."
    )
    access_modes: list[Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"]] | None = Field(
        default=None,
        min_length=1,
        description="Access modes of the created claim. Default: ReadWriteOnce for one node, "
        "ReadWriteMany for more (every pod mounts it).",
    )
    reclaim_policy: Literal["Retain", "Delete"] = Field(
        default="Retain",
        description="`Retain` keeps a created claim (and your checkpoints) after the job is "
        "deleted; `Delete` removes it with the job.",
    )

    @model_validator(mode="after")
    def _existing_claim_excludes_new_claim_fields(self) -> Storage:
        if self.existing_claim is not None and (
            self.storage_class_name is not None or self.access_modes is not None
        ):
            raise ValueError(
                "`storageClassName` and `accessModes` describe a new claim; remove them when "
                "using `existingClaim`"
            )
        return self

    def effective_access_modes(self, nodes: int) -> list[str]:
        if self.access_modes is not None:
            return list(self.access_modes)
        return ["ReadWriteMany"] if nodes > 1 else ["ReadWriteOnce"]


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


# --------------------------------------------------------------------------- spec


class FineTuneJobSpec(ApiModel):
    task: Task = Field(
        description="What to fine-tune for: `sequence-classification`, `causal-lm` (SFT on a "
        "text column) or `seq2seq`."
    )
    model: ModelSource = Field(description="The pretrained model to start from.")
    dataset: DatasetSource = Field(description="The data to train and evaluate on.")
    training_arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="Hugging Face `TrainingArguments`, keys spelled exactly as in transformers "
        "(e.g. `per_device_train_batch_size`). `output_dir`, `resume_from_checkpoint`, "
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


# --------------------------------------------------------------------------- status


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
