"""render.py: golden manifests for representative jobs, plus the rules behind them."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ftjob_api import api, contract, naming
from ftjob_api.manifests import dump
from ftjob_api.validation import validate_spec
from ftjob_operator import kueue, render
from ftjob_operator.settings import Settings

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = Settings(trainer_image="registry.example/ftjob/trainer:1.0", storage_class="fast")
JOB = render.JobRef("demo", "team-a", "0000-1111")

CPU_SPEC: dict[str, Any] = {
    "task": "sequence-classification",
    "model": {"path": "/models/tiny", "hfTokenSecretRef": {"name": "hf", "key": "token"}},
    "dataset": {"files": {"train": "/data/train.jsonl"}},
    "resources": {"nodes": 2, "cpu": "2", "memory": "4Gi", "shmSize": "1Gi"},
    "env": [{"name": "WANDB_MODE", "value": "offline"}],
    "storage": {"accessModes": ["ReadWriteMany"], "reclaimPolicy": "Delete"},
    "podTemplate": {"labels": {"team": "nlp", "app.kubernetes.io/part-of": "search"},
                    "annotations": {"example.com/owner": "nlp@example.com"},
                    "envFrom": [{"configMapRef": {"name": "tracking"}},
                                {"secretRef": {"name": "wandb", "optional": True},
                                 "prefix": "WANDB_"}]},
    "monitoring": {"metricsPort": 9400, "progressIntervalSeconds": 10},
}


def _all(spec_doc: dict[str, Any], attempt: int = 1) -> list[dict[str, Any]]:
    spec = api.parse_spec(spec_doc)
    pods = render.render_pods(JOB, spec, attempt, SETTINGS)
    workload = ([kueue.render_workload(JOB, spec, pods[0], render.owner_reference(JOB))]
                if spec.scheduling.queue_name else [])
    return render.render_job_objects(JOB, spec, spec_doc, SETTINGS) + workload + pods


GPU_SPEC: dict[str, Any] = {
    "task": "causal-lm",
    "model": {"name": "org/model-8b"},
    "dataset": {"name": "org/data"},
    "resources": {"nodes": 4, "gpusPerNode": 8, "cpu": "64", "memory": "512Gi"},
    "scheduling": {"queueName": "gpu-queue", "priorityClassName": "training",
                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
    "podTemplate": {"runtimeClassName": "nvidia",
                    "annotations": {"example.com/cost-center": "research"}},
    "storage": {"existingClaim": "shared-checkpoints"},
}


VOLUMES_SPEC: dict[str, Any] = {
    "task": "causal-lm",
    "model": {"path": "/models/llama"},
    "dataset": {"files": {"train": "/datasets/sft/train.jsonl"}},
    "deepspeed": {"configMapRef": {"name": "ds-zero3", "key": "zero3.json"}},
    "volumes": [{"name": "models", "claimName": "model-cache", "mountPath": "/models"},
                {"name": "datasets", "claimName": "corpora", "mountPath": "/datasets",
                 "subPath": "sft", "readOnly": False}],
    "resources": {"gpusPerNode": 2},
}


def _golden_cases() -> dict[str, dict[str, Any]]:
    return {"cpu-2-nodes": CPU_SPEC, "gpu-4-nodes-kueue": GPU_SPEC,
            "gpu-deepspeed-configmap-volumes": VOLUMES_SPEC}


@pytest.mark.parametrize("name", list(_golden_cases()))
def test_golden(name: str) -> None:
    rendered = dump({"objects": _all(_golden_cases()[name], attempt=3)})
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("FTJOB_UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert path.exists(), f"{path} missing: run with FTJOB_UPDATE_GOLDEN=1 and review it"
    assert rendered == path.read_text(), f"{path} differs: review, then FTJOB_UPDATE_GOLDEN=1"


def _pod(spec_doc: dict[str, Any], rank: int = 0, attempt: int = 1) -> dict[str, Any]:
    return render.render_pod(JOB, api.parse_spec(spec_doc), attempt, rank, SETTINGS)


def _env(pod: dict[str, Any]) -> dict[str, Any]:
    # A variable with neither `value` nor `valueFrom` is set to the empty string.
    return {e["name"]: e.get("value", e.get("valueFrom", ""))
            for e in pod["spec"]["containers"][0]["env"]}


def test_rank_addresses_rank0_of_the_same_attempt():
    pod = _pod(CPU_SPEC, rank=1, attempt=4)
    assert pod["metadata"]["name"] == "demo-4-1"
    assert pod["spec"]["hostname"] == "demo-4-1" and pod["spec"]["subdomain"] == "demo"
    args = pod["spec"]["containers"][0]["args"]
    assert "--master-addr=demo-4-0.demo" in args and "--node-rank=1" in args
    assert "--rdzv-id=0000-1111-4" in args and "--nnodes=2" in args


def test_token_by_reference_only():
    objects = _all(CPU_SPEC)
    pod = next(o for o in objects if o["kind"] == "Pod")
    assert _env(pod)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert not any(o["kind"] == "Secret" for o in objects)


def test_user_env_cannot_override_reserved_names():
    spec = dict(CPU_SPEC, env=[{"name": "MASTER_ADDR", "value": "evil"},
                               {"name": "FTJOB_ATTEMPT", "value": "9"},
                               {"name": "OK_VAR", "value": "1"}])
    env = _pod(spec)["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert "MASTER_ADDR" not in names and names.count("FTJOB_ATTEMPT") == 1
    assert {"name": "FTJOB_ATTEMPT", "value": "1"} in env and {"name": "OK_VAR", "value": "1"} in env


def test_user_env_may_set_the_debug_switch_once():
    # FTJOB_DEBUG is the one FTJOB_* name left to users: their value, never doubled by the
    # empty entry that keeps envFrom from supplying it.
    debug = [e for e in _pod(dict(CPU_SPEC, env=[{"name": "FTJOB_DEBUG", "value": "1"}]))[
        "spec"]["containers"][0]["env"] if e["name"] == "FTJOB_DEBUG"]
    assert debug == [{"name": "FTJOB_DEBUG", "value": "1"}]
    assert _env(_pod(CPU_SPEC))["FTJOB_DEBUG"] == ""
    problems = validate_spec(dict(CPU_SPEC, env=[{"name": "FTJOB_DEBUG", "value": "1"},
                                                 {"name": "FTJOB_OTHER", "value": "1"}]))
    assert [p.path for p in problems if p.path.startswith("spec.env")] == \
        ["spec.env[1].name"], problems


def test_gpu_pod_gets_gpus_and_nccl_env_cpu_pod_gets_deepspeed_cpu():
    gpu = _pod(dict(CPU_SPEC, resources={"nodes": 2, "gpusPerNode": 4}))
    container = gpu["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert "--nproc-per-node=4" in container["args"]
    assert _env(gpu)["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1" and "DS_ACCELERATOR" not in _env(gpu)
    assert _env(_pod(CPU_SPEC))["DS_ACCELERATOR"] == "cpu"


@pytest.mark.parametrize("policy,owned", [("Retain", False), ("Delete", True)])
def test_claim_owner_reference_follows_reclaim_policy(policy, owned):
    spec_doc = dict(CPU_SPEC, storage={"accessModes": ["ReadWriteMany"], "reclaimPolicy": policy})
    claim = render.render_claim(JOB, api.parse_spec(spec_doc), spec_doc, SETTINGS)
    assert ("ownerReferences" in claim["metadata"]) is owned
    assert claim["spec"]["storageClassName"] == "fast"


def test_claim_modes_and_size_defaults():
    one = {k: v for k, v in CPU_SPEC.items() if k != "storage"} | {"resources": {"nodes": 1}}
    claim = render.render_claim(JOB, api.parse_spec(one), one, Settings(storage_size="5Gi"))
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"  # operator default
    sized = one | {"storage": {"size": "7Gi"}}
    claim = render.render_claim(JOB, api.parse_spec(sized), sized, Settings(storage_size="5Gi"))
    assert claim["spec"]["resources"]["requests"]["storage"] == "7Gi"  # the spec wins


def test_existing_claim_mounts_a_per_job_subpath_and_creates_no_claim():
    spec_doc = dict(CPU_SPEC, storage={"existingClaim": "shared"})
    objects = _all(spec_doc)
    assert not any(o["kind"] == "PersistentVolumeClaim" for o in objects)
    pod = next(o for o in objects if o["kind"] == "Pod")
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "output")
    assert mount == {"name": "output", "mountPath": "/output", "subPath": "demo"}
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "output")
    assert volume["persistentVolumeClaim"]["claimName"] == "shared"


def test_scheduling_and_kueue():
    spec_doc = dict(CPU_SPEC, scheduling={
        "nodeSelector": {"gpu": "a100"}, "priorityClassName": "train",
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "queueName": "team-a-queue"})
    pod = _pod(spec_doc, attempt=2)
    # A queued job is one Workload; a Kueue label on a pod would queue that pod on its own.
    assert not any(k.startswith("kueue.x-k8s.io/") for k in pod["metadata"]["labels"])
    assert not any(k.startswith("kueue.x-k8s.io/") for k in pod["metadata"]["annotations"])
    assert pod["spec"]["nodeSelector"] == {"gpu": "a100"}
    assert pod["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists",
                                           "effect": "NoSchedule"}]
    assert pod["spec"]["priorityClassName"] == "train"


def test_ranks_of_a_multi_node_job_prefer_different_nodes():
    pods = render.render_pods(JOB, api.parse_spec(CPU_SPEC), 3, SETTINGS)
    for pod in pods:
        (term,) = pod["spec"]["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        # It selects exactly this attempt's ranks: every pod of the gang, no pod of another
        # job, and not the terminating pods of the attempt before.
        assert selector == {naming.LABEL_JOB: "demo", naming.LABEL_ATTEMPT: "3"}
        assert all(p["metadata"]["labels"][k] == v for p in pods for k, v in selector.items())
    single = _pod(dict(CPU_SPEC, resources={"nodes": 1}))
    assert "affinity" not in single["spec"]
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "pool", "operator": "In", "values": ["a"]}]}]}}}
    assert _pod(dict(CPU_SPEC, scheduling={"affinity": own}))["spec"]["affinity"] == own


def test_pods_meet_restricted_pod_security():
    pod = _pod(CPU_SPEC)
    sec = pod["spec"]["securityContext"]
    assert sec["runAsNonRoot"] and sec["seccompProfile"] == {"type": "RuntimeDefault"}
    csec = pod["spec"]["containers"][0]["securityContext"]
    assert csec == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                    "readOnlyRootFilesystem": True}
    assert pod["spec"]["restartPolicy"] == "Never"


def test_root_filesystem_is_read_only_with_scratch_folders_and_home():
    pod = _pod(CPU_SPEC)
    mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for path in ("/tmp", "/home/ftjob"):
        assert volumes[mounts[path]] == {"name": mounts[path], "emptyDir": {}}
    # Every writable place is a volume: the output, the shared memory, the two above.
    assert {"/output", "/dev/shm", "/tmp", "/home/ftjob"} <= set(mounts)


def test_cpu_pods_get_no_gpu_from_the_nvidia_runtime():
    assert _env(_pod(CPU_SPEC))["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "NVIDIA_VISIBLE_DEVICES" not in _env(_pod(GPU_SPEC))


def test_role_lets_pods_patch_only_their_own_status():
    role = render.render_role(JOB)
    assert role["rules"] == [{"apiGroups": ["finetune.dev"], "resources": ["finetunejobs/status"],
                              "resourceNames": ["demo"], "verbs": ["get", "patch"]}]


def test_job_file_holds_identity_and_spec_as_stored():
    import json

    cm = render.render_config_map(JOB, CPU_SPEC)
    doc = json.loads(cm["data"]["job.json"])
    assert doc == {"metadata": {"name": "demo", "namespace": "team-a", "uid": "0000-1111"},
                   "spec": CPU_SPEC}


def test_config_map_is_created_last():
    kinds = [o["kind"] for o in render.render_job_objects(
        JOB, api.parse_spec(CPU_SPEC), CPU_SPEC, SETTINGS)]
    assert kinds[-1] == "ConfigMap" and len(kinds) == 6


@pytest.mark.parametrize("name", list(_golden_cases()))
def test_rendered_objects_pass_the_kubernetes_schema(name: str) -> None:
    for obj in _all(_golden_cases()[name]):
        if obj["kind"] == kueue.KIND:  # a Kueue CRD: its pod set's template is a pod spec
            (pod_set,) = obj["spec"]["podSets"]
            obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod-set"},
                   "spec": pod_set["template"]["spec"]}
        kubernetes_validate.validate(obj, "1.30", strict=True)


def test_a_queued_job_is_one_workload_for_the_whole_gang():
    """Kueue admits all `nodes` pods or none: one pod set, counted per pod with the rank's
    own requests, node selector, tolerations and priority class; owned by the job."""
    spec = api.parse_spec(GPU_SPEC)
    pod = render.render_pod(JOB, spec, 1, 0, SETTINGS)
    workload = kueue.render_workload(JOB, spec, pod, render.owner_reference(JOB))
    assert workload["metadata"]["name"] == "finetunejob-demo"
    assert workload["metadata"]["ownerReferences"] == [render.owner_reference(JOB)]
    assert workload["metadata"]["labels"][naming.LABEL_JOB] == "demo"
    (pod_set,) = workload["spec"]["podSets"]
    assert pod_set["count"] == 4 and pod_set["name"] == "main"
    template = pod_set["template"]["spec"]
    assert template["containers"][0]["resources"] == pod["spec"]["containers"][0]["resources"]
    assert template["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "8"
    for key in ("tolerations", "priorityClassName", "runtimeClassName"):
        assert template[key] == pod["spec"][key], key
    assert "env" not in template["containers"][0] and "volumes" not in template
    assert workload["spec"]["queueName"] == "gpu-queue" and workload["spec"]["active"] is True
    assert workload["spec"]["priorityClassRef"] == {
        "group": "scheduling.k8s.io", "kind": "PriorityClass", "name": "training"}
    suspended = api.parse_spec({**GPU_SPEC, "suspend": True})
    assert kueue.render_workload(JOB, suspended, pod, {})["spec"]["active"] is False


def test_user_volumes_and_deepspeed_config_map_are_mounted():
    pod = _pod(VOLUMES_SPEC)
    container = pod["spec"]["containers"][0]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert mounts["datasets"]["subPath"] == "sft" and mounts["datasets"]["readOnly"] is False
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "model-cache",
                                                          "readOnly": True}
    ds = volumes["deepspeed-config"]["configMap"]
    assert ds == {"name": "ds-zero3", "items": [{"key": "zero3.json", "path": "ds_config.json"}]}
    assert _env(pod)["FTJOB_DEEPSPEED_CONFIG"] == "/etc/ftjob-deepspeed/ds_config.json"
    assert mounts["deepspeed-config"]["mountPath"] == "/etc/ftjob-deepspeed"


def test_training_pods_pull_with_the_configured_secrets():
    settings = Settings(trainer_image="registry.example/ftjob/trainer:1.0",
                        trainer_image_pull_secrets=("regcred", "mirror"))
    spec = api.parse_spec(CPU_SPEC)
    pod = render.render_pod(JOB, spec, 1, 0, settings)
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert "imagePullSecrets" not in _pod(CPU_SPEC)["spec"]  # none configured: none set


def test_pod_template_adds_labels_annotations_runtime_class_and_env_sources():
    spec_doc = dict(CPU_SPEC, scheduling={"queueName": "q"},
                    podTemplate=dict(CPU_SPEC["podTemplate"], runtimeClassName="gvisor"))
    for rank in (0, 1):
        pod = _pod(spec_doc, rank=rank, attempt=2)
        meta = pod["metadata"]
        assert meta["labels"] == {**naming.pod_labels("demo", 2, rank), "team": "nlp",
                                  "app.kubernetes.io/part-of": "search"}
        assert meta["annotations"] == {"example.com/owner": "nlp@example.com"}
        assert pod["spec"]["runtimeClassName"] == "gvisor"
        assert pod["spec"]["containers"][0]["envFrom"] == [
            {"configMapRef": {"name": "tracking"}},
            {"secretRef": {"name": "wandb", "optional": True}, "prefix": "WANDB_"}]
    # The Service still selects the job's pods by ftjob's labels alone.
    service = render.render_service(JOB)
    assert service["spec"]["selector"].items() <= _pod(spec_doc)["metadata"]["labels"].items()


def _trainer_read_names() -> set[str]:
    """Every FTJOB_* name in the trainer image's code: literals, and the contract's ENV_*
    constants it refers to (found independently of contract.TRAINER_ENV)."""
    root = Path(__file__).parents[3] / "trainer_image"
    text = "\n".join(p.read_text() for p in root.rglob("*.py"))
    names = set(re.findall(r"\bFTJOB_[A-Z][A-Z0-9_]*", text))
    names |= {getattr(contract, c) for c in re.findall(r"\b(ENV_[A-Z0-9_]+)", text)
              if isinstance(getattr(contract, c, None), str)}
    return names


@pytest.mark.parametrize("name", list(_golden_cases()))
def test_every_trainer_variable_is_set_explicitly_so_env_from_cannot_supply_it(name):
    read = _trainer_read_names()
    assert {"FTJOB_TEST_MODE", "FTJOB_TEST_HANG_AT_STEP", "FTJOB_STOP_FILE",
            "FTJOB_DEEPSPEED_CONFIG", "FTJOB_METRICS_PORT", "FTJOB_JOB_FILE"} <= read
    # The training pods' names (contract.TRAINER_ENV) and the export command's, on every pod.
    assert read <= set(render.READ_ENV)
    spec = dict(_golden_cases()[name], monitoring={"metricsPort": 0})
    parsed = api.parse_spec(spec)
    for pod in [*render.render_pods(JOB, parsed, 1, SETTINGS),
                render.render_export_pod(JOB, parsed, 1, SETTINGS)]:
        env = pod["spec"]["containers"][0]["env"]
        names = [e["name"] for e in env]
        assert all(names.count(n) == 1 for n in read), names
        assert _env(pod)["FTJOB_TEST_MODE"] == "" and _env(pod)["FTJOB_TEST_HANG_AT_STEP"] == ""
        assert _env(pod)["FTJOB_METRICS_PORT"] == ""  # metrics off


def test_without_pod_template_the_pod_has_none_of_its_fields():
    spec_doc = {k: v for k, v in CPU_SPEC.items() if k != "podTemplate"}
    pod = _pod(spec_doc)
    assert "annotations" not in pod["metadata"] and "runtimeClassName" not in pod["spec"]
    assert "envFrom" not in pod["spec"]["containers"][0]
    assert pod["metadata"]["labels"] == naming.pod_labels("demo", 1, 0)


def test_reserved_pod_template_keys_are_dropped_if_validation_was_bypassed():
    spec_doc = dict(CPU_SPEC, podTemplate={
        "labels": {naming.LABEL_JOB: "other", naming.LABEL_MANAGED_BY: "me",
                   naming.LABEL_KUEUE_QUEUE: "sneaky", "team": "nlp"},
        "annotations": {naming.ANNOTATION_KUEUE_POD_GROUP_COUNT: "9", "finetune.dev/x": "1"}})
    pod = _pod(spec_doc)
    assert pod["metadata"]["labels"] == {**naming.pod_labels("demo", 1, 0), "team": "nlp"}
    assert "annotations" not in pod["metadata"]


# (spec.monitoring.metricsPort, operator default) -> rank 0's port; None: no metrics.
METRICS_PORTS = [
    (None, None, None),  # neither: off
    (None, 9400, 9400),  # the operator's default
    (9500, 9400, 9500),  # the job's own port wins
    (0, 9400, None),  # the job turns the default off
    (9500, None, 9500),
]


@pytest.mark.parametrize("spec_port, default, want", METRICS_PORTS)
def test_metrics_port_env_and_named_container_port(spec_port, default, want):
    monitoring = {} if spec_port is None else {"metricsPort": spec_port}
    spec = api.parse_spec(dict(CPU_SPEC, monitoring=monitoring))
    settings = Settings(trainer_metrics_port=default)
    rank0, rank1 = (render.render_pod(JOB, spec, 1, r, settings) for r in (0, 1))
    for pod in (rank0, rank1):
        # Every rank knows the port (the trainer serves it from world rank 0 only).
        # Off: set empty (unset for the trainer), so envFrom cannot turn it on.
        assert _env(pod)["FTJOB_METRICS_PORT"] == ("" if want is None else str(want))
    ports = {p["name"]: p["containerPort"] for p in rank0["spec"]["containers"][0]["ports"]}
    assert ports == ({"rendezvous": 29500} | ({} if want is None else {"metrics": want}))
    assert [p["name"] for p in rank1["spec"]["containers"][0]["ports"]] == ["rendezvous"]


@pytest.mark.parametrize("spec_interval, default, want",
                         [(None, 5, "5"), (None, 30, "30"), (2, 30, "2")])
def test_progress_interval_env(spec_interval, default, want):
    monitoring = {} if spec_interval is None else {"progressIntervalSeconds": spec_interval}
    spec = api.parse_spec(dict(CPU_SPEC, monitoring=monitoring))
    pod = render.render_pod(JOB, spec, 1, 0, Settings(trainer_progress_interval=default))
    assert _env(pod)["FTJOB_PROGRESS_INTERVAL"] == want


# --------------------------------------------------------------------------- the export pod

EXPORT_SPEC: dict[str, Any] = {
    "task": "causal-lm",
    "model": {"path": "/models/llama", "hfTokenSecretRef": {"name": "hf", "key": "token"}},
    "dataset": {"files": {"train": "/data/train.jsonl", "validation": "/data/val.jsonl"}},
    "peft": {"r": 16, "alpha": 32},
    "resources": {"nodes": 2, "gpusPerNode": 4, "cpu": "16", "memory": "128Gi"},
    "env": [{"name": "WANDB_MODE", "value": "offline"}],
    "volumes": [{"name": "models", "claimName": "model-cache", "mountPath": "/models"}],
    "scheduling": {"nodeSelector": {"pool": "gpu"}, "priorityClassName": "training",
                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
    "podTemplate": {"labels": {"team": "nlp"},
                    "annotations": {"example.com/owner": "nlp@example.com"},
                    "envFrom": [{"configMapRef": {"name": "proxy"}}]},
    "monitoring": {"metricsPort": 9400},
    "output": {"mergeAdapter": True, "gate": {"metric": "eval_loss", "max": 1.5},
               "oci": {"repository": "registry.example.com:5000/team/llama-sft", "tag": "v1",
                       "pushSecretRef": {"name": "push-creds"},
                       "caConfigMapRef": {"name": "registry-ca", "key": "bundle.pem"}}},
}


def _export(spec_doc: dict[str, Any] = EXPORT_SPEC, try_: int = 2,
            settings: Settings = SETTINGS) -> dict[str, Any]:
    return render.render_export_pod(JOB, api.parse_spec(spec_doc), try_, settings,
                                    "sha256:abc")


def test_golden_export_pod() -> None:
    rendered = dump({"objects": [_export()]})
    path = GOLDEN / "export-oci-merge-gpu.yaml"
    if os.environ.get("FTJOB_UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert path.exists(), f"{path} missing: run with FTJOB_UPDATE_GOLDEN=1 and review it"
    assert rendered == path.read_text(), f"{path} differs: review, then FTJOB_UPDATE_GOLDEN=1"


def test_export_pod_runs_ftjob_export_without_gpus_rendezvous_or_api_token():
    pod = _export()
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "demo-export-2" == naming.export_pod("demo", 2)
    # Indexed with the job (managed-by, job), told apart from the ranks by its role.
    assert meta["labels"] == {**naming.export_pod_labels("demo", 2), "team": "nlp"}
    assert naming.LABEL_RANK not in meta["labels"] and naming.LABEL_ATTEMPT not in meta["labels"]
    assert meta["ownerReferences"] == [render.owner_reference(JOB)]
    (container,) = spec["containers"]
    assert container["command"] == ["ftjob-export"] and "args" not in container
    assert container["image"] == SETTINGS.trainer_image and "ports" not in container
    assert container["resources"] == {"requests": {"cpu": "16", "memory": "128Gi"},
                                      "limits": {"cpu": "16", "memory": "128Gi"}}
    assert spec["restartPolicy"] == "Never"
    assert "hostname" not in spec and "subdomain" not in spec and "affinity" not in spec
    assert spec["serviceAccountName"] == "demo-trainer"
    assert spec["automountServiceAccountToken"] is False  # ftjob-export calls no API
    assert spec["securityContext"] == _pod(EXPORT_SPEC)["spec"]["securityContext"]
    assert container["securityContext"] == _pod(EXPORT_SPEC)["spec"]["containers"][0][
        "securityContext"]
    env = _env(pod)
    assert env["DS_ACCELERATOR"] == "cpu" and env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING" not in env and env["FTJOB_METRICS_PORT"] == ""
    assert env["FTJOB_ATTEMPT"] == "" and env["FTJOB_REPORTER"] == "none"
    assert env["FTJOB_JOB_FILE"] == "/etc/ftjob/job.json" and env["FTJOB_OUTPUT_DIR"] == "/output"
    assert env["FTJOB_JOB_DIGEST"] == "sha256:abc"
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert env["WANDB_MODE"] == "offline"
    assert container["envFrom"] == [{"configMapRef": {"name": "proxy"}}]
    assert container["terminationMessagePath"] == "/dev/termination-log"


def test_export_pod_mounts_the_job_file_output_user_volumes_credentials_and_ca():
    pod = _export()
    (container,) = pod["spec"]["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert set(mounts) == set(volumes) == {"job-spec", "output", "tmp", "home", "models",
                                           "push-config", "registry-ca"}
    assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "demo-output"}
    assert volumes["job-spec"]["configMap"] == {"name": "demo-job"}
    assert mounts["models"] == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert volumes["push-config"]["secret"] == {
        "secretName": "push-creds", "defaultMode": 0o440,
        "items": [{"key": ".dockerconfigjson", "path": ".dockerconfigjson"}]}
    assert volumes["registry-ca"]["configMap"] == {
        "name": "registry-ca", "items": [{"key": "bundle.pem", "path": "bundle.pem"}]}
    for name, path in (("push-config", "/etc/ftjob-push"),
                       ("registry-ca", "/etc/ftjob-registry-ca")):
        assert mounts[name] == {"name": name, "readOnly": True, "mountPath": path}
    env = _env(pod)
    assert env["FTJOB_PUSH_CONFIG"] == "/etc/ftjob-push/.dockerconfigjson"
    assert env["FTJOB_REGISTRY_CA"] == "/etc/ftjob-registry-ca/bundle.pem"


def test_export_pod_without_credentials_or_ca_sets_their_variables_empty():
    spec_doc = dict(EXPORT_SPEC, output={"oci": {"repository": "registry.example.com/a/b"}},
                    storage={"existingClaim": "shared"})
    pod = _export(spec_doc)
    env = _env(pod)
    assert env["FTJOB_PUSH_CONFIG"] == "" and env["FTJOB_REGISTRY_CA"] == ""
    names = {v["name"] for v in pod["spec"]["volumes"]}
    assert not names & {"push-config", "registry-ca"}
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "output")
    assert mount == {"name": "output", "mountPath": "/output", "subPath": "demo"}


def test_export_pod_takes_the_jobs_scheduling_and_pull_secrets():
    settings = Settings(trainer_image="registry.example/ftjob/trainer:1.0",
                        trainer_image_pull_secrets=("regcred",))
    spec = _export(settings=settings)["spec"]
    assert spec["nodeSelector"] == {"pool": "gpu"} and spec["priorityClassName"] == "training"
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
    assert _export(dict(EXPORT_SPEC, scheduling={"affinity": own}))["spec"]["affinity"] == own


def test_export_pod_passes_the_kubernetes_schema():
    kubernetes_validate.validate(_export(), "1.30", strict=True)
