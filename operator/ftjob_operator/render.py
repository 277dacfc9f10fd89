"""Pure builders: (job, attempt, settings) -> the manifests the operator creates.

No I/O and no globals: everything comes in as arguments, so the output is golden-tested.
Manifests are plain dicts in the shape the API server stores.

Longer than 500 lines on purpose: every manifest ftjob creates is here, the rank pods and
the export pod (spec.output) included, so the pieces they share (security context,
environment, volumes, scheduling) have one definition and one set of golden files.
"""

from __future__ import annotations

import json
from typing import Any

from ftjob_api import api, contract, naming, pod_env

from .plan import JobRef  # the identity every builder takes (also `render.JobRef`)
from .settings import Settings

OUTPUT_VOLUME = contract.OUTPUT_VOLUME
JOB_FILE_VOLUME = contract.JOB_FILE_VOLUME
SHM_VOLUME = contract.SHM_VOLUME
HF_HOME = f"{contract.DEFAULT_OUTPUT_DIR}/.cache/huggingface"
TRAINER_UID = 1000
# On SIGTERM the trainer saves a checkpoint before exiting (ftjob-launch); the default 30s
# grace is too short for the weights and optimizer state of a large model.
TERMINATION_GRACE_SECONDS = 120


def owner_reference(job: JobRef) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": job.name,
        "uid": job.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(job: JobRef, name: str, labels: dict[str, str] | None = None,
          owned: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": job.namespace,
        "labels": labels if labels is not None else naming.common_labels(job.name),
    }
    if owned:
        meta["ownerReferences"] = [owner_reference(job)]
    return meta


# --------------------------------------------------------------------------- job-level objects


def render_service(job: JobRef) -> dict[str, Any]:
    """Headless Service: gives every pod `<pod>.<job>` DNS, even before it is Ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(job, naming.service(job.name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": naming.common_labels(job.name),
            "ports": [{"name": "rendezvous", "port": contract.RDZV_PORT,
                       "targetPort": contract.RDZV_PORT, "protocol": "TCP"}],
        },
    }


def render_claim(job: JobRef, spec: api.FineTuneJobSpec, raw_spec: dict[str, Any],
                 settings: Settings) -> dict[str, Any] | None:
    """The output claim, or None when the job uses `storage.existingClaim`.

    With `reclaimPolicy: Retain` the claim has no owner reference, so deleting the job
    leaves the checkpoints in place.
    """
    storage = spec.storage
    if storage.existing_claim is not None:
        return None
    size_given = "size" in (raw_spec.get("storage") or {})
    size = storage.size if size_given or settings.storage_size is None else settings.storage_size
    claim_spec: dict[str, Any] = {
        "accessModes": storage.effective_access_modes(spec.resources.nodes),
        "resources": {"requests": {"storage": size}},
    }
    storage_class = storage.storage_class_name or settings.storage_class
    if storage_class:
        claim_spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(job, naming.claim(job.name), owned=storage.reclaim_policy == "Delete"),
        "spec": claim_spec,
    }


def job_file(job: JobRef, raw_spec: dict[str, Any]) -> str:
    """The document the trainer reads: identity plus the spec exactly as stored."""
    doc = {"metadata": {"name": job.name, "namespace": job.namespace, "uid": job.uid},
           "spec": raw_spec}
    return json.dumps(doc, indent=2, sort_keys=True)


def render_config_map(job: JobRef, raw_spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(job, naming.config_map(job.name)),
        "data": {contract.JOB_FILE_NAME: job_file(job, raw_spec)},
    }


def render_service_account(job: JobRef) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(job, naming.trainer_account(job.name)),
    }


def render_role(job: JobRef) -> dict[str, Any]:
    """The trainer may read and patch the status of its own job, and nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(job, naming.trainer_account(job.name)),
        "rules": [{
            "apiGroups": [api.GROUP],
            "resources": [f"{api.PLURAL}/status"],
            "resourceNames": [job.name],
            "verbs": ["get", "patch"],
        }],
    }


