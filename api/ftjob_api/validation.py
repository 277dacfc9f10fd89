"""Validate a FineTuneJob document: schema, Hugging Face arguments and cross-field rules.

`validate_document` is what `ftjob validate` and the operator both call, so a job the CLI
accepts is a job the operator accepts. It is pure: a mapping in, a list of problems out.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import pydantic

from . import api, contract, dataset_formats, naming, preference_args, training_args
from .problems import Problem


@dataclass(frozen=True)
class Allowed:
    """What the operator allows a job beyond the defaults: its settings (the chart's
    `jobPolicy` values) widen these. `ftjob validate` checks against the defaults."""

    proxy_env: bool = False  # HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY (any case)
    runtime_classes: tuple[str, ...] = ()  # `podTemplate.runtimeClassName` values
    # Prefixes of `podTemplate.annotations` keys beyond Kueue's (`DEFAULT_ANNOTATION_PREFIXES`)
    annotation_prefixes: tuple[str, ...] = ()
    # False: none of these checks (the trainer, which runs what the operator admitted).
    enforced: bool = True


# Annotation keys a job may always set: Kueue's (ftjob's own and Kueue's pod-group count stay
# reserved). Anything else can change how the pod is secured (AppArmor and seccomp profiles,
# sidecar injection), so the operator's settings must allow it.
DEFAULT_ANNOTATION_PREFIXES = ("kueue.x-k8s.io/",)
# How to allow more, named in the refusals (chart value, then the operator's variable).
ALLOW_PROXY_SETTING = "jobPolicy.allowProxyEnv (FTJOB_ALLOW_PROXY_ENV)"
RUNTIME_CLASSES_SETTING = "jobPolicy.allowedRuntimeClasses (FTJOB_ALLOWED_RUNTIME_CLASSES)"
ANNOTATION_PREFIXES_SETTING = ("jobPolicy.allowedAnnotationPrefixes "
                               "(FTJOB_ALLOWED_ANNOTATION_PREFIXES)")
DEFAULTS = Allowed()
UNCHECKED = Allowed(enforced=False)


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _model_at(loc: tuple[Any, ...]) -> type[pydantic.BaseModel] | None:
    """The pydantic model whose fields live at `loc` (to suggest names for a typo)."""
    model: Any = api.FineTuneJob
    for item in loc:
        if isinstance(item, int):
            continue
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            return None
        field = next(
            (f for n, f in model.model_fields.items() if item in (n, f.alias)), None
        )
        if field is None:
            return None
        model = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, pydantic.BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
            return arg
        inner = _unwrap(arg)
        if inner is not None and inner is not arg:
            return inner
    return annotation


def _pydantic_problem(err: dict[str, Any]) -> Problem:
    loc = tuple(err["loc"])
    path = _loc_to_path(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = [f.alias or n for n, f in parent.model_fields.items()] if parent else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        return Problem(path, f"unknown field{hint}")
    if kind == "missing":
        return Problem(path, "required field is missing")
    message = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind == "string_pattern_mismatch":
        message = _PATTERN_MESSAGES.get(str(loc[-1]), message)
    got = err.get("input")
    if not isinstance(got, (dict, list)) and "got " not in message:
        message = f"{message}, got {got!r}"
    return Problem(path or "(document)", message[0].lower() + message[1:] if message else message)


# What a pattern means, in words a user can act on (keyed by field alias).
_PATTERN_MESSAGES = {
    "name": "must be lowercase letters, digits and '-', start with a letter and end with a "
    "letter or digit",
    "cpu": "must be a Kubernetes CPU quantity such as 8, 0.5 or 500m",
    "memory": "must be a Kubernetes memory quantity such as 64Gi or 512Mi (Gi, not GB)",
    "shmSize": "must be a Kubernetes memory quantity such as 8Gi (Gi, not GB)",
    "size": "must be a Kubernetes storage quantity such as 100Gi (Gi, not GB)",
    "runtimeClassName": "must be the name of a RuntimeClass: lowercase letters, digits, '-' "
    "and '.'",
    "prefix": "must be letters, digits, '_', '-' or '.', not starting with a digit",
    "tag": "must be an image tag: letters, digits, '_', '.' and '-', not starting with '.' or "
    "'-', at most 128 characters",
}


def _check_spec_rules(spec: api.FineTuneJobSpec, allowed: Allowed) -> list[Problem]:
    problems: list[Problem] = []
    task = spec.task
    ds = spec.dataset

    if task == api.Task.SEQ2SEQ.value and ds.target_column is None:
        problems.append(
            Problem("spec.dataset.targetColumn", "required for task seq2seq (the column with "
                    "the target text)")
        )
    if task != api.Task.SEQ2SEQ.value and ds.target_column is not None:
        problems.append(Problem("spec.dataset.targetColumn", f"applies only to task seq2seq, "
                                f"not {task}"))
    if task == api.Task.CAUSAL_LM.value and ds.text_pair_column is not None:
        problems.append(Problem("spec.dataset.textPairColumn", "does not apply to task causal-lm"))
    problems.extend(_check_causal_lm_data(task, ds))

    if ds.files is not None:
        problems.extend(_check_data_files(ds.files))

    res = spec.resources
    if res.gpus_per_node > 0 and res.procs_per_node is not None and res.procs_per_node > res.gpus_per_node:
        problems.append(
            Problem("spec.resources.procsPerNode", f"{res.procs_per_node} processes cannot share "
                    f"{res.gpus_per_node} GPUs; use one process per GPU")
        )

    if spec.deepspeed is not None and res.gpus_per_node == 0:
        for field, on in (("offloadOptimizer", spec.deepspeed.offload_optimizer),
                          ("offloadParams", spec.deepspeed.offload_params)):
            if on:
                problems.append(Problem(f"spec.deepspeed.{field}", "offloading moves GPU state to "
                                        "CPU memory; with gpusPerNode 0 there is nothing to offload"))

    storage = spec.storage
    if res.nodes > 1 and storage.existing_claim is None:
        modes = storage.effective_access_modes(res.nodes)
        if "ReadWriteMany" not in modes:
            problems.append(
                Problem("spec.storage.accessModes", f"{res.nodes} nodes mount the output volume "
                        f"at once, which needs ReadWriteMany (got {', '.join(modes)})")
            )

    problems.extend(_check_env(spec, allowed))
    problems.extend(_check_pod_template(spec.pod_template, allowed))
    problems.extend(_check_monitoring(spec.monitoring))
    problems.extend(_check_volumes(spec))
    problems.extend(_check_early_stopping(spec))
    problems.extend(_check_search(spec))
    problems.extend(preference_args.check_spec(spec))
    problems.extend(api.check_output(spec))
    return problems


SEARCH = "spec.hyperparameterSearch"
# Which catalogue types each kind of searched value can fill.
_SEARCH_KINDS = {"float": {"number"}, "int": {"integer", "number"}}


def _check_search(spec: api.FineTuneJobSpec) -> list[Problem]:
    """Searched keys exist in TrainingArguments, take the drawn type, are not managed by ftjob
    and are not also fixed; the search has evaluation data to score trials with."""
    search = spec.hyperparameter_search
    if search is None:
        return []
    problems = []
    if not spec.dataset.has_eval_data:
        problems.append(Problem(SEARCH, "trials are scored on evaluation data: set "
                                "spec.dataset.files.validation, evalSplit or evalFraction"))
    if spec.early_stopping is not None:
        problems.append(Problem("spec.earlyStopping", "not with spec.hyperparameterSearch; "
                                "use its `pruner: median` to stop poor trials early"))
    if spec.deepspeed is not None:
        problems.append(Problem("spec.deepspeed", "not supported with "
                                "spec.hyperparameterSearch"))
    if search.pruner == "median" and training_args.effective(
            spec.training_arguments, "eval_strategy") in ("no", None):
        problems.append(Problem(f"{SEARCH}.pruner", "median pruning compares evaluations during "
                                "training: set trainingArguments.eval_strategy to steps or epoch"))
    catalogue = training_args.fields()
    for key, param in search.space.items():
        path = f"{SEARCH}.space.{key}"
        if key in training_args.MANAGED_KEYS:
            problems.append(Problem(path, f"managed by ftjob: {training_args.MANAGED_KEYS[key]}"))
            continue
        info = catalogue.get(key)
        if info is None:
            unknown = training_args.unknown_key(key, list(catalogue))
            problems.append(Problem(path, unknown.message))
            continue
        only = training_args.only_task(info)
        if only is not None and spec.task != only:
            problems.append(Problem(path, f"applies only to task {only} (this job is {spec.task})"))
            continue
        if key in spec.training_arguments:
            problems.append(Problem(path, f"also fixed in trainingArguments.{key}; a key is "
                                    "either fixed for every trial or searched"))
        if param.type in _SEARCH_KINDS:
            if not _SEARCH_KINDS[param.type] & set(info["types"]):
                expected = " or ".join(t for t in info["types"] if t != "null")
                problems.append(Problem(f"{path}.type", f"{key} takes {expected}, not a "
                                        f"drawn {param.type}"))
                continue
            for bound in ("low", "high"):
                value = getattr(param, bound)
                drawn = int(value) if param.type == "int" else value
                for problem in training_args.check_value(key, drawn, info):
                    problems.append(Problem(f"{path}.{bound}", problem.message))
        else:
            for i, choice in enumerate(param.choices or []):
                for problem in training_args.check_value(key, choice, info):
                    problems.append(Problem(f"{path}.choices[{i}]", problem.message))
    return problems


def _check_causal_lm_data(task: str, ds: api.DatasetSource) -> list[Problem]:
    """The causal-lm data fields: each only with the format or task it belongs to (the
    format's own entry says which columns and checks are its)."""
    return dataset_formats.check(task == api.Task.CAUSAL_LM.value, task, ds)


def _check_early_stopping(spec: api.FineTuneJobSpec) -> list[Problem]:
    """What EarlyStoppingCallback needs; eval/save strategies that match and evaluation
    data are checked with load_best_model_at_end (training_args.check_cross_fields)."""
    if spec.early_stopping is None:
        return []
    args = spec.training_arguments
    root = training_args.ROOT
    problems = []
    if args.get("load_best_model_at_end") is not True:
        problems.append(Problem(f"{root}.load_best_model_at_end", "spec.earlyStopping needs "
                                "load_best_model_at_end: true (the job ends with the best model, "
                                "not the last)"))
    if not args.get("metric_for_best_model"):
        problems.append(Problem(f"{root}.metric_for_best_model", "spec.earlyStopping needs the "
                                "metric it watches, e.g. eval_loss or eval_f1"))
    return problems


def _check_volumes(spec: api.FineTuneJobSpec) -> list[Problem]:
    problems = []
    names: set[str] = set()
    paths: set[str] = set()
    for i, volume in enumerate(spec.volumes):
        if volume.name in contract.RESERVED_VOLUME_NAMES or volume.name in names:
            why = "used by ftjob" if volume.name in contract.RESERVED_VOLUME_NAMES else "used twice"
            problems.append(Problem(f"spec.volumes[{i}].name", f"{volume.name!r} is {why}"))
        names.add(volume.name)
        path = str(PurePosixPath(volume.mount_path))
        clash = next((r for r in (*contract.RESERVED_MOUNT_PATHS, *paths)
                      if _nested(path, r)), None)
        if clash is not None:
            owner = "ftjob's" if clash in contract.RESERVED_MOUNT_PATHS else "another volume's"
            problems.append(Problem(f"spec.volumes[{i}].mountPath",
                                    f"{path} overlaps {owner} mount at {clash}"))
        paths.add(path)
    return problems


def _nested(a: str, b: str) -> bool:
    """True when one path is the other or lies inside it."""
    pa, pb = PurePosixPath(a), PurePosixPath(b)
    return pa == pb or pb in pa.parents or pa in pb.parents


def _check_data_files(files: api.DataFiles) -> list[Problem]:
    problems = []
    suffixes: dict[str, str] = {}
    for split in ("train", "validation", "test"):
        value = getattr(files, split)
        if value is None:
            continue
        suffix = PurePosixPath(value).suffix.lower()
        if suffix not in api.DATA_FILE_SUFFIXES:
            problems.append(
                Problem(f"spec.dataset.files.{split}", f"unsupported file type {suffix or '(none)'!r} "
                        f"in {value!r}; use {', '.join(api.DATA_FILE_SUFFIXES)}")
            )
        else:
            suffixes[split] = ".json" if suffix == ".jsonl" else suffix
    if len(set(suffixes.values())) > 1:
        problems.append(
            Problem("spec.dataset.files", "all files must share one format (json/jsonl, csv or "
                    f"parquet), got {', '.join(f'{k}={v}' for k, v in suffixes.items())}")
        )
    return problems


def _check_env(spec: api.FineTuneJobSpec, allowed: Allowed) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for i, var in enumerate(spec.env):
        path = f"spec.env[{i}].name"
        guarded = contract.guarded_env(var.name, allowed.proxy_env) if allowed.enforced else None
        if contract.is_reserved_env(var.name):
            why = ("use spec.model.hfTokenSecretRef" if var.name == "HF_TOKEN"
                   else "set by ftjob for torchrun, NCCL or the trainer")
            problems.append(Problem(path, f"{var.name} is reserved ({why})"))
        elif guarded is not None:
            problems.append(Problem(path, _guarded_message(var.name, guarded)))
        if var.name in seen:
            problems.append(Problem(path, f"{var.name} is set twice"))
        seen.add(var.name)
    return problems


# Kubernetes label and annotation syntax (apimachinery's IsQualifiedName, IsValidLabelValue).
_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
ANNOTATIONS_MAX_BYTES = 256 * 1024


def _key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return (f"{key!r}: the part before '/' must be a DNS subdomain (lowercase letters, "
                "digits, '-' and '.'), at most 253 characters")
    if not name or len(name) > 63 or not _NAME.fullmatch(name):
        return (f"{key!r}: the name must be at most 63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit")
    return None


def _guarded_message(name: str, why: str) -> str:
    allow = (f"; the operator setting {ALLOW_PROXY_SETTING} allows proxies"
             if name.upper() in contract.PROXY_ENV else "")
    return f"{name} is reserved: {why}{allow}"


def _check_pod_template(template: api.PodTemplate, allowed: Allowed) -> list[Problem]:
    root = "spec.podTemplate"
    problems = _check_pod_security(template, allowed)
    for kind, items, reserved in (("labels", template.labels, naming.RESERVED_LABELS),
                                  ("annotations", template.annotations,
                                   naming.RESERVED_ANNOTATIONS)):
        for key, value in items.items():
            path = f"{root}.{kind}[{key}]"
            why = _key_problem(key)
            if why is not None:
                problems.append(Problem(path, f"invalid key {why}"))
            elif naming.is_reserved_key(key, reserved):
                hint = ("; use spec.scheduling.queueName" if key == naming.LABEL_KUEUE_QUEUE
                        else "")
                problems.append(Problem(path, f"{key} is reserved (set by ftjob){hint}"))
            if kind == "labels" and (len(value) > 63 or value and not _NAME.fullmatch(value)):
                problems.append(Problem(path, f"invalid value {value!r}: at most 63 letters, "
                                        "digits, '-', '_' or '.', starting and ending with a "
                                        "letter or digit"))
    size = sum(len(k.encode()) + len(v.encode()) for k, v in template.annotations.items())
    if size > ANNOTATIONS_MAX_BYTES:
        problems.append(Problem(f"{root}.annotations", f"{size} bytes in all; Kubernetes "
                                f"allows {ANNOTATIONS_MAX_BYTES}"))
    for i, source in enumerate(template.env_from):
        problems.extend(_check_env_from(f"{root}.envFrom[{i}]", source, allowed))
    return problems


def _check_env_from(path: str, source: api.EnvFromSource, allowed: Allowed) -> list[Problem]:
    """A prefix that could make a reserved or guarded name is refused. Without a prefix the
    keys are whatever the ConfigMap or Secret holds when a pod starts, which no check here
    can see: a warning says so (docs/rbac.md)."""
    prefix = source.prefix
    if not prefix:
        return [Problem(path, "no prefix: every key of the "
                        f"{'Secret' if source.secret_ref else 'ConfigMap'} becomes a variable "
                        "unchecked (set a prefix such as WANDB_ to have the names checked)",
                        "warning")]
    if prefix.startswith(contract.RESERVED_ENV_PREFIX):
        return [Problem(f"{path}.prefix", f"{prefix} makes {contract.RESERVED_ENV_PREFIX}* "
                        "variables, which are reserved (set by ftjob for the trainer)")]
    made = contract.guarded_env_from_prefix(prefix, allowed.proxy_env)
    if made is not None and allowed.enforced:
        why = contract.guarded_env(made) or ""
        return [Problem(f"{path}.prefix", f"{prefix} can make {made}, which is reserved: "
                        f"{why}" + (f"; the operator setting {ALLOW_PROXY_SETTING} allows "
                                    "proxies" if made.upper() in contract.PROXY_ENV else ""))]
    return []


def _check_pod_security(template: api.PodTemplate, allowed: Allowed) -> list[Problem]:
    """RuntimeClasses and annotations change how a pod is isolated and secured: only those
    the operator's settings allow."""
    if not allowed.enforced:
        return []
    problems = []
    runtime = template.runtime_class_name
    if runtime is not None and runtime not in allowed.runtime_classes:
        problems.append(Problem("spec.podTemplate.runtimeClassName",
                                f"RuntimeClass {runtime!r} is not allowed; the operator setting "
                                f"{RUNTIME_CLASSES_SETTING} would allow it"))
    prefixes = (*DEFAULT_ANNOTATION_PREFIXES, *allowed.annotation_prefixes)
    for key in template.annotations:
        if naming.is_reserved_key(key, naming.RESERVED_ANNOTATIONS) or _key_problem(key):
            continue  # refused as reserved or malformed below
        if not key.startswith(prefixes):
            problems.append(Problem(f"spec.podTemplate.annotations[{key}]",
                                    f"{key} is not allowed: pod annotations can change how the "
                                    "pod is secured; the operator setting "
                                    f"{ANNOTATION_PREFIXES_SETTING} would allow it"))
    return problems


def _check_monitoring(monitoring: api.Monitoring) -> list[Problem]:
    port = monitoring.metrics_port
    why = contract.metrics_port_problem(port) if port else None
    return [Problem("spec.monitoring.metricsPort", why)] if why else []


def validate_spec(spec_doc: dict[str, Any], prefix: str = "spec",
                  allowed: Allowed = DEFAULTS) -> list[Problem]:
    """Validate a bare spec mapping (the operator's entry point)."""
    try:
        spec = api.FineTuneJobSpec.model_validate(spec_doc)
    except pydantic.ValidationError as exc:
        problems = [_pydantic_problem({**e, "loc": (prefix, *e["loc"])}) for e in exc.errors()]
        # Keys and types of trainingArguments can still be checked when the rest is broken.
        if isinstance(spec_doc, dict) and isinstance(spec_doc.get("trainingArguments"), dict):
            task = spec_doc.get("task") if isinstance(spec_doc.get("task"), str) else None
            problems += training_args.check_keys_and_types(spec_doc["trainingArguments"], task)
        return problems
    return check_parsed_spec(spec, allowed)


def check_parsed_spec(spec: api.FineTuneJobSpec, allowed: Allowed = DEFAULTS) -> list[Problem]:
    args = spec.training_arguments
    problems = training_args.check_keys_and_types(args, spec.task)
    problems += training_args.check_cross_fields(
        args,
        has_eval_data=spec.dataset.has_eval_data,
        gpus_per_node=spec.resources.gpus_per_node,
    )
    problems += _check_spec_rules(spec, allowed)
    return problems


def validate_document(doc: Any, allowed: Allowed = DEFAULTS) -> list[Problem]:
    """Validate one whole FineTuneJob manifest (apiVersion, kind, metadata, spec); `allowed`:
    what the operator's settings allow beyond the defaults."""
    if not isinstance(doc, dict):
        return [Problem("(document)", f"expected a mapping, got {type(doc).__name__}")]
    problems: list[Problem] = []
    if doc.get("apiVersion") != api.API_VERSION:
        problems.append(Problem("apiVersion", f"must be {api.API_VERSION}, got "
                                f"{doc.get('apiVersion')!r}"))
    if doc.get("kind") != api.KIND:
        problems.append(Problem("kind", f"must be {api.KIND}, got {doc.get('kind')!r}"))
    try:
        api.ObjectMeta.model_validate(doc.get("metadata"))
    except pydantic.ValidationError as exc:
        problems += [_pydantic_problem({**e, "loc": ("metadata", *e["loc"])}) for e in exc.errors()]
    extra = sorted(set(doc) - {"apiVersion", "kind", "metadata", "spec", "status"})
    for key in extra:
        close = difflib.get_close_matches(key, ["apiVersion", "kind", "metadata", "spec"], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        problems.append(Problem(key, f"unknown top-level field{hint}"))
    if "spec" not in doc:
        problems.append(Problem("spec", "required field is missing"))
    elif not isinstance(doc["spec"], dict):
        problems.append(Problem("spec", f"expected a mapping, got {type(doc['spec']).__name__}"))
    else:
        problems += validate_spec(doc["spec"], allowed=allowed)
    return problems
