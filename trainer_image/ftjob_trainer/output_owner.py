"""Which job owns the output folder: its uid in a file written before anything else.

A claim with `reclaimPolicy: Retain` (and a sub-folder of `storage.existingClaim`) outlives
its job and is found by the job's name: a job deleted and created again under the same name
mounts the old one's folder, checkpoints and search study included, while the old pods may
still be saving into it. World rank 0 writes the owner file (`contract.OUTPUT_OWNER_FILE_NAME`)
before anything reaches the folder; every rank reads it first. Another uid there means another
job's output: nothing is resumed or written (OutputOwnedByOtherJob, permanent) unless the spec
says `storage.adoptPreviousOutput: true`, which takes the folder over and records the previous
owner (reported in `status.checkpoint.adoptedFromJobUid`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ftjob_api import contract

from .exits import OutputOwnedByOtherJob, write_json_atomic
from .job import JobContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    uid: str
    name: str | None = None
    adopted_from_job_uid: str | None = None  # the owner before this one, if it was adopted

    def to_json(self) -> dict[str, str]:
        doc = {"uid": self.uid, "name": self.name, "adoptedFromJobUid": self.adopted_from_job_uid}
        return {k: v for k, v in doc.items() if v}


UNREADABLE = Owner(uid="(unreadable owner file)")


def owner_file(output_dir: Path) -> Path:
    return output_dir / contract.OUTPUT_OWNER_FILE_NAME


def read_owner(output_dir: Path) -> Owner | None:
    """The folder's owner; None when no job has claimed it; UNREADABLE for a file that is not
    one ftjob wrote (it writes it atomically)."""
    path = owner_file(output_dir)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):
        return UNREADABLE
    if not isinstance(doc, dict) or not isinstance(doc.get("uid"), str) or not doc["uid"]:
        return UNREADABLE
    name, adopted = doc.get("name"), doc.get("adoptedFromJobUid")
    return Owner(doc["uid"], name if isinstance(name, str) else None,
                 adopted if isinstance(adopted, str) else None)


def claim(output_dir: Path, uid: str, name: str, adopt: bool, is_zero: bool) -> Owner:
    """Check (every rank) and record (world rank 0) that job `uid` owns `output_dir`.

    Absent: rank 0 writes it (an output folder of an ftjob release without owner files is
    taken over as it is). The same uid: resumes as before. Another uid: OutputOwnedByOtherJob,
    or with `adopt` the folder becomes this job's, remembering the previous owner."""
    current = read_owner(output_dir)
    if current is not None and current.uid == uid:
        return current
    if current is None:
        mine = Owner(uid, name)
    elif adopt:
        mine = Owner(uid, name, adopted_from_job_uid=current.uid)
    else:
        raise OutputOwnedByOtherJob(
            f"{output_dir} holds the output of another job ({_describe(current)}); this job "
            f"({name}, uid {uid}) neither resumes from it nor writes into it. Delete the "
            "folder's content, use another claim, or set spec.storage.adoptPreviousOutput: "
            "true to resume from it knowingly")
    if is_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(owner_file(output_dir), mine.to_json())
        if mine.adopted_from_job_uid:
            log.warning("adopted %s from job uid %s (spec.storage.adoptPreviousOutput)",
                        output_dir, mine.adopted_from_job_uid)
    return mine


def _describe(owner: Owner) -> str:
    return f"{owner.name}, uid {owner.uid}" if owner.name else f"uid {owner.uid}"


def claim_output(ctx: JobContext, is_zero: bool) -> JobContext:
    """The context once its output folder is known to be this job's (see `claim`); a job with
    no uid (a trainer run by hand without one) claims nothing."""
    if not ctx.uid:
        return ctx
    owner = claim(ctx.output_dir, ctx.uid, ctx.name, ctx.spec.storage.adopt_previous_output,
                  is_zero)
    return dataclasses.replace(ctx, adopted_from_job_uid=owner.adopted_from_job_uid)
