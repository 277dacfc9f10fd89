"""FineTuneJob v1alpha1: the pydantic models users write and the cluster stores.

These models are the one source of truth: the CRD schema (`crd.py`), `ftjob validate`,
the operator and the trainer all read them. Field descriptions become `kubectl explain`
text, so they are written for users.

`spec.trainingArguments` is a plain mapping here; its keys and value types come from
Hugging Face `TrainingArguments` and are checked by `training_args.py`.

This package is the shared API package's public API, so this module is a facade on purpose:
callers write `from ftjob_api import api` and `api.FineTuneJobSpec`, and never import the
modules below, which only sort the models by area:

- `base`: `ApiModel`, the group/version/kind constants, the Secret and ConfigMap key references;
- `sources`: `spec.model` and `spec.dataset`;
- `training`: LoRA, DeepSpeed, restart policy, early stopping, hyperparameter search;
- `pods`: resources, environment, scheduling, pod template, monitoring, storage;
- `output`: `spec.output` (merge, quality gate, OCI push) and its rules that need the whole
  spec (`check_output`);
- `status`: everything under `status`, and `to_patch`, which every status writer uses;
- `spec`: `FineTuneJobSpec`, `FineTuneJob`, `ObjectMeta` and `parse_spec`.
"""

from __future__ import annotations

from .base import (
    API_VERSION,
    CATEGORIES,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ApiModel,
    ConfigMapKeyRef,
    SecretKeyRef,
    SecretRef,
)
from .output import CABundleRef, OciTarget, OutputSpec, QualityGate, gate_metric_key
from .output import check_spec as check_output
from .pods import (
    ConfigMapEnvSource,
    EnvFromSource,
    EnvVar,
    Monitoring,
    PodTemplate,
    Resources,
    Scheduling,
    SecretEnvSource,
    Storage,
    Toleration,
    VolumeMount,
)
from .sources import DATA_FILE_SUFFIXES, DataFiles, DatasetSource, ModelSource
from .spec import FineTuneJob, FineTuneJobSpec, ObjectMeta, Task, parse_spec
from .status import (
    FINISHED_PHASES,
    OUTPUT_FINISHED_PHASES,
    AttemptRecord,
    CheckpointRef,
    CheckpointStatus,
    Condition,
    FineTuneJobStatus,
    GateResult,
    Goodput,
    OutputPhase,
    OutputStatus,
    Phase,
    Progress,
    SearchStatus,
    to_patch,
)
from .training import (
    DeepSpeedSpec,
    EarlyStopping,
    HyperparameterSearch,
    LoraSpec,
    RestartPolicy,
    SearchParameter,
)

__all__ = [
    "API_VERSION",
    "CATEGORIES",
    "DATA_FILE_SUFFIXES",
    "FINISHED_PHASES",
    "GROUP",
    "KIND",
    "OUTPUT_FINISHED_PHASES",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "ApiModel",
    "AttemptRecord",
    "CABundleRef",
    "CheckpointRef",
    "CheckpointStatus",
    "Condition",
    "ConfigMapEnvSource",
    "ConfigMapKeyRef",
    "DataFiles",
    "DatasetSource",
    "DeepSpeedSpec",
    "EarlyStopping",
    "EnvFromSource",
    "EnvVar",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "GateResult",
    "Goodput",
    "HyperparameterSearch",
    "LoraSpec",
    "ModelSource",
    "Monitoring",
    "ObjectMeta",
    "OciTarget",
    "OutputPhase",
    "OutputSpec",
    "OutputStatus",
    "Phase",
    "PodTemplate",
    "Progress",
    "QualityGate",
    "Resources",
    "RestartPolicy",
    "Scheduling",
    "SearchParameter",
    "SearchStatus",
    "SecretEnvSource",
    "SecretKeyRef",
    "SecretRef",
    "Storage",
    "Task",
    "Toleration",
    "VolumeMount",
    "check_output",
    "gate_metric_key",
    "parse_spec",
    "to_patch",
]