def render_role_binding(job: JobRef) -> dict[str, Any]:
    name = naming.trainer_account(job.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(job, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": job.namespace}],
    }


def render_job_objects(job: JobRef, spec: api.FineTuneJobSpec, raw_spec: dict[str, Any],
                       settings: Settings) -> list[dict[str, Any]]:
    """Everything a job needs before its pods, in creation order.

    The ConfigMap comes last: once it exists, the operator knows the others do too.
    """
    objects = [
        render_service_account(job),
        render_role(job),
        render_role_binding(job),
        render_service(job),
    ]
    claim = render_claim(job, spec, raw_spec, settings)
    if claim is not None:
        objects.append(claim)
    objects.append(render_config_map(job, raw_spec))
    return objects


# --------------------------------------------------------------------------- pods


def _pod_security() -> dict[str, Any]:
    """The `restricted` Pod Security Standard, for every pod ftjob creates."""
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "fsGroup": TRAINER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        # Writable: the volumes only (output, /tmp, HOME, /dev/shm).
        "readOnlyRootFilesystem": True,
    }


def torchrun_args(job: JobRef, spec: api.FineTuneJobSpec, attempt: int, rank: int) -> list[str]:
    """Static rendezvous on rank 0; `ftjob-launch` appends the trainer entrypoint."""
    res = spec.resources
    return [
        f"--nnodes={res.nodes}",
        f"--node-rank={rank}",
        f"--nproc-per-node={res.processes_per_node}",
        f"--master-addr={naming.master_addr(job.name, attempt)}",
        f"--master-port={contract.RDZV_PORT}",
        # Static rendezvous ignores it for matching but exports it as TORCHELASTIC_RUN_ID.
        f"--rdzv-id={job.uid}-{attempt}",
    ]


def metrics_port(spec: api.FineTuneJobSpec, settings: Settings) -> int | None:
    """Rank 0's Prometheus port: the job's `monitoring.metricsPort`, else the operator's
    default; None when off (0 turns off an operator default)."""
    return pod_env.metrics_port(spec, settings.trainer_metrics_port)


def progress_interval(spec: api.FineTuneJobSpec, settings: Settings) -> int:
    return spec.monitoring.progress_interval_seconds or settings.trainer_progress_interval


# Every FTJOB_* name the trainer image reads, its training pods' and its export command's.
READ_ENV = contract.TRAINER_ENV


def _env(job: JobRef, spec: api.FineTuneJobSpec, attempt: int, settings: Settings,
         job_digest: str | None = None) -> list[dict[str, Any]]:
    config_file = None
    if spec.deepspeed is not None and spec.deepspeed.config_map_ref is not None:
        config_file = f"{contract.DEEPSPEED_CONFIG_MOUNT_DIR}/{contract.DEEPSPEED_CONFIG_FILE_NAME}"
    fixed = pod_env.trainer_env(
        spec, job_file=f"{contract.JOB_FILE_MOUNT_DIR}/{contract.JOB_FILE_NAME}",
        output_dir=contract.DEFAULT_OUTPUT_DIR, job_name=job.name, reporter="kubernetes",
        namespace=job.namespace, job_uid=job.uid, job_digest=job_digest, attempt=attempt,
        termination_log=contract.DEFAULT_TERMINATION_LOG, hf_home=HF_HOME,
        metrics_port_default=settings.trainer_metrics_port,
        progress_interval_default=progress_interval(spec, settings),
        deepspeed_config=config_file)
    return _with_user_env(spec, fixed, spec.resources.gpus_per_node > 0)


