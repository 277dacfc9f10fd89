"""`spec.trainingArguments`: Hugging Face `TrainingArguments`, checked before any pod starts.

The field catalogue (names, JSON types, enum values, help text) is generated from the
`TrainingArguments` / `Seq2SeqTrainingArguments` dataclasses of the pinned transformers
and TRL's `DPOConfig` (task preference, `preference_args`) by `generate_catalog()` and
committed as `data/training_arguments.json`, so the operator
image validates exactly like `ftjob validate` without importing torch. A unit test
regenerates it from the installed transformers and fails when it drifts.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any

from . import preference_args
from .problems import Problem

CATALOG_PATH = Path(__file__).parent / "data" / "training_arguments.json"
ROOT = "spec.trainingArguments"

# Keys ftjob sets itself. Each says why and what to use instead.
MANAGED_KEYS: dict[str, str] = {
    "output_dir": "the output directory is the job's volume (mounted by ftjob); size or reuse "
    "it with spec.storage",
    "resume_from_checkpoint": "ftjob resumes from the newest complete checkpoint on its own",
    "deepspeed": "use spec.deepspeed (zeroStage, offload switches or configMapRef)",
    "local_rank": "set by torchrun for each process",
    "ddp_backend": "chosen from spec.resources.gpusPerNode (nccl on GPUs, gloo on CPU)",
    "use_cpu": "derived from spec.resources.gpusPerNode (0 means CPU)",
    "fsdp": "FSDP is not supported; use spec.deepspeed for sharded training",
    "fsdp_config": "FSDP is not supported; use spec.deepspeed for sharded training",
    "parallelism_config": "parallelism is set by spec.resources and spec.deepspeed",
    "save_on_each_node": "every node writes to the same shared volume",
    "hub_token": "tokens must not appear in the spec; use spec.model.hfTokenSecretRef",
    "enable_jit_checkpoint": "ftjob always checkpoints on SIGTERM (preemption, suspend)",
    "do_train": "ftjob always trains",
    "do_eval": "evaluation runs when the dataset has evaluation data",
    "do_predict": "the test split runs when spec.dataset has one",
}

# Keys removed or renamed in recent transformers releases (what users copy from old posts).
RENAMED_KEYS: dict[str, str] = {
    "evaluation_strategy": "renamed to `eval_strategy` in transformers 4.46",
    "per_gpu_train_batch_size": "renamed to `per_device_train_batch_size`",
    "per_gpu_eval_batch_size": "renamed to `per_device_eval_batch_size`",
    "no_cuda": "removed; ftjob derives the device from spec.resources.gpusPerNode",
    "warmup_ratio": "removed in transformers 5; `warmup_steps` takes a ratio when below 1",
    "overwrite_output_dir": "removed in transformers 5; ftjob resumes from the newest "
    "complete checkpoint instead of overwriting",
    "logging_dir": "removed in transformers 5; logs go under the job's output directory",
    "include_inputs_for_metrics": "renamed to `include_for_metrics: [inputs]`",
    "push_to_hub_model_id": "renamed to `hub_model_id`",
    "push_to_hub_organization": "renamed to `hub_model_id` (as `org/name`)",
    "push_to_hub_token": "renamed to `hub_token`, which ftjob manages: use "
    "spec.model.hfTokenSecretRef",
    "group_by_length": "renamed to `train_sampling_strategy: group_by_length`",
    "save_safetensors": "removed in transformers 5; checkpoints are always safetensors",
    "fp16_backend": "removed; mixed precision goes through accelerate",
    "half_precision_backend": "removed in transformers 5; mixed precision goes through accelerate",
    "use_mps_device": "removed; ftjob runs on CUDA GPUs or CPU",
    "dispatch_batches": "moved into `accelerator_config`",
    "split_batches": "moved into `accelerator_config`",
}

# Minimums Trainer would otherwise enforce only once a pod is running (or never).
MINIMUMS: dict[str, tuple[float, bool]] = {  # name -> (bound, exclusive)
    "per_device_train_batch_size": (1, False),
    "per_device_eval_batch_size": (1, False),
    "gradient_accumulation_steps": (1, False),
    "learning_rate": (0, False),
    "num_train_epochs": (0, False),
    "weight_decay": (0, False),
    "warmup_steps": (0, False),
    "max_grad_norm": (0, False),
    "logging_steps": (0, True),
    "save_steps": (0, True),
    "eval_steps": (0, True),
    "save_total_limit": (1, False),
    "dataloader_num_workers": (0, False),
    "label_smoothing_factor": (0, False),
    "eval_accumulation_steps": (1, False),
    "beta": (0, True),  # DPOConfig: the reward scale; 0 makes every pair's loss ln 2
}


# --------------------------------------------------------------------------- catalogue


def _json_types(tp: Any) -> tuple[set[str], list[str] | None]:
    """Map a dataclass annotation to the JSON types it accepts, plus enum choices."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        kinds: set[str] = set()
        choices: list[str] | None = None
        for arg in typing.get_args(tp):
            k, c = _json_types(arg)
            kinds |= k
            choices = choices or c
        return kinds, choices
    if origin is typing.Literal:
        values = typing.get_args(tp)
        return {_literal_kind(v) for v in values}, [v for v in values if isinstance(v, str)] or None
    if tp is type(None):
        return {"null"}, None
    if tp is bool:
        return {"boolean"}, None
    if tp is int:
        return {"integer"}, None
    if tp is float:
        return {"number"}, None
    if tp is str:
        return {"string"}, None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"string"}, [str(e.value) for e in tp]
    if tp is dict or origin is dict:
        return {"object"}, None
    if tp is list or origin is list:
        return {"array"}, None
    if isinstance(tp, type) and issubclass(tp, Path):
        return {"string"}, None
    # Python objects (GenerationConfig, ParallelismConfig): only a path string makes sense
    return {"string"}, None


