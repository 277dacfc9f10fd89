"""`ftjob run --local` with `spec.output`: train a LoRA classifier, pass the gate, merge the
adapter, write the model card, push to the real registry (TLS + htpasswd); then read the
image back with the `oras` CLI (as `docker pull` would), check every file, and load the
pulled model with transformers: it scores the validation split as the job reported. A gate
the model misses withholds the push."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftjob_trainer.delivery import modelcar, oci
from tests.oci_images import (copy_to_layout, read_image, run_oras, runs_as_modelcar,
                              tree_digests, unpack)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def manifest(tmp_path: Path, tiny: dict[str, Path], name: str, output: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {"task": "sequence-classification", "model": {"path": str(tiny["bert"])},
                 "dataset": {"files": {"train": str(tiny["train"]),
                                       "validation": str(tiny["validation"])},
                             "maxLength": 32},
                 "peft": {"r": 4, "alpha": 8, "dropout": 0.0},
                 "trainingArguments": {"max_steps": 24, "per_device_train_batch_size": 8,
                                       "learning_rate": 5e-3, "save_steps": 12, "seed": 3},
                 "output": output},
    }))
    return path


def run_local(path: Path, workdir: Path, registry, *args: str) -> subprocess.CompletedProcess:
    auth = workdir / "push.json"
    auth.write_text(registry.docker_config())
    ftjob = Path(sys.executable).parent / "ftjob"
    return subprocess.run(
        [str(ftjob), "run", str(path), "--local", "--nproc", "1", "--output",
         str(workdir / "out"), *args], capture_output=True, text=True, timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "HF_HUB_OFFLINE": "1",
             "FTJOB_PUSH_CONFIG": str(auth), "FTJOB_REGISTRY_CA": str(registry.ca_file)})


def score(model_dir: Path, validation: Path) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of a saved classifier on the validation file, with
    transformers alone."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in validation.read_text().splitlines() if line.strip()]
    labels = torch.tensor([model.config.label2id[r["label"]] for r in rows])
    with torch.no_grad():
        batch = tokenizer([r["text"] for r in rows], truncation=True, max_length=32,
                          padding=True, return_tensors="pt")
        logits = model(**batch).logits
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    return (logits.argmax(-1) == labels).sum().item() / len(rows), loss


@pytest.mark.parametrize("registry", ["htpasswd"], indirect=True)
def test_a_local_run_pushes_the_merged_model(registry, oras_cli, tiny_classifier, tmp_path):
    ref = f"{registry.host}/team/topics:v1"
    path = manifest(tmp_path, tiny_classifier, "topics", {
        "mergeAdapter": True, "gate": {"metric": "eval_accuracy", "min": 0.1},
        "oci": {"repository": f"{registry.host}/team/topics", "tag": "v1",
                "pushSecretRef": {"name": "regcred"},
                "caConfigMapRef": {"name": "registry-ca"}}})
    done = run_local(path, tmp_path, registry)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    out = tmp_path / "out"
    result = json.loads((out / "output.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert result["phase"] == "Pushed" and result["reference"] == ref, result
    assert result["gate"] == {"metric": "eval_accuracy", "value": metrics["eval_accuracy"],
                              "bound": 0.1, "comparison": "min", "passed": True}
    assert f"output: Pushed: {ref}@{result['digest']}" in done.stdout

    served = json.loads(run_oras(oras_cli, "manifest", "fetch", "--descriptor",
                                 "--plain-http=false", "--ca-file", str(registry.ca_file),
                                 "-u", registry.username, "-p", registry.password, ref))
    assert served["digest"] == result["digest"]
    manifest_doc, _, layers = read_image(copy_to_layout(oras_cli, registry, ref, tmp_path))
    assert sum(layer["size"] for layer in manifest_doc["layers"]) < result["size"]
    pulled = unpack(layers, tmp_path / "rootfs")
    merged = out / "merged"
    assert tree_digests(pulled) == tree_digests(merged)
    assert not (pulled / "adapter_config.json").exists()  # the merged model, not the adapter
    card = (pulled / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == str(tiny_classifier["bert"])
    assert "eval_accuracy" in card

    # KServe's modelcar command runs with the image's own shell (Debian's busybox-static,
    # which .ci/run installs and the trainer image has).
    assert modelcar.find_shell() is not None, "install busybox-static"
    assert manifest_doc["layers"][0]["annotations"][oci.FILES_ANNOTATION] == (
        "/bin/busybox\n/bin/sh\n/bin/ln\n/bin/sleep")
    assert "config.json" in runs_as_modelcar(tmp_path / "rootfs").split()

    accuracy, loss = score(pulled, tiny_classifier["validation"])
    assert accuracy == pytest.approx(metrics["eval_accuracy"], abs=1e-9)
    assert loss == pytest.approx(metrics["eval_loss"], abs=1e-4)


@pytest.mark.parametrize("registry", ["htpasswd"], indirect=True)
def test_a_gate_the_model_misses_withholds_the_push(registry, tiny_classifier, tmp_path):
    path = manifest(tmp_path, tiny_classifier, "strict",
                    {"gate": {"metric": "eval_loss", "max": 1e-6}})
    # The target from the command line (`--push`), the gate from the manifest.
    done = run_local(path, tmp_path, registry, "--push", f"{registry.host}/team/strict:v1")
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    out = tmp_path / "out"
    result = json.loads((out / "output.json").read_text())
    loss = json.loads((out / "metrics.json").read_text())["metrics"]["eval_loss"]
    assert result["phase"] == "Withheld", result
    assert result["gate"] == {"metric": "eval_loss", "value": loss, "bound": 1e-6,
                              "comparison": "max", "passed": False}
    assert "quality gate failed: eval_loss" in result["message"]
    assert "output: Withheld" in done.stdout
    assert registry.blob_uploads("team/strict") == []
    assert (out / "final" / "adapter_model.safetensors").is_file()  # kept for the user
