"""The catalogue of invalid manifests: each breaks a valid job in one way a tired user would,
and the error must name the exact field path (and say something actionable)."""

from __future__ import annotations

import copy

import pytest

from ftjob_api.problems import errors
from ftjob_api.validation import validate_document

DELETE = object()


def merge(base: dict, patch: dict) -> dict:
    """Deep-merge `patch` into a copy of `base`; DELETE removes a key."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def ta(**args):
    return {"spec": {"trainingArguments": args}}


LR = {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}


def hp(space, **fields):
    return {"spec": {"hyperparameterSearch": {"trials": 4, "space": space, **fields}}}


CATALOG = [
    # --- trainingArguments: names
    ("ta-typo", ta(lerning_rate=1e-4), "spec.trainingArguments.lerning_rate",
     "unknown field; did you mean learning_rate?"),
    ("ta-typo-batch", ta(per_device_train_batchsize=8),
     "spec.trainingArguments.per_device_train_batchsize", "did you mean per_device_train_batch_size?"),
    ("ta-renamed-evaluation-strategy", ta(evaluation_strategy="epoch"),
     "spec.trainingArguments.evaluation_strategy", "eval_strategy"),
    ("ta-renamed-warmup-ratio", ta(warmup_ratio=0.1), "spec.trainingArguments.warmup_ratio",
     "warmup_steps"),
    ("ta-managed-output-dir", ta(output_dir="/tmp/out"), "spec.trainingArguments.output_dir",
     "managed by ftjob"),
    ("ta-managed-resume", ta(resume_from_checkpoint="/out/checkpoint-5"),
     "spec.trainingArguments.resume_from_checkpoint", "newest complete checkpoint"),
    ("ta-managed-deepspeed", ta(deepspeed="ds.json"), "spec.trainingArguments.deepspeed",
     "spec.deepspeed"),
    ("ta-managed-local-rank", ta(local_rank=0), "spec.trainingArguments.local_rank", "torchrun"),
    ("ta-managed-hub-token", ta(hub_token="hf_abc"), "spec.trainingArguments.hub_token",
     "hfTokenSecretRef"),
    ("ta-seq2seq-only", ta(predict_with_generate=True),
     "spec.trainingArguments.predict_with_generate", "only to task seq2seq"),
    # --- trainingArguments: values
    ("ta-string-number", ta(num_train_epochs="three"), "spec.trainingArguments.num_train_epochs",
     "expected a number"),
    ("ta-bool-number", ta(learning_rate=True), "spec.trainingArguments.learning_rate",
     "expected a number"),
    ("ta-float-int", ta(per_device_train_batch_size=8.5),
     "spec.trainingArguments.per_device_train_batch_size", "expected an integer"),
    ("ta-enum", ta(lr_scheduler_type="cosin"), "spec.trainingArguments.lr_scheduler_type",
     "did you mean cosine?"),
    ("ta-enum-eval", ta(eval_strategy="epochs"), "spec.trainingArguments.eval_strategy",
     "did you mean epoch?"),
    ("ta-minimum", ta(per_device_train_batch_size=0),
     "spec.trainingArguments.per_device_train_batch_size", "at least 1"),
    ("ta-union-type", ta(report_to=5), "spec.trainingArguments.report_to", "a list or a string"),
    # --- trainingArguments: cross-field rules
    ("ta-fp16-and-bf16", ta(fp16=True, bf16=True), "spec.trainingArguments.bf16",
     "cannot both be true"),
    ("ta-fp16-on-cpu", {"spec": {"trainingArguments": {"fp16": True},
                                 "resources": {"gpusPerNode": 0}}},
     "spec.trainingArguments.fp16", "needs a GPU"),
    ("ta-tf32-on-cpu", {"spec": {"trainingArguments": {"tf32": True},
                                 "resources": {"gpusPerNode": 0}}},
     "spec.trainingArguments.tf32", "gpusPerNode is 0"),
    ("ta-load-best-without-eval", ta(load_best_model_at_end=True, eval_strategy="no"),
     "spec.trainingArguments.load_best_model_at_end", "set eval_strategy"),
    ("ta-load-best-mismatch", ta(load_best_model_at_end=True, eval_strategy="steps",
                                 save_strategy="epoch", eval_steps=10),
     "spec.trainingArguments.load_best_model_at_end", "to match"),
    ("ta-load-best-save-steps", ta(load_best_model_at_end=True, eval_strategy="steps",
                                   save_strategy="steps", eval_steps=30, save_steps=100),
     "spec.trainingArguments.save_steps", "multiple of eval_steps (30)"),
    ("ta-eval-without-data", {"spec": {"dataset": {"files": {"validation": DELETE}}}},
     "spec.trainingArguments.eval_strategy", "no evaluation data"),
    ("ta-no-training", ta(num_train_epochs=0, max_steps=-1),
     "spec.trainingArguments.num_train_epochs", "no training would happen"),
    # --- task, model, dataset
    ("task-typo", {"spec": {"task": "classification"}}, "spec.task", "sequence-classification"),
    ("task-missing", {"spec": {"task": DELETE}}, "spec.task", "required field is missing"),
    ("model-both", {"spec": {"model": {"name": "bert-base-uncased", "path": "/models/bert"}}},
     "spec.model", "exactly one of `name`"),
    ("model-neither", {"spec": {"model": {"name": DELETE}}}, "spec.model", "exactly one of"),
    ("model-revision-with-path", {"spec": {"model": {"name": DELETE, "path": "/m",
                                                     "revision": "v1"}}},
     "spec.model", "`revision` applies only"),
    ("model-typo", {"spec": {"model": {"paht": "/m"}}}, "spec.model.paht", "did you mean path?"),
    ("dataset-both", {"spec": {"dataset": {"name": "klue"}}}, "spec.dataset", "exactly one of"),
    ("dataset-txt-file", {"spec": {"dataset": {"files": {"train": "/data/train.txt"}}}},
     "spec.dataset.files.train", "unsupported file type '.txt'"),
    ("dataset-mixed-formats", {"spec": {"dataset": {"files": {"train": "/data/train.csv"}}}},
     "spec.dataset.files", "share one format"),
    ("dataset-eval-fraction-range", {"spec": {"dataset": {"evalFraction": 1.5}}},
     "spec.dataset.evalFraction", "less than 1"),
    ("dataset-eval-fraction-and-split", {"spec": {"dataset": {"evalFraction": 0.1,
                                                              "evalSplit": "validation"}}},
     "spec.dataset", "not both"),
    ("dataset-seq2seq-target", {"spec": {"task": "seq2seq"}}, "spec.dataset.targetColumn",
     "required for task seq2seq"),
    ("dataset-target-not-seq2seq", {"spec": {"dataset": {"targetColumn": "summary"}}},
     "spec.dataset.targetColumn", "only to task seq2seq"),
    ("dataset-max-length", {"spec": {"dataset": {"maxLength": 0}}}, "spec.dataset.maxLength",
     "greater than or equal to 8"),
    # --- resources, storage, deepspeed, peft
    ("resources-nodes-zero", {"spec": {"resources": {"nodes": 0}}}, "spec.resources.nodes",
     "greater than or equal to 1"),
    ("resources-negative-gpus", {"spec": {"resources": {"gpusPerNode": -1}}},
     "spec.resources.gpusPerNode", "greater than or equal to 0"),
    ("resources-typo", {"spec": {"resources": {"gpuPerNode": 2}}}, "spec.resources.gpuPerNode",
     "did you mean gpusPerNode?"),
    ("resources-memory-unit", {"spec": {"resources": {"memory": "64GB"}}},
     "spec.resources.memory", "Gi, not GB"),
    ("resources-procs-over-gpus", {"spec": {"resources": {"gpusPerNode": 2, "procsPerNode": 4}}},
     "spec.resources.procsPerNode", "one process per GPU"),
    ("storage-multinode-rwo", {"spec": {"resources": {"nodes": 2},
                                        "storage": {"accessModes": ["ReadWriteOnce"]}}},
     "spec.storage.accessModes", "ReadWriteMany"),
    ("storage-existing-with-modes", {"spec": {"storage": {"existingClaim": "data",
                                                          "accessModes": ["ReadWriteMany"]}}},
     "spec.storage", "existingClaim"),
    ("storage-reclaim-policy", {"spec": {"storage": {"reclaimPolicy": "Keep"}}},
     "spec.storage.reclaimPolicy", "'Retain' or 'Delete'"),
    ("deepspeed-stage-range", {"spec": {"deepspeed": {"zeroStage": 4}}},
     "spec.deepspeed.zeroStage", "less than or equal to 3"),
    ("deepspeed-two-sources", {"spec": {"deepspeed": {"zeroStage": 2, "configMapRef":
                                                      {"name": "ds", "key": "ds.json"}}}},
     "spec.deepspeed", "exactly one of"),
    ("deepspeed-offload-params-stage2", {"spec": {"deepspeed": {"zeroStage": 2,
                                                                "offloadParams": True}}},
     "spec.deepspeed", "zeroStage: 3"),
    ("deepspeed-offload-on-cpu", {"spec": {"deepspeed": {"zeroStage": 2, "offloadOptimizer": True},
                                           "resources": {"gpusPerNode": 0}}},
     "spec.deepspeed.offloadOptimizer", "nothing to offload"),
    ("peft-rank-zero", {"spec": {"peft": {"r": 0}}}, "spec.peft.r", "greater than or equal to 1"),
    ("peft-hf-name", {"spec": {"peft": {"lora_alpha": 32}}}, "spec.peft.lora_alpha",
     "did you mean alpha?"),
    ("restart-negative", {"spec": {"restartPolicy": {"maxRestarts": -1}}},
     "spec.restartPolicy.maxRestarts", "greater than or equal to 0"),
    ("clean-pod-policy", {"spec": {"cleanPodPolicy": "Finished"}}, "spec.cleanPodPolicy",
     "'None', 'Running' or 'All'"),
    ("deadline-zero", {"spec": {"activeDeadlineSeconds": 0}}, "spec.activeDeadlineSeconds",
     "greater than or equal to 1"),
    ("toleration-effect", {"spec": {"scheduling": {"tolerations": [{"key": "gpu",
                                                                    "effect": "NoScheduled"}]}}},
     "spec.scheduling.tolerations[0].effect", "NoSchedule"),
    # --- env
    ("env-reserved", {"spec": {"env": [{"name": "MASTER_ADDR", "value": "x"}]}},
     "spec.env[0].name", "reserved"),
    ("env-hf-token", {"spec": {"env": [{"name": "HF_TOKEN", "value": "hf_x"}]}},
     "spec.env[0].name", "hfTokenSecretRef"),
    ("env-duplicate", {"spec": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
     "spec.env[1].name", "set twice"),
    ("env-two-values", {"spec": {"env": [{"name": "A", "value": "1",
                                          "secretKeyRef": {"name": "s", "key": "k"}}]}},
     "spec.env[0]", "at most one"),
    # --- podTemplate
    ("pod-label-reserved", {"spec": {"podTemplate": {"labels": {"finetune.dev/rank": "0"}}}},
     "spec.podTemplate.labels[finetune.dev/rank]", "reserved"),
    ("pod-label-managed-by", {"spec": {"podTemplate": {"labels": {
        "app.kubernetes.io/managed-by": "helm"}}}},
     "spec.podTemplate.labels[app.kubernetes.io/managed-by]", "reserved"),
    ("pod-label-kueue-queue", {"spec": {"podTemplate": {"labels": {
        "kueue.x-k8s.io/queue-name": "q"}}}},
     "spec.podTemplate.labels[kueue.x-k8s.io/queue-name]", "use spec.scheduling.queueName"),
    ("pod-label-bad-value", {"spec": {"podTemplate": {"labels": {"team": "NLP research"}}}},
     "spec.podTemplate.labels[team]", "invalid value 'NLP research'"),
    ("pod-label-bad-key", {"spec": {"podTemplate": {"labels": {"Example.com/team": "nlp"}}}},
     "spec.podTemplate.labels[Example.com/team]", "DNS subdomain"),
    ("pod-annotation-reserved", {"spec": {"podTemplate": {"annotations": {
        "sub.finetune.dev/x": "y"}}}},
     "spec.podTemplate.annotations[sub.finetune.dev/x]", "reserved"),
    ("pod-annotation-kueue-count", {"spec": {"podTemplate": {"annotations": {
        "kueue.x-k8s.io/pod-group-total-count": "9"}}}},
     "spec.podTemplate.annotations[kueue.x-k8s.io/pod-group-total-count]", "reserved"),
    ("pod-runtime-class", {"spec": {"podTemplate": {"runtimeClassName": "NVIDIA"}}},
     "spec.podTemplate.runtimeClassName", "must be the name of a RuntimeClass"),
    ("pod-env-from-two-sources", {"spec": {"podTemplate": {"envFrom": [
        {"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}]}}},
     "spec.podTemplate.envFrom[0]", "exactly one of `configMapRef` or `secretRef`"),
    ("pod-env-from-reserved-prefix", {"spec": {"podTemplate": {"envFrom": [
        {"prefix": "FTJOB_X_", "configMapRef": {"name": "a"}}]}}},
     "spec.podTemplate.envFrom[0].prefix", "reserved"),
    ("pod-template-typo", {"spec": {"podTemplate": {"label": {"a": "b"}}}},
     "spec.podTemplate.label", "did you mean labels?"),
    # --- monitoring
    ("metrics-port-privileged", {"spec": {"monitoring": {"metricsPort": 80}}},
     "spec.monitoring.metricsPort", "1024-65535"),
    ("metrics-port-rendezvous", {"spec": {"monitoring": {"metricsPort": 29500}}},
     "spec.monitoring.metricsPort", "rendezvous"),
    ("progress-interval-zero", {"spec": {"monitoring": {"progressIntervalSeconds": 0}}},
     "spec.monitoring.progressIntervalSeconds", "greater than or equal to 1"),
    # --- volumes
    ("volume-reserved-name", {"spec": {"volumes": [{"name": "output", "claimName": "c",
                                                    "mountPath": "/data"}]}},
     "spec.volumes[0].name", "used by ftjob"),
    ("volume-over-output", {"spec": {"volumes": [{"name": "data", "claimName": "c",
                                                  "mountPath": "/output/data"}]}},
     "spec.volumes[0].mountPath", "overlaps ftjob's mount at /output"),
    ("volume-relative-path", {"spec": {"volumes": [{"name": "data", "claimName": "c",
                                                    "mountPath": "data"}]}},
     "spec.volumes[0].mountPath", "pattern"),
    ("volume-nested", {"spec": {"volumes": [
        {"name": "a", "claimName": "c", "mountPath": "/data"},
        {"name": "b", "claimName": "d", "mountPath": "/data/models"}]}},
     "spec.volumes[1].mountPath", "overlaps another volume's mount at /data"),
    # --- hyperparameterSearch
    ("search-typo-key", hp({"lerning_rate": LR}), "spec.hyperparameterSearch.space.lerning_rate",
     "did you mean learning_rate?"),
    ("search-managed-key", hp({"output_dir": {"type": "categorical", "choices": ["/o"]}}),
     "spec.hyperparameterSearch.space.output_dir", "managed by ftjob"),
    ("search-fixed-and-searched", hp({"learning_rate": LR}),
     "spec.hyperparameterSearch.space.learning_rate", "also fixed in trainingArguments"),
    ("search-float-for-int", hp({"per_device_train_batch_size": LR}),
     "spec.hyperparameterSearch.space.per_device_train_batch_size.type", "takes integer"),
    ("search-quoted-choice", hp({"lr_scheduler_type": {"type": "categorical",
                                                       "choices": ["linear", "cosin"]}}),
     "spec.hyperparameterSearch.space.lr_scheduler_type.choices[1]", "did you mean cosine?"),
    ("search-no-eval-data", merge(hp({"weight_decay": {"type": "float", "low": 0, "high": 0.1}}),
                                  {"spec": {"dataset": {"files": {"validation": DELETE}},
                                            "trainingArguments": {"eval_strategy": "no",
                                                                  "save_strategy": "no"}}}),
     "spec.hyperparameterSearch", "evaluation data"),
    # --- envelope
    ("name-uppercase", {"metadata": {"name": "Topics"}}, "metadata.name", "lowercase"),
    ("name-too-long", {"metadata": {"name": "a" * 41}}, "metadata.name", "at most 40"),
    ("api-version", {"apiVersion": "finetune.dev/v1"}, "apiVersion", "finetune.dev/v1alpha1"),
    ("kind", {"kind": "FinetuneJob"}, "kind", "must be FineTuneJob"),
    ("spec-typo", {"sepc": {}, "spec": DELETE}, "sepc", "unknown top-level field; did you mean spec?"),
]


def test_catalog_is_large_and_ids_are_unique():
    ids = [case[0] for case in CATALOG]
    assert len(ids) >= 30
    assert len(ids) == len(set(ids))


def test_base_job_is_valid(valid_job):
    assert validate_document(valid_job) == []


@pytest.mark.parametrize(("patch", "path", "fragment"), [c[1:] for c in CATALOG],
                         ids=[c[0] for c in CATALOG])
def test_invalid_manifest_names_the_field(valid_job, patch, path, fragment):
    problems = errors(validate_document(merge(valid_job, patch)))
    at_path = [p for p in problems if p.path == path]
    assert at_path, f"no error at {path}; got {[str(p) for p in problems]}"
    assert any(fragment in p.message for p in at_path), [str(p) for p in at_path]
