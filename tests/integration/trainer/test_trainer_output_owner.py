"""A job deleted and created again under the same name finds the old job's output folder (a
`Retain` claim): the real trainer refuses it, or adopts it when the spec says so; and a pod
that mounts another job's job file stops before reading its spec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

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


def test_run_local_of_another_manifest_into_the_same_folder(tiny, tmp_path):
    """`ftjob run --local` has an identity too (the manifest file and the job's name): another
    manifest into the same output folder is refused before anything is written, unless it
    adopts the folder, which resumes from the first run's checkpoint."""
    output = tmp_path / "out"

    def run(manifest_name: str, **storage) -> subprocess.CompletedProcess:
        spec = classification_spec(tiny, max_steps=20 if storage else 10, save_steps=10)
        if storage:
            spec["storage"] = storage
        manifest = tmp_path / manifest_name
        manifest.write_text(yaml.safe_dump({"apiVersion": "finetune.dev/v1alpha1",
                                            "kind": "FineTuneJob",
                                            "metadata": {"name": "tiny"}, "spec": spec}))
        ftjob = Path(sys.executable).parent / "ftjob"
        return subprocess.run([str(ftjob), "run", str(manifest), "--local", "--nproc", "1",
                               "--output", str(output)], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                                   "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"})

    first = run("a.yaml")
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    first_uid = owner(output)["uid"]
    assert first_uid.startswith("local-")
    before = listing(output)
    refused = run("b.yaml")
    assert refused.returncode == ExitCode.OUTPUT_OWNED_BY_OTHER_JOB, refused.stderr[-3000:]
    assert "failed: OutputOwnedByOtherJob (exit 13)" in refused.stdout
    assert listing(output) == before
    adopted = run("b.yaml", adoptPreviousOutput=True)
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr[-3000:]
    summary = json.loads((output / "termination-log").read_text())
    assert summary["resumedFromStep"] == 10 and summary["globalStep"] == 20
    assert owner(output)["adoptedFromJobUid"] == first_uid != owner(output)["uid"]