def _with_user_env(spec: api.FineTuneJobSpec, fixed: dict[str, str], gpus: bool
                   ) -> list[dict[str, Any]]:
    """`fixed` (ftjob's values), every other name the trainer reads set empty, the token, the
    GPU (or CPU) variables, then the user's `env`."""
    ours: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in fixed.items()]
    # Every other name the trainer reads, empty (= unset for the trainer): explicit env wins
    # over envFrom, so podTemplate.envFrom cannot reach them (the test hooks included). No
    # `value` key: the API server stores an empty value that way (it drops `value: ""`), so
    # the pod reads back exactly as rendered.
    named = {e["name"] for e in ours} | {v.name for v in spec.env
                                          if v.name in contract.USER_SETTABLE_ENV}
    ours += [{"name": name} for name in READ_ENV if name not in named]
    token = spec.model.hf_token_secret_ref
    if token is not None:
        # By reference only: the token never appears in the job, its ConfigMap or status.
        ours.append({"name": "HF_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": token.name, "key": token.key}}})
    if gpus:
        ours += [
            {"name": "TORCH_NCCL_ASYNC_ERROR_HANDLING", "value": "1"},
            {"name": "NCCL_SOCKET_IFNAME", "value": "^lo,docker"},
        ]
    else:
        # No GPU for a CPU job, even on a node whose container runtime hands every container
        # all GPUs unless told otherwise (the NVIDIA runtime reads this variable).
        ours += [{"name": "DS_ACCELERATOR", "value": "cpu"},
                 {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}]
    taken = {e["name"] for e in ours}
    for var in spec.env:
        # Validation already rejects these; dropping them here keeps the pod correct even
        # for a spec that bypassed it.
        if var.name in taken or contract.is_reserved_env(var.name):
            continue
        ours.append(var.model_dump(by_alias=True, exclude_none=True,
                                   include={"name", "value"}) | _env_source(var))
    return ours


def _env_source(var: api.EnvVar) -> dict[str, Any]:
    if var.secret_key_ref is not None:
        return {"valueFrom": {"secretKeyRef": var.secret_key_ref.model_dump(by_alias=True)}}
    if var.config_map_key_ref is not None:
        return {"valueFrom": {"configMapKeyRef": var.config_map_key_ref.model_dump(by_alias=True)}}
    return {}


def _resources(spec: api.FineTuneJobSpec, gpus: bool = True) -> dict[str, Any]:
    res = spec.resources
    amounts: dict[str, str] = {}
    if res.cpu:
        amounts["cpu"] = res.cpu
    if res.memory:
        amounts["memory"] = res.memory
    if gpus and res.gpus_per_node > 0:
        amounts["nvidia.com/gpu"] = str(res.gpus_per_node)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def _output_mount(spec: api.FineTuneJobSpec, job: JobRef) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": OUTPUT_VOLUME, "mountPath": contract.DEFAULT_OUTPUT_DIR}
    if spec.storage.existing_claim is not None:
        # Jobs sharing one claim each get their own folder on it.
        mount["subPath"] = job.name
    return mount


def _extra_mounts(spec: api.FineTuneJobSpec) -> list[dict[str, Any]]:
    """User volumes, and the DeepSpeed config when it comes from a ConfigMap."""
    mounts = []
    if spec.deepspeed is not None and spec.deepspeed.config_map_ref is not None:
        mounts.append({"name": contract.DEEPSPEED_CONFIG_VOLUME, "readOnly": True,
                       "mountPath": contract.DEEPSPEED_CONFIG_MOUNT_DIR})
    return mounts + _user_mounts(spec)


def _user_mounts(spec: api.FineTuneJobSpec) -> list[dict[str, Any]]:
    mounts = []
    for volume in spec.volumes:
        mount = {"name": volume.name, "mountPath": volume.mount_path, "readOnly": volume.read_only}
        if volume.sub_path:
            mount["subPath"] = volume.sub_path
        mounts.append(mount)
    return mounts


def _extra_volumes(spec: api.FineTuneJobSpec) -> list[dict[str, Any]]:
    volumes = []
    if spec.deepspeed is not None and spec.deepspeed.config_map_ref is not None:
        ref = spec.deepspeed.config_map_ref
        volumes.append({"name": contract.DEEPSPEED_CONFIG_VOLUME, "configMap": {
            "name": ref.name, "items": [{"key": ref.key, "path": contract.DEEPSPEED_CONFIG_FILE_NAME}]}})
    return volumes + _user_volumes(spec)


