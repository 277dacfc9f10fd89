"""spec.output's export step through the real operator on the real control plane: after
training succeeded, one export pod per try (its mounts as rendered), a registry outage
(exit 23) retried after the backoff in a new pod without retraining, the result of the
pod's termination message in status.output with the Exported condition, each transition's
Event once; a quality gate not met withholds the model, and ttlSecondsAfterFinished and
cleanPodPolicy wait for the export."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from ftjob_api import api, contract, naming
from ftjob_operator import render
from ftjob_operator.settings import Settings

from tests.conftest import TRAINER_IMAGE
from tests.integration.operator.helpers import (TIMEOUT, PodCreations, Real, bring_up,
                                                condition, describe, event_reasons, events,
                                                get_job, manifest, phase_is, pods, status,
                                                succeed)
from tests.integration.operator.test_operator_lifecycle import stored_as_rendered
from tests.polling import never, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

OCI = {"repository": "registry.example.com/team/demo",
       "pushSecretRef": {"name": "push-creds"},
       "caConfigMapRef": {"name": "registry-ca", "key": "bundle.pem"}}
REFERENCE = "registry.example.com/team/demo:demo"
PUSHED = {"phase": "Pushed", "reference": REFERENCE, "digest": "sha256:" + "0f" * 32,
          "size": 52_428_800, "pushedAt": "2026-01-01T12:00:00Z",
          "message": "pushed 3 of 4 blobs (52428800 bytes); the registry had the others"}
WITHHELD = {"phase": "Withheld",
            "gate": {"metric": "eval_accuracy", "value": 0.71, "bound": 0.9,
                     "comparison": "min", "passed": False},
            "message": "eval_accuracy 0.71 < 0.9: not pushed"}
OUTAGE = "registry.example.com: 503 Service Unavailable"
TRAINING_EVENTS = ["Started", "Running", "Succeeded"]


@pytest.fixture
def h(cluster) -> Real:
    return Real(cluster)


def export_pod(h: Real, try_: int) -> dict[str, Any] | None:
    name = naming.export_pod("demo", try_)
    return next((p for p in pods(h) if p["metadata"]["name"] == name), None)


def output_phase(h: Real, phase: str):
    return lambda: (st := status(h)).get("output", {}).get("phase") == phase and st


def trained(h: Real, **metrics: float) -> None:
    """Attempt 1 runs and succeeds: the job is Succeeded before any export pod."""
    bring_up(h, 1)
    succeed(h, 1, metrics=metrics)
    wait_for(phase_is(h, "Succeeded"), TIMEOUT, what="Succeeded", describe=lambda: describe(h))


def check_mounts(h: Real, job: dict[str, Any], stored: dict[str, Any]) -> None:
    """The export pod is what render.py builds for the job, stored unchanged: the job file,
    the output claim, the push credentials and the CA bundle, read-only where they should."""
    ref = render.JobRef("demo", h.ns, job["metadata"]["uid"])
    digest = contract.job_digest(json.loads(render.job_file(ref, job["spec"])))
    want = render.render_export_pod(ref, api.parse_spec(job["spec"]), 1,
                                    Settings(trainer_image=TRAINER_IMAGE), digest,
                                    goodput=(job.get("status") or {}).get("goodput"))
    rendered = {k: v for k, v in want.items() if k not in ("apiVersion", "kind")}
    assert stored_as_rendered(stored, rendered) == []
    volumes = {v["name"]: v for v in stored["spec"]["volumes"]}
    assert volumes["push-config"]["secret"]["secretName"] == "push-creds"
    assert volumes["registry-ca"]["configMap"]["name"] == "registry-ca"
    assert volumes["output"]["persistentVolumeClaim"]["claimName"] == "demo-output"
    (container,) = stored["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FTJOB_PUSH_CONFIG"] == "/etc/ftjob-push/.dockerconfigjson"
    assert env["FTJOB_REGISTRY_CA"] == "/etc/ftjob-registry-ca/bundle.pem"
    assert container["command"] == ["ftjob-export"]
    assert "nvidia.com/gpu" not in json.dumps(container.get("resources", {}))


def test_a_registry_outage_is_retried_in_a_new_pod_then_the_model_is_pushed(h, run_operator):
    created = PodCreations(h)
    try:
        with run_operator():
            job = h.create_job(manifest(output={"oci": OCI}))
            trained(h, eval_accuracy=0.93)
            first = wait_for(lambda: export_pod(h, 1), TIMEOUT, what="export pod 1",
                             describe=lambda: describe(h))
            check_mounts(h, get_job(h), first)  # as it was when the pod was made
            st = wait_for(output_phase(h, "Pushing"), TIMEOUT, what="output Pushing")
            assert st["output"]["attempts"] == 1 and st["phase"] == "Succeeded"

            # The registry answers 503: the try fails retryably; the next one comes in a
            # new pod once the backoff (10 s) has passed, and nothing is trained again.
            h.kubelet.run(h.ns, "demo-export-1")
            failed_at = time.monotonic()
            h.kubelet.terminate(h.ns, "demo-export-1", contract.ExitCode.EXPORT_RETRYABLE,
                                message=json.dumps({"message": OUTAGE}))
            wait_for(lambda: export_pod(h, 2), TIMEOUT, what="export pod 2",
                     describe=lambda: describe(h))
            waited = created.created_at["demo-export-2"] - failed_at
            assert waited >= 9.0, f"try 2 came {waited:.1f}s after try 1 failed"
            assert status(h)["output"]["attempts"] == 2

            h.kubelet.run(h.ns, "demo-export-2")
            h.kubelet.terminate(h.ns, "demo-export-2", 0, message=json.dumps(PUSHED))
            st = wait_for(output_phase(h, "Pushed"), TIMEOUT, what="output Pushed",
                          describe=lambda: describe(h))
            assert st["output"] == {**PUSHED, "attempts": 2}
            exported = condition(st, "Exported")
            assert (exported["status"], exported["reason"]) == ("True", "Pushed")
            assert REFERENCE in exported["message"]
            assert st["phase"] == "Succeeded" and condition(st, "Succeeded")["status"] == "True"

            wanted = sorted(TRAINING_EVENTS + ["ExportStarted", "ExportRetrying",
                                               "ExportStarted", "Exported"])
            wait_for(lambda: sorted(event_reasons(h)) == wanted, TIMEOUT,
                     what=f"the events {wanted}", describe=lambda: str(event_reasons(h)))
            # Delivered: no third try, no Event twice, the job stays Succeeded.
            never(lambda: export_pod(h, 3) or sorted(event_reasons(h)) != wanted, 6,
                  "a third export pod or another Event")
            retrying = next(e for e in events(h) if e["reason"] == "ExportRetrying")
            assert OUTAGE in retrying["message"] and retrying["type"] == "Warning"
            assert status(h)["phase"] == "Succeeded"
    finally:
        created.stop()
    assert created.duplicates() == []
    assert sorted(n for n in created.names if "-export-" in n) == ["demo-export-1",
                                                                   "demo-export-2"]
    assert sorted(n for n in created.names if "-export-" not in n) == ["demo-1-0", "demo-1-1"]


def test_a_gate_not_met_withholds_the_model_and_the_ttl_waits_for_the_export(h, run_operator):
    with run_operator():
        h.create_job(manifest(
            dataset={"files": {"train": "/data/train.jsonl", "validation": "/data/val.jsonl"}},
            output={"gate": {"metric": "eval_accuracy", "min": 0.9}, "oci": OCI},
            cleanPodPolicy="All", ttlSecondsAfterFinished=6))
        trained(h, eval_accuracy=0.71)
        wait_for(lambda: export_pod(h, 1), TIMEOUT, what="export pod 1",
                 describe=lambda: describe(h))
        h.kubelet.run(h.ns, "demo-export-1")
        # The TTL runs out after training, while the export still runs: the job stays.
        never(lambda: get_job(h) is None, 9, "the job deleted before its export finished")

        finished_at = time.monotonic()
        h.kubelet.terminate(h.ns, "demo-export-1", 0, message=json.dumps(WITHHELD))
        st = wait_for(output_phase(h, "Withheld"), TIMEOUT, what="output Withheld",
                      describe=lambda: describe(h))
        assert st["output"] == {**WITHHELD, "attempts": 1} and st["phase"] == "Succeeded"
        exported = condition(st, "Exported")
        assert (exported["status"], exported["reason"]) == ("False", "QualityGateNotMet")
        assert "0.71" in exported["message"] and "0.9" in exported["message"]
        # cleanPodPolicy All: the export pod goes once the export has finished...
        wait_for(lambda: export_pod(h, 1) is None, TIMEOUT, what="export pod deleted",
                 describe=lambda: describe(h))
        # ...and the job ttlSecondsAfterFinished after that.
        wait_for(lambda: get_job(h) is None, TIMEOUT, what="the job deleted by its TTL",
                 describe=lambda: describe(h))
        assert time.monotonic() - finished_at >= 5.0
    # Each once, the TTL's `Deleted` included.
    wanted = sorted(TRAINING_EVENTS + ["ExportStarted", "QualityGateNotMet", "Deleted"])
    wait_for(lambda: sorted(event_reasons(h)) == wanted, TIMEOUT,
             what=f"the events {wanted}", describe=lambda: str(event_reasons(h)))
