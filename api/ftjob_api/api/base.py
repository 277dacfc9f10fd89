"""The base every API model shares, the resource's identity, and the object references.

Every model is camelCase on the wire and rejects unknown fields (`ApiModel`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

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


class SecretKeyRef(ApiModel):
    name: str = Field(min_length=1, description="Name of a Secret in the job's namespace.")
    key: str = Field(min_length=1, description="Key inside the Secret.")


class ConfigMapKeyRef(ApiModel):
    name: str = Field(min_length=1, description="Name of a ConfigMap in the job's namespace.")
    key: str = Field(min_length=1, description="Key inside the ConfigMap.")


class SecretRef(ApiModel):
    name: str = Field(min_length=1, description="Name of a Secret in the job's namespace.")
