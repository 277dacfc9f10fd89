"""The Secrets, ConfigMaps and PersistentVolumeClaims a job's pods read, with the field path
naming each: what the admission webhook asks the API server whether the job's author may
read (docs/rbac.md, "What a FineTuneJob author can do"). Pure.

Every field of the spec that names an object in the job's namespace is listed here; a new
reference field adds a line to `references`.
"""

from __future__ import annotations

from typing import NamedTuple

from . import api

SECRETS, CONFIG_MAPS, CLAIMS = "secrets", "configmaps", "persistentvolumeclaims"


class Reference(NamedTuple):
    path: str  # the field holding the name, e.g. spec.model.hfTokenSecretRef.name
    resource: str  # SECRETS, CONFIG_MAPS or CLAIMS (core API group)
    name: str


def references(spec: api.FineTuneJobSpec) -> list[Reference]:
    """Every object in the job's namespace its pods read, in the order of the spec's fields
    (one entry per field, so one object named twice is listed twice)."""
    found: list[Reference] = []
    token = spec.model.hf_token_secret_ref
    if token is not None:
        found.append(Reference("spec.model.hfTokenSecretRef.name", SECRETS, token.name))
    for i, var in enumerate(spec.env):
        if var.secret_key_ref is not None:
            found.append(Reference(f"spec.env[{i}].secretKeyRef.name", SECRETS,
                                   var.secret_key_ref.name))
        if var.config_map_key_ref is not None:
            found.append(Reference(f"spec.env[{i}].configMapKeyRef.name", CONFIG_MAPS,
                                   var.config_map_key_ref.name))
    for i, source in enumerate(spec.pod_template.env_from):
        if source.secret_ref is not None:
            found.append(Reference(f"spec.podTemplate.envFrom[{i}].secretRef.name", SECRETS,
                                   source.secret_ref.name))
        if source.config_map_ref is not None:
            found.append(Reference(f"spec.podTemplate.envFrom[{i}].configMapRef.name",
                                   CONFIG_MAPS, source.config_map_ref.name))
    if spec.deepspeed is not None and spec.deepspeed.config_map_ref is not None:
        found.append(Reference("spec.deepspeed.configMapRef.name", CONFIG_MAPS,
                               spec.deepspeed.config_map_ref.name))
    if spec.storage.existing_claim is not None:
        found.append(Reference("spec.storage.existingClaim", CLAIMS, spec.storage.existing_claim))
    for i, volume in enumerate(spec.volumes):
        found.append(Reference(f"spec.volumes[{i}].claimName", CLAIMS, volume.claim_name))
    oci = spec.output.oci if spec.output is not None else None
    if oci is not None and oci.push_secret_ref is not None:
        found.append(Reference("spec.output.oci.pushSecretRef.name", SECRETS,
                               oci.push_secret_ref.name))
    if oci is not None and oci.ca_config_map_ref is not None:
        found.append(Reference("spec.output.oci.caConfigMapRef.name", CONFIG_MAPS,
                               oci.ca_config_map_ref.name))
    return found
