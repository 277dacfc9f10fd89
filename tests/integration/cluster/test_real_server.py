"""What only a real API server can check: schema acceptance and pruning, CEL rules, RBAC,
`kubectl explain` and printer columns, garbage collection by the controller-manager."""

from __future__ import annotations

import enum
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from ftjob_api import api, naming
from ftjob_api.crd import build_crd
from kubernetes.client.rest import ApiException
from pydantic import BaseModel

from tests.controlplane.install import kubectl, service_account_kubeconfig
from tests.integration.operator.helpers import BASE_SPEC, Real
from tests.integration.operator.helpers import manifest as job
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

def create(cluster, body: dict[str, Any]) -> dict[str, Any]:
    return Real(cluster).create_job(body)


def get(cluster, name: str) -> dict[str, Any]:
    return Real(cluster).get_job(name) or {}


# --------------------------------------------------------------------------- the CRD


def test_crd_is_structural_established_and_names_accepted(cluster):
    name = build_crd()["metadata"]["name"]
    crd = json.loads(kubectl(cluster.plane, "get", "crd", name, "-o", "json").stdout)
    conditions = {c["type"]: c for c in crd["status"]["conditions"]}
    assert conditions["Established"]["status"] == "True"
    assert conditions["NamesAccepted"]["status"] == "True"
    assert "NonStructuralSchema" not in conditions, conditions["NonStructuralSchema"]


def test_kubectl_explain_describes_a_training_argument(cluster):
    done = kubectl(cluster.plane, "explain", "finetunejob.spec.trainingArguments.learning_rate")
    assert "The initial learning rate for the optimizer" in done.stdout, done.stdout
    assert "<number>" in done.stdout


def test_server_rejects_model_name_and_path_with_the_field_path(cluster):
    with pytest.raises(ApiException) as raised:
        create(cluster, job("both", model={"name": "bert-base-uncased", "path": "/models/x"}))
    assert raised.value.status == 422
    body = json.loads(raised.value.body)
    fields = [c.get("field") for c in body["details"]["causes"]]
    assert "spec.model" in fields, body
    assert "set exactly one of name" in body["message"]


def test_server_rejects_a_wrong_type_before_anything_runs(cluster):
    with pytest.raises(ApiException) as raised:
        create(cluster, job("wrongtype", trainingArguments={"learning_rate": "fast"}))
    assert raised.value.status == 422
    assert "spec.trainingArguments.learning_rate" in raised.value.body


def test_unknown_training_argument_is_kept_not_pruned(cluster):
    """The Python client asks for no strict field validation: an undeclared key would be
    pruned silently. `trainingArguments` preserves unknown keys so the operator sees it."""
    created = create(cluster, job("typo", trainingArguments={"max_steps": 5,
                                                             "lerning_rate": 3e-4}))
    assert created["spec"]["trainingArguments"] == {"max_steps": 5, "lerning_rate": 3e-4}


def test_strict_kubectl_apply_still_accepts_the_job_for_the_operator_to_judge(cluster):
    manifest = job("typo-kubectl", trainingArguments={"lerning_rate": 3e-4})
    manifest["metadata"]["namespace"] = cluster.ns
    kubectl(cluster.plane, "apply", "--validate=strict", "-f", "-",
            input=json.dumps(manifest))
    assert get(cluster, "typo-kubectl")["spec"]["trainingArguments"] == {"lerning_rate": 3e-4}


# --------------------------------------------------------------------------- status


def sample(annotation: Any, name: str = "x") -> Any:
    """A value for every field of a pydantic model type, recursively (nothing left unset)."""
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return sample(next(a for a in get_args(annotation) if a is not type(None)), name)
    if origin is Literal:
        return get_args(annotation)[-1]
    if origin is list:
        return [sample(get_args(annotation)[0], name)]
    if origin is dict:
        return {"eval_accuracy": 0.75, "eval_loss": 0.5}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return list(annotation)[-1].value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {field.alias or key: sample(field.annotation, key)
                for key, field in annotation.model_fields.items()}
    if annotation is bool:
        return True
    if annotation is int:
        return 7
    if annotation is float:
        return 0.25
    if name.endswith(("time", "_at")):
        return "2026-12-01T10:00:00Z"
    return f"some {name}"


def test_every_status_field_reads_back_unchanged(cluster):
    create(cluster, job("status"))
    status = sample(api.FineTuneJobStatus)
    api.FineTuneJobStatus.model_validate(status)  # the sample is a valid status
    cluster.custom.patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, cluster.ns, api.PLURAL, "status", {"status": status})
    assert get(cluster, "status")["status"] == status