def _literal_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "string"


def _first_sentences(text: str, limit: int = 240) -> str:
    """Short help: CRDs carry every description and kubectl's apply annotation is limited."""
    text = " ".join(text.split()).replace("%%", "%")
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = cut.rfind(". ")
    return cut[: end + 1] if end > 60 else cut.rstrip() + "..."


def generate_catalog() -> dict[str, Any]:
    """Build the catalogue from the installed transformers (imports torch: slow, build-time)."""
    import transformers
    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    hints = typing.get_type_hints(Seq2SeqTrainingArguments)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(Seq2SeqTrainingArguments):
        if not f.init:
            continue
        fields[f.name] = {**_describe(f, hints), "seq2seqOnly": f.name not in base,
                          "preferenceOnly": False}
    for name, entry in preference_args.dpo_fields(set(fields), _describe).items():
        fields[name] = {**entry, "seq2seqOnly": False}
    return {"transformers": transformers.__version__, "trl": preference_args.trl_version(),
            "fields": fields}


def _describe(f: Any, hints: dict[str, Any]) -> dict[str, Any]:
    """A dataclass field's catalogue entry: JSON types, choices, default, short help."""
    kinds, choices = _json_types(hints.get(f.name, f.type))
    meta_choices = f.metadata.get("choices")
    if meta_choices:
        choices = [str(c) for c in meta_choices]
    default = f.default
    if default is dataclasses.MISSING or isinstance(default, enum.Enum):
        default = default.value if isinstance(default, enum.Enum) else None
    if not isinstance(default, (bool, int, float, str, type(None))):
        default = None
    entry = {"types": sorted(kinds), "choices": choices, "default": default,
             "help": _first_sentences(f.metadata.get("help", ""))}
    item = _list_item_kind(hints.get(f.name, f.type))
    if item not in (None, "string"):
        entry["items"] = item  # e.g. DPOConfig's loss_weights: a list of numbers
    return entry


def _list_item_kind(tp: Any) -> str | None:
    """The JSON kind of a `list[X]` annotation's items (inside an optional), or None."""
    for arg in (typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType)
                else (tp,)):
        if typing.get_origin(arg) is list and typing.get_args(arg):
            kinds, _ = _json_types(typing.get_args(arg)[0])
            return next(iter(kinds)) if len(kinds) == 1 else None
    return None


def write_catalog(path: Path = CATALOG_PATH) -> None:
    path.write_text(json.dumps(generate_catalog(), indent=1, sort_keys=True) + "\n")


@functools.lru_cache(maxsize=1)
def catalog() -> dict[str, Any]:
    return json.loads(CATALOG_PATH.read_text())


def fields() -> dict[str, dict[str, Any]]:
    return catalog()["fields"]


# --------------------------------------------------------------------------- checking


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