def _user_volumes(spec: api.FineTuneJobSpec) -> list[dict[str, Any]]:
    return [{"name": volume.name, "persistentVolumeClaim": {
        "claimName": volume.claim_name, "readOnly": volume.read_only}}
        for volume in spec.volumes]


def _env_from(spec: api.FineTuneJobSpec) -> list[dict[str, Any]]:
    return [source.model_dump(by_alias=True, exclude_defaults=True)
            for source in spec.pod_template.env_from]


def _unreserved(items: dict[str, str], reserved: frozenset[str]) -> dict[str, str]:
    return {k: v for k, v in items.items() if not naming.is_reserved_key(k, reserved)}


def _ports(spec: api.FineTuneJobSpec, rank: int, settings: Settings) -> list[dict[str, Any]]:
    ports = [{"name": "rendezvous", "containerPort": contract.RDZV_PORT, "protocol": "TCP"}]
    port = metrics_port(spec, settings)
    if port is not None and rank == 0:
        # Only rank 0 serves /metrics: a PodMonitor on this port name scrapes just it.
        ports.append({"name": contract.METRICS_PORT_NAME, "containerPort": port,
                      "protocol": "TCP"})
    return ports


def render_pod(job: JobRef, spec: api.FineTuneJobSpec, attempt: int, rank: int,
               settings: Settings, job_digest: str | None = None) -> dict[str, Any]:
    """`job_digest`: `contract.job_digest` of the job file the pod is for (FTJOB_JOB_DIGEST:
    the trainer refuses a job file that does not match it)."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _pod_meta(job, spec, attempt, rank),
            "spec": _pod_spec(job, spec, attempt, rank, settings, job_digest)}


def _pod_meta(job: JobRef, spec: api.FineTuneJobSpec, attempt: int, rank: int
              ) -> dict[str, Any]:
    return _template_meta(job, spec, naming.pod(job.name, attempt, rank),
                          naming.pod_labels(job.name, attempt, rank))


def _template_meta(job: JobRef, spec: api.FineTuneJobSpec, name: str,
                   ours: dict[str, str]) -> dict[str, Any]:
    """A pod's metadata: `spec.podTemplate`'s labels and annotations, then ftjob's labels."""
    template = spec.pod_template
    # Validation already rejects reserved keys; dropping them here keeps the pod correct
    # even for a spec that bypassed it.
    labels = {**_unreserved(template.labels, naming.RESERVED_LABELS), **ours}
    # No Kueue label on the pods of a queued job: Kueue admits its Workload (kueue.py), and
    # a queue-name label would make Kueue's pod integration queue each pod on its own.
    annotations = _unreserved(template.annotations, naming.RESERVED_ANNOTATIONS)
    meta = _meta(job, name, labels)
    if annotations:
        meta["annotations"] = annotations
    return meta


def _trainer_container(job: JobRef, spec: api.FineTuneJobSpec, attempt: int, rank: int,
                       settings: Settings, job_digest: str | None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": naming.TRAINER_CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.trainer_image_pull_policy,
        "command": ["ftjob-launch"],
        "args": torchrun_args(job, spec, attempt, rank),
        "env": _env(job, spec, attempt, settings, job_digest),
        "ports": _ports(spec, rank, settings),
        "volumeMounts": [
            {"name": JOB_FILE_VOLUME, "mountPath": contract.JOB_FILE_MOUNT_DIR, "readOnly": True},
            _output_mount(spec, job),
            {"name": SHM_VOLUME, "mountPath": contract.SHM_MOUNT_DIR},
            {"name": contract.TMP_VOLUME, "mountPath": contract.TMP_MOUNT_DIR},
            {"name": contract.HOME_VOLUME, "mountPath": contract.HOME_DIR},
            *_extra_mounts(spec),
        ],
        "terminationMessagePath": contract.DEFAULT_TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": _container_security(),
    }
    env_from = _env_from(spec)
    if env_from:
        container["envFrom"] = env_from
    resources = _resources(spec)
    if resources:
        container["resources"] = resources
    return container