def test_trainer_status_patch_goes_through_rbac_and_reads_back(cluster, tmp_path: Path,
                                                                 run_operator):
    """The trainer patches status as its job's own ServiceAccount (made by the operator)."""
    from ftjob_trainer.checkpoints import Checkpoint
    from ftjob_trainer.progress import build_checkpoint, build_progress
    from ftjob_trainer.progress_reporters import KubernetesReporter
    from kubernetes import client, config

    with run_operator():
        create(cluster, job("progress"))
        account = naming.trainer_account("progress")
        wait_for(lambda: cluster.core.list_namespaced_pod(cluster.ns).items, 60, "pods")
    kubeconfig = service_account_kubeconfig(cluster.plane, cluster.ns, account,
                                            tmp_path / "trainer.kubeconfig")
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    progress = build_progress(global_step=3, max_steps=5, epoch=0.6, loss=1.25,
                              learning_rate=1e-4, start_step=0, elapsed=2.0,
                              samples_per_step=16, eval_metrics={"eval_loss": 1.5}, now=1.7e9)
    checkpoint = build_checkpoint(Checkpoint(step=2, path=Path("/output/checkpoint-2"),
                                             saved_at="2026-12-01T10:00:00Z"), 0)
    custom = client.CustomObjectsApi(api_client)
    custom.patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, cluster.ns, api.PLURAL, "progress",
        KubernetesReporter.body(progress, checkpoint),
        _content_type=KubernetesReporter.CONTENT_TYPE)
    seen = get(cluster, "progress")["status"]
    assert seen["progress"] == progress
    assert seen["checkpoint"] == checkpoint
    # ...and that is all it may do: not the spec, not another job.
    with pytest.raises(ApiException) as raised:
        custom.patch_namespaced_custom_object(
            api.GROUP, api.VERSION, cluster.ns, api.PLURAL, "progress",
            {"spec": {"trainingArguments": {"max_steps": 1}}})
    assert raised.value.status == 403
    api_client.close()


# --------------------------------------------------------------------------- operator


def test_training_argument_typo_fails_the_job_with_the_field_path(cluster, run_operator):
    with run_operator():
        create(cluster, job("typo", trainingArguments={"max_steps": 5, "lerning_rate": 3e-4}))
        status = wait_for(lambda: (s := get(cluster, "typo").get("status") or {})
                          .get("phase") == "Failed" and s, 60, "the typo job to fail")
    assert "spec.trainingArguments.lerning_rate" in status["message"], status["message"]
    assert "learning_rate" in status["message"]
    assert cluster.core.list_namespaced_pod(cluster.ns).items == [], "pods for a bad spec"


def test_kubectl_get_shows_the_printer_columns(cluster, run_operator):
    with run_operator():
        create(cluster, job("columns"))
        wait_for(lambda: (get(cluster, "columns").get("status") or {}).get("phase"), 60,
                 "a phase")
    table = kubectl(cluster.plane, "get", "ftj", "-n", cluster.ns).stdout.splitlines()
    header = table[0].split()
    for column in ("NAME", "PHASE", "STEP", "PROGRESS", "RESTARTS", "AGE"):
        assert column in header, table
    row = table[1].split()
    assert row[0] == "columns" and row[header.index("PHASE")] == "Pending", table


def test_deleting_a_job_garbage_collects_children_but_a_retained_claim_survives(
        cluster, run_operator):
    with run_operator():
        created = create(cluster, job("gc", storage={**BASE_SPEC["storage"],
                                                     "reclaimPolicy": "Retain"}))
        wait_for(lambda: len(cluster.core.list_namespaced_pod(cluster.ns).items) == 2, 60,
                 "two pods")
        Real(cluster).delete_job("gc")
        wait_for(lambda: not cluster.custom.list_namespaced_custom_object(
            api.GROUP, api.VERSION, cluster.ns, api.PLURAL)["items"], 60, "the job to go")
    # The controller-manager's garbage collector removes what the job owned.
    wait_for(lambda: not cluster.core.list_namespaced_pod(cluster.ns).items, 60,
             "the pods to be garbage-collected")
    wait_for(lambda: not [s for s in cluster.core.list_namespaced_service(cluster.ns).items],
             60, "the Service to be garbage-collected")
    wait_for(lambda: not [c for c in cluster.core.list_namespaced_config_map(cluster.ns).items
                          if c.metadata.name == naming.config_map("gc")], 60,
             "the ConfigMap to be garbage-collected")
    claim = cluster.core.read_namespaced_persistent_volume_claim(naming.claim("gc"), cluster.ns)
    assert claim.metadata.deletion_timestamp is None
    assert not claim.metadata.owner_references, "a Retain claim must not be owned by the job"
    assert created["metadata"]["uid"]
