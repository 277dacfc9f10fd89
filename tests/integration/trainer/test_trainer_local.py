"""`ftjob run FILE --local` end to end: relative paths, the launcher, the closing lines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml


def test_run_local_resolves_paths_against_the_manifest_and_reports(tiny, tmp_path):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copy(tiny["cls_train"], project / "data" / "train.jsonl")
    shutil.copy(tiny["cls_val"], project / "data" / "val.jsonl")
    shutil.copytree(tiny["bert"], project / "models" / "tiny-bert")
    manifest = project / "job.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "local-tiny"},
        "spec": {"task": "sequence-classification",
                 "model": {"path": "models/tiny-bert"},
                 "dataset": {"files": {"train": "data/train.jsonl", "validation": "data/val.jsonl"},
                             "maxLength": 32},
                 "trainingArguments": {"max_steps": 30, "per_device_train_batch_size": 8,
                                       "learning_rate": 3e-3, "save_steps": 15, "seed": 7}},
    }))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    ftjob = Path(sys.executable).parent / "ftjob"
    done = subprocess.run([str(ftjob), "run", str(manifest), "--local", "--nproc", "2"],
                          cwd=elsewhere, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                               "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"})
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    output = elsewhere / "ftjob-runs" / "local-tiny"
    assert "succeeded after 30 steps" in done.stdout
    assert f"saved model: {output / 'final'}" in done.stdout
    assert "eval_accuracy:" in done.stdout
    job = json.loads((output / "job.json").read_text())
    assert job["spec"]["model"]["path"] == str(project / "models" / "tiny-bert")
    assert job["spec"]["dataset"]["files"]["train"] == str(project / "data" / "train.jsonl")
    summary = json.loads((output / "termination-log").read_text())
    assert summary["status"] == "succeeded" and summary["globalStep"] == 30
    # Progress went to the console reporter: no terminal here, so plain lines.
    assert "step 30/30 (100%)" in done.stderr


def test_run_local_on_unreadable_data_says_the_cause_alone(tiny, tmp_path):
    """A truncated JSONL line: the user reads the cause in one line, not torchrun's report
    of a failed child (a 30-line traceback); FTJOB_DEBUG=1 brings that report back."""
    data = tmp_path / "train.jsonl"
    data.write_text(Path(tiny["cls_train"]).read_text() + '{"text": "cut sho\n')
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "local-bad"},
        "spec": {"task": "sequence-classification", "model": {"path": str(tiny["bert"])},
                 "dataset": {"files": {"train": str(data)}, "maxLength": 32},
                 "trainingArguments": {"max_steps": 2, "per_device_train_batch_size": 8}},
    }))
    ftjob = Path(sys.executable).parent / "ftjob"

    def run(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(ftjob), "run", str(manifest), "--local", "--nproc", "2",
                               "--output", str(tmp_path / "out")], capture_output=True,
                              text=True, timeout=300,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                                   "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", **env})

    done = run()
    assert done.returncode == 11, done.stdout + done.stderr[-4000:]
    cause = f"failed: InvalidData (exit 11): spec.dataset.files.train: {data}: cannot be read"
    assert done.stdout.startswith(cause), done.stdout
    for noise in ("Traceback", "ChildFailedError", "Root Cause", "failed (exitcode"):
        assert noise not in done.stdout + done.stderr, done.stderr
    # Each rank names its own failure once (datasets' own handler would double it).
    for rank in (0, 1):
        assert done.stderr.count(f"rank {rank} failed: InvalidData") == 1, done.stderr
    assert done.stderr.count("Failed to load JSON") == 2, done.stderr

    debug = run(FTJOB_DEBUG="1")
    assert debug.returncode == 11 and debug.stdout.startswith(cause), debug.stdout
    assert "ChildFailedError" in debug.stderr and "Root Cause" in debug.stderr, debug.stderr