def _pod_spec(job: JobRef, spec: api.FineTuneJobSpec, attempt: int, rank: int,
              settings: Settings, job_digest: str | None) -> dict[str, Any]:
    name = naming.pod(job.name, attempt, rank)
    claim_name = spec.storage.existing_claim or naming.claim(job.name)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "hostname": name,
        "subdomain": naming.service(job.name),
        "serviceAccountName": naming.trainer_account(job.name),
        "securityContext": _pod_security(),
        "containers": [_trainer_container(job, spec, attempt, rank, settings, job_digest)],
        "volumes": [
            {"name": JOB_FILE_VOLUME, "configMap": {"name": naming.config_map(job.name)}},
            {"name": OUTPUT_VOLUME, "persistentVolumeClaim": {"claimName": claim_name}},
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory",
                                              "sizeLimit": spec.resources.shm_size}},
            {"name": contract.TMP_VOLUME, "emptyDir": {}},
            {"name": contract.HOME_VOLUME, "emptyDir": {}},
            *_extra_volumes(spec),
        ],
    }
    if settings.trainer_image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.trainer_image_pull_secrets]
    _schedule(pod_spec, spec, job, attempt)
    return pod_spec


def spread_ranks(job: JobRef, attempt: int) -> dict[str, Any]:
    """The default affinity of a multi-node job: its ranks on different nodes, as
    `nodes` means. Preferred, not required: a gang that fits only by sharing a node (a
    node drained, a small cluster) still starts instead of staying Pending."""
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100,
        "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {naming.LABEL_JOB: job.name,
                                              naming.LABEL_ATTEMPT: str(attempt)}},
        },
    }]}}


def _schedule(pod_spec: dict[str, Any], spec: api.FineTuneJobSpec, job: JobRef,
              attempt: int | None) -> None:
    """Where the pod may run: the spec's scheduling fields and runtime class, when set;
    a multi-node job's ranks spread over nodes unless the spec sets its own affinity
    (`attempt` None: not a rank, no spreading)."""
    sched = spec.scheduling
    if sched.node_selector:
        pod_spec["nodeSelector"] = dict(sched.node_selector)
    if sched.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in sched.tolerations
        ]
    if sched.affinity:
        pod_spec["affinity"] = sched.affinity
    elif spec.resources.nodes > 1 and attempt is not None:
        pod_spec["affinity"] = spread_ranks(job, attempt)
    if sched.priority_class_name:
        pod_spec["priorityClassName"] = sched.priority_class_name
    if spec.pod_template.runtime_class_name:
        pod_spec["runtimeClassName"] = spec.pod_template.runtime_class_name


def render_pods(job: JobRef, spec: api.FineTuneJobSpec, attempt: int,
                settings: Settings, job_digest: str | None = None) -> list[dict[str, Any]]:
    return [render_pod(job, spec, attempt, rank, settings, job_digest)
            for rank in range(spec.resources.nodes)]


# --------------------------------------------------------------------------- the export pod


def export_env(spec: api.FineTuneJobSpec, goodput: dict[str, Any] | None = None
               ) -> dict[str, str]:
    """The export pod's own files: FTJOB_PUSH_CONFIG and FTJOB_REGISTRY_CA, each present
    only when `spec.output.oci` names its Secret or ConfigMap; FTJOB_GOODPUT, the job's
    status.goodput as training ended (the model card reports it)."""
    oci = spec.output.oci if spec.output is not None else None
    env = {}
    if goodput:
        env[contract.ENV_GOODPUT] = json.dumps(goodput, sort_keys=True, separators=(",", ":"))
    if oci is not None and oci.push_secret_ref is not None:
        env[contract.ENV_PUSH_CONFIG] = f"{contract.PUSH_CONFIG_MOUNT_DIR}/{contract.PUSH_CONFIG_KEY}"
    if oci is not None and oci.ca_config_map_ref is not None:
        env[contract.ENV_REGISTRY_CA] = (f"{contract.REGISTRY_CA_MOUNT_DIR}/"
                                         f"{oci.ca_config_map_ref.key}")
    return env


