"""`spec.output` on the cluster: a job trains, then the operator's export pod pushes its
model to the kind cluster's registry (Debian's docker-registry on the host, reached by the
pod through the kind network's gateway, plain HTTP); the image read back from the host with
the `oras` CLI holds exactly the files the job left in `final/` on its claim."""

from __future__ import annotations

import os

import pytest

from . import jobs, kit
from .kit import probe_claim, seed
from ftjob_trainer.delivery import oci
from tests.oci_images import (copy_to_layout, oras_binary, read_image, runs_as_modelcar,
                              tree_digests, unpack)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

JOB = "e2e-export"
TIMEOUT = 420  # training, then the export pod (the trainer image), on 2 slow cores
# The registry as the pods reach it (tests/e2e/run-kind.sh), and as this host does.
REGISTRY = os.environ.get("FTJOB_E2E_REGISTRY")
REGISTRY_HERE = os.environ.get("FTJOB_E2E_REGISTRY_HERE", "localhost:5001")


def exported(status: dict) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Exported"),
                None)


@pytest.mark.skipif(not REGISTRY, reason="FTJOB_E2E_REGISTRY (a registry the pods reach) is "
                    "not set: tests/e2e/run-kind.sh sets it for the kind cluster")
def test_a_finished_job_pushes_its_model_from_the_cluster(backend, tmp_path):
    seed(backend, [JOB])
    job = jobs.training_job(JOB, 20, 10)
    job["spec"]["output"] = {"oci": {"repository": f"{REGISTRY}/e2e/{JOB}", "tag": "v1",
                                     "plainHTTP": True}}
    backend.apply(job)
    done = kit.wait_status(backend, JOB, exported, "the Exported condition", TIMEOUT)
    condition = exported(done)
    assert done["phase"] == "Succeeded", done
    assert (condition["status"], condition["reason"]) == ("True", "Pushed"), condition
    output = done["output"]
    assert output["phase"] == "Pushed" and output["reference"] == f"{REGISTRY}/e2e/{JOB}:v1"
    assert output["digest"].startswith("sha256:") and output["size"] > 0, output

    # Read back from this host, by the independent client, as `docker pull` would.
    manifest, _, layers = read_image(copy_to_layout(oras_binary(), None,
                                                    f"{REGISTRY_HERE}/e2e/{JOB}:v1", tmp_path))
    pulled = tree_digests(unpack(layers, tmp_path / "rootfs"))
    listing = probe_claim(backend, JOB, "cd final && find . -type f | sort | xargs sha256sum")
    on_claim = {path.removeprefix("./"): digest
                for digest, path in (line.split() for line in listing.splitlines())}
    assert pulled == on_claim
    assert "README.md" in pulled and "model.safetensors" in pulled, sorted(pulled)
    # The trainer image's busybox under the model: KServe's modelcar command runs in it.
    assert manifest["layers"][0]["annotations"][oci.FILES_ANNOTATION].startswith("/bin/busybox")
    assert "config.json" in runs_as_modelcar(tmp_path / "rootfs").split()
