"""A job deleted and created again under the same name finds the old job's output folder (a
`Retain` claim): the real trainer refuses it, or adopts it when the spec says so; and a pod
that mounts another job's job file stops before reading its spec."""

from __future__ import annotations

import json

from ftjob_api import contract
from ftjob_api.contract import ExitCode
from ftjob_trainer import checkpoints

from tests.integration.trainer.helpers import classification_spec, run_to_end, start


def owner(output_dir) -> dict:
    return json.loads((output_dir / contract.OUTPUT_OWNER_FILE_NAME).read_text())


def listing(output_dir) -> dict[str, float]:
    return {str(p.relative_to(output_dir)): p.stat().st_mtime_ns
            for p in output_dir.rglob("*")}


def test_same_name_new_job_refuses_the_old_output_then_adopts_it(tiny, tmp_path):
    old = run_to_end(tmp_path, classification_spec(tiny, max_steps=20, save_steps=10),
                     nproc=1, uid="uid-old")
    assert old.proc.returncode == 0, old.log()
    assert owner(old.output_dir) == {"uid": "uid-old", "name": "tiny"}
    assert checkpoints.latest_complete(old.output_dir).step == 20
    before = listing(old.output_dir)

    spec = classification_spec(tiny, max_steps=30, save_steps=10)
    refused = run_to_end(tmp_path, spec, nproc=1, uid="uid-new")
    assert refused.proc.returncode == ExitCode.OUTPUT_OWNED_BY_OTHER_JOB, refused.log()
    summary = refused.summary()
    assert summary["reason"] == "OutputOwnedByOtherJob"
    assert "uid uid-old" in summary["message"]
    assert listing(old.output_dir) == before, "the refused job wrote into the old output"

    adopting = {**spec, "storage": {"adoptPreviousOutput": True}}
    adopted = run_to_end(tmp_path, adopting, nproc=1, uid="uid-new")
    assert adopted.proc.returncode == 0, adopted.log()
    assert adopted.summary()["resumedFromStep"] == 20
    assert adopted.summary()["globalStep"] == 30
    assert owner(adopted.output_dir) == {"uid": "uid-new", "name": "tiny",
                                         "adoptedFromJobUid": "uid-old"}


def test_a_pod_refuses_another_jobs_job_file(tiny, tmp_path):
    run = start(tmp_path, classification_spec(tiny), nproc=1, uid="uid-old",
                env={contract.ENV_JOB_UID: "uid-new"})
    assert run.wait() == ExitCode.JOB_FILE_REPLACED, run.log()
    assert run.summary()["reason"] == "JobFileReplaced"
    assert not (run.output_dir / contract.OUTPUT_OWNER_FILE_NAME).exists()
