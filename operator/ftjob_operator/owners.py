"""Pure: whether an object found under the name of one the job creates is the job's own.

A create answered 409 ("already exists") is success only when what exists is owned, as the
controller, by this job's uid: an earlier try or another replica made it. Anything else (an
object of another job, an older job of the same name still being garbage-collected, a
ServiceAccount someone made by hand with its own RoleBindings and cloud identity) is not
adopted: `k8s.Kube.create` raises, and the job waits (`policies/pending.py`) and fails after
`pendingTimeoutSeconds`.

A manifest without a controller reference (the output claim with `reclaimPolicy: Retain`,
which outlives its job by design) is taken as found: the trainer checks that the output
folder holds this job's uid (`ftjob_trainer.output_owner`).
"""

from __future__ import annotations

from typing import Any


def controller(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with `controller: true`, or None."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    refs = meta.get("ownerReferences") if isinstance(meta, dict) else None
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def describe_owner(ref: dict[str, Any] | None) -> str:
    if ref is None:
        return "no owner"
    return f"{ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})"


def foreign_owner(manifest: dict[str, Any], existing: dict[str, Any]) -> str | None:
    """None when `existing` may stand for `manifest` (same controller uid, or the manifest
    asks for no controller); else what the job's condition says about it."""
    wanted = controller(manifest)
    if wanted is None:
        return None
    found = controller(existing)
    if found is not None and found.get("uid") == wanted.get("uid"):
        return None
    meta = manifest.get("metadata") or {}
    return (f"{manifest.get('kind')} {meta.get('name')} already exists and is owned by "
            f"{describe_owner(found)}, not by this job")
