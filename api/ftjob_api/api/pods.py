"""The training pods: resources, environment, scheduling, pod template, monitoring, storage."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import ApiModel, ConfigMapKeyRef, SecretKeyRef


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
        default=None, description="A Kubernetes `affinity` object, applied to every pod as is. "
        "Without it, the ranks of a multi-node job prefer different nodes."
    )
    priority_class_name: str | None = Field(
        default=None, min_length=1, description="PriorityClass of the training pods."
    )
    queue_name: str | None = Field(
        default=None,
        min_length=1,
        description="Kueue LocalQueue the job waits in: the operator keeps one Kueue Workload "
        "for the whole gang and starts the pods once Kueue admits it (docs/install.md, Kueue).",
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
    adopt_previous_output: bool = Field(
        default=False,
        description="Resume from an output folder another job left (a `Retain` claim or an "
        "`existingClaim` sub-folder of a deleted job with the same name). The output folder "
        "records the uid of the job that owns it; by default a job that finds another job's "
        "uid there fails with `OutputOwnedByOtherJob` and writes nothing. `true` takes the "
        "folder over and resumes from its newest checkpoint (and search study), with an Event "
        "and `status.checkpoint.adoptedFromJobUid`.",
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
