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