def _matches(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "null":
        return value is None
    return False


_KIND_WORDS = {
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _is_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_value(key: str, value: Any, info: dict[str, Any]) -> list[Problem]:
    path = f"{ROOT}.{key}"
    kinds = info["types"]
    if not any(_matches(value, k) for k in kinds):
        expected = " or ".join(_KIND_WORDS[k] for k in kinds if k != "null")
        hint = ""
        if isinstance(value, str) and {"number", "integer"} & set(kinds) and _is_numeric(value):
            hint = " (remove the quotes: YAML reads quoted values as strings)"
        elif isinstance(value, str) and kinds == ["array"]:
            hint = f" (write a list: [{value}])"
        return [Problem(path, f"expected {expected}, got {_type_name(value)} {value!r}{hint}")]
    problems = []
    choices = info.get("choices")
    items = value if isinstance(value, list) else [value]  # a list's items (loss_type)
    for item in items if choices else []:
        if isinstance(item, str) and item not in choices:
            close = difflib.get_close_matches(item, choices, n=1)
            suggestion = f"; did you mean {close[0]}?" if close else ""
            problems.append(
                Problem(path, f"{item!r} is not one of: {', '.join(choices)}{suggestion}")
            )
    if key in MINIMUMS and isinstance(value, (int, float)) and not isinstance(value, bool):
        bound, exclusive = MINIMUMS[key]
        if value < bound or (exclusive and value == bound):
            relation = "greater than" if exclusive else "at least"
            problems.append(Problem(path, f"must be {relation} {bound:g}, got {value!r}"))
    return problems


def unknown_key(key: str, known: list[str]) -> Problem:
    path = f"{ROOT}.{key}"
    if key in RENAMED_KEYS:
        return Problem(path, f"not a TrainingArguments field: {RENAMED_KEYS[key]}")
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else ""
    return Problem(
        path,
        f"unknown field{hint}" if hint else "unknown field (not a Hugging Face TrainingArguments "
        f"field in transformers {catalog()['transformers']})",
    )


def check_keys_and_types(args: dict[str, Any], task: str | None) -> list[Problem]:
    """Each key exists, is not managed by ftjob, and has a value of the right type."""
    catalogue = fields()
    problems: list[Problem] = []
    for key, value in args.items():
        path = f"{ROOT}.{key}"
        if key in MANAGED_KEYS:
            problems.append(Problem(path, f"managed by ftjob: {MANAGED_KEYS[key]}"))
            continue
        info = catalogue.get(key)
        if info is None:
            problems.append(unknown_key(key, list(catalogue)))
            continue
        only = only_task(info)
        if only is not None and task is not None and task != only:
            problems.append(Problem(path, f"applies only to task {only} (this job is {task})"))
            continue
        if task == preference_args.TASK and key in preference_args.MANAGED_KEYS:
            problems.append(Problem(path, f"managed by ftjob: {preference_args.MANAGED_KEYS[key]}"))
            continue
        problems.extend(check_value(key, value, info))
    return problems


def only_task(info: dict[str, Any]) -> str | None:
    """The one task a catalogue field belongs to (seq2seq or preference), or None."""
    if info["seq2seqOnly"]:
        return "seq2seq"
    return preference_args.TASK if info.get("preferenceOnly") else None


def effective(args: dict[str, Any], key: str) -> Any:
    """The value Trainer will use: the user's, else transformers' default."""
    if key in args:
        return args[key]
    info = fields().get(key)
    return None if info is None else info["default"]


def check_cross_fields(
    args: dict[str, Any], *, has_eval_data: bool, gpus_per_node: int
) -> list[Problem]:
    """Rules that Trainer would only reject after the pods have started."""
    p = lambda key: f"{ROOT}.{key}"  # noqa: E731 - short path builder
    problems = _check_precision(args, gpus_per_node)

    eval_strategy = effective(args, "eval_strategy")
    save_strategy = effective(args, "save_strategy")
    evaluates = eval_strategy not in (None, "no") or args.get("eval_on_start") is True
    if evaluates and not has_eval_data:
        key = "eval_strategy" if "eval_strategy" in args else "eval_on_start"
        problems.append(
            Problem(
                p(key),
                "evaluation is requested but the dataset has no evaluation data; set "
                "spec.dataset.evalSplit, spec.dataset.files.validation or spec.dataset.evalFraction",
            )
        )

    if args.get("load_best_model_at_end") is True:
        problems.extend(_check_load_best(args, eval_strategy, save_strategy))
    elif save_strategy == "best" and eval_strategy in (None, "no"):
        problems.append(
            Problem(p("save_strategy"), "'best' saves after evaluations, but eval_strategy is 'no'")
        )

    max_steps = effective(args, "max_steps")
    epochs = effective(args, "num_train_epochs")
    if isinstance(max_steps, int) and max_steps <= 0 and isinstance(epochs, (int, float)) and epochs <= 0:
        problems.append(
            Problem(p("num_train_epochs"), "no training would happen: set num_train_epochs > 0 "
                    "or max_steps > 0")
        )

    if save_strategy == "no":
        problems.append(
            Problem(
                p("save_strategy"),
                "no checkpoints are saved, so a restarted or preempted job starts again from "
                "step 0",
                severity="warning",
            )
        )
    return problems


def _check_precision(args: dict[str, Any], gpus_per_node: int) -> list[Problem]:
    """fp16 and bf16 together, and the GPU-only precisions on a CPU job."""
    problems: list[Problem] = []
    if args.get("fp16") is True and args.get("bf16") is True:
        problems.append(Problem(f"{ROOT}.bf16", "fp16 and bf16 cannot both be true; choose one"))
    if gpus_per_node == 0:
        for key in ("fp16", "fp16_full_eval"):
            if args.get(key) is True:
                problems.append(
                    Problem(
                        f"{ROOT}.{key}",
                        "fp16 needs a GPU but spec.resources.gpusPerNode is 0; use bf16 on CPU "
                        "or request GPUs",
                    )
                )
        if args.get("tf32") is True:
            problems.append(
                Problem(f"{ROOT}.tf32", "tf32 needs an Ampere or newer GPU but gpusPerNode is 0")
            )
    return problems


def _check_load_best(args: dict[str, Any], eval_strategy: Any, save_strategy: Any) -> list[Problem]:
    path = f"{ROOT}.load_best_model_at_end"
    if eval_strategy in (None, "no"):
        return [Problem(path, "needs evaluations to pick the best model: set eval_strategy")]
    if save_strategy == "best":
        return []
    if eval_strategy != save_strategy:
        return [
            Problem(
                path,
                f"needs eval_strategy and save_strategy to match, got eval_strategy "
                f"{eval_strategy!r} and save_strategy {save_strategy!r}",
            )
        ]
    if eval_strategy == "steps":
        save_steps = effective(args, "save_steps")
        eval_steps = args.get("eval_steps") or effective(args, "logging_steps")
        if (
            isinstance(save_steps, (int, float))
            and isinstance(eval_steps, (int, float))
            and eval_steps > 0
            and save_steps >= 1
            and eval_steps >= 1
            and save_steps % eval_steps != 0
        ):
            return [
                Problem(
                    f"{ROOT}.save_steps",
                    f"with load_best_model_at_end, save_steps ({save_steps:g}) must be a multiple "
                    f"of eval_steps ({eval_steps:g})",
                )
            ]
    return []


def json_schema() -> dict[str, Any]:
    """Structural OpenAPI schema of `trainingArguments` for the CRD."""
    properties: dict[str, Any] = {}
    for name, info in sorted(fields().items()):
        if name in MANAGED_KEYS:
            continue
        kinds = [k for k in info["types"] if k != "null"]
        node: dict[str, Any]
        if len(kinds) == 1:
            node = {"type": kinds[0]}
            if kinds[0] == "object":
                node["x-kubernetes-preserve-unknown-fields"] = True
            elif kinds[0] == "array":
                node["items"] = {"type": info.get("items", "string")}
                if info.get("choices"):
                    node["items"]["enum"] = list(info["choices"])
            elif kinds[0] == "string" and info.get("choices"):
                node["enum"] = list(info["choices"])
        else:
            # Unions such as `str | list[str]` have no structural form; ftjob validate and the
            # operator check these values instead.
            node = {"x-kubernetes-preserve-unknown-fields": True}
        if name in MINIMUMS and kinds and kinds[0] in ("integer", "number"):
            bound, exclusive = MINIMUMS[name]
            node["minimum"] = bound
            if exclusive:
                node["exclusiveMinimum"] = True
        if "null" in info["types"]:
            node["nullable"] = True
        help_text = info["help"] or name
        if only_task(info):
            help_text += f" ({only_task(info)} only)"
        node["description"] = help_text
        properties[name] = node
    return {
        "type": "object",
        "description": "Hugging Face TrainingArguments (transformers "
        f"{catalog()['transformers']}), keys spelled as in transformers; task preference "
        f"adds TRL {catalog()['trl']}'s DPOConfig.",
        "properties": properties,
    }


if __name__ == "__main__":  # `python -m ftjob_api.training_args` regenerates the catalogue
    write_catalog()
    print(f"wrote {CATALOG_PATH}")