def _export_files(spec: api.FineTuneJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mounts, volumes) of the push credentials and the registry's CA bundle, read-only."""
    oci = spec.output.oci if spec.output is not None else None
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if oci is not None and oci.push_secret_ref is not None:
        mounts.append({"name": contract.PUSH_CONFIG_VOLUME, "readOnly": True,
                       "mountPath": contract.PUSH_CONFIG_MOUNT_DIR})
        volumes.append({"name": contract.PUSH_CONFIG_VOLUME, "secret": {
            "secretName": oci.push_secret_ref.name, "defaultMode": 0o440,
            "items": [{"key": contract.PUSH_CONFIG_KEY, "path": contract.PUSH_CONFIG_KEY}]}})
    if oci is not None and oci.ca_config_map_ref is not None:
        ref = oci.ca_config_map_ref
        mounts.append({"name": contract.REGISTRY_CA_VOLUME, "readOnly": True,
                       "mountPath": contract.REGISTRY_CA_MOUNT_DIR})
        volumes.append({"name": contract.REGISTRY_CA_VOLUME, "configMap": {
            "name": ref.name, "items": [{"key": ref.key, "path": ref.key}]}})
    return mounts, volumes


def render_export_pod(job: JobRef, spec: api.FineTuneJobSpec, try_: int, settings: Settings,
                      job_digest: str | None = None,
                      goodput: dict[str, Any] | None = None) -> dict[str, Any]:
    """The export pod of one try (`spec.output`, once training has succeeded):
    `ftjob-export` in the trainer image on the job file and output claim the ranks used,
    with the push credentials and the registry's CA mounted; no GPU, no rendezvous, and no
    API token (the operator reads its result from the termination message)."""
    fixed = pod_env.trainer_env(
        spec, job_file=f"{contract.JOB_FILE_MOUNT_DIR}/{contract.JOB_FILE_NAME}",
        output_dir=contract.DEFAULT_OUTPUT_DIR, job_name=job.name, reporter="none",
        namespace=job.namespace, job_uid=job.uid, job_digest=job_digest,
        termination_log=contract.DEFAULT_TERMINATION_LOG, hf_home=HF_HOME)
    for training_only in (contract.ENV_METRICS_PORT, contract.ENV_PROGRESS_INTERVAL):
        fixed.pop(training_only, None)
    mounts, volumes = _export_files(spec)
    container: dict[str, Any] = {
        "name": naming.TRAINER_CONTAINER,
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.trainer_image_pull_policy,
        "command": list(contract.EXPORT_COMMAND),
        "env": _with_user_env(spec, fixed | export_env(spec, goodput), gpus=False),
        "volumeMounts": [
            {"name": JOB_FILE_VOLUME, "mountPath": contract.JOB_FILE_MOUNT_DIR, "readOnly": True},
            _output_mount(spec, job),
            {"name": contract.TMP_VOLUME, "mountPath": contract.TMP_MOUNT_DIR},
            {"name": contract.HOME_VOLUME, "mountPath": contract.HOME_DIR},
            *_user_mounts(spec), *mounts],
        "terminationMessagePath": contract.DEFAULT_TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": _container_security(),
    }
    if env_from := _env_from(spec):
        container["envFrom"] = env_from
    if resources := _resources(spec, gpus=False):
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": naming.trainer_account(job.name),
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(),
        "containers": [container],
        "volumes": [
            {"name": JOB_FILE_VOLUME, "configMap": {"name": naming.config_map(job.name)}},
            {"name": OUTPUT_VOLUME, "persistentVolumeClaim": {
                "claimName": spec.storage.existing_claim or naming.claim(job.name)}},
            {"name": contract.TMP_VOLUME, "emptyDir": {}},
            {"name": contract.HOME_VOLUME, "emptyDir": {}},
            *_user_volumes(spec), *volumes],
    }
    if settings.trainer_image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.trainer_image_pull_secrets]
    _schedule(pod_spec, spec, job, None)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _template_meta(job, spec, naming.export_pod(job.name, try_),
                                       naming.export_pod_labels(job.name, try_)),
            "spec": pod_spec}
