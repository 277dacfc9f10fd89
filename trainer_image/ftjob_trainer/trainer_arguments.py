"""TrainingArguments = the user's `spec.trainingArguments` + the settings ftjob owns.

`settings()` is pure (a dict in, a dict out) so the split between what users choose and
what the system decides is tested without building TrainingArguments.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ftjob_api import api

from .exits import InvalidSpec

# Trainer multiplies the loss by the number of processes when this is on (its default) and
# the model's forward takes **kwargs: right only for a loss divided by the all-ranks item count.
AVERAGE_TOKENS_KEY = "average_tokens_across_devices"

# Trainer's own rotation would delete an old checkpoint before the new one is known to be
# complete; ftjob rotates after the completion marker instead (callbacks.py).
OWN_ROTATION_KEY = "save_total_limit"


def deepspeed_config(ds: api.DeepSpeedSpec, on_gpu: bool, config_file: Path | None) -> dict[str, Any]:
    if ds.config_map_ref is not None:
        if config_file is None:
            raise InvalidSpec("spec.deepspeed.configMapRef: the DeepSpeed config is not mounted "
                              "(FTJOB_DEEPSPEED_CONFIG is unset)")
        try:
            return json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidSpec(f"spec.deepspeed.configMapRef: {config_file}: {exc}") from exc
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if ds.zero_stage == 3:
        # Save a consolidated model at the end, not only the shards.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    optimizer_params: dict[str, Any] = {"lr": "auto", "betas": "auto", "eps": "auto",
                                        "weight_decay": "auto"}
    if not on_gpu:
        optimizer_params["torch_adam"] = True  # DeepSpeed's fused/CPU Adam needs a compiler op
    return {
        "zero_optimization": zero,
        "optimizer": {"type": "AdamW", "params": optimizer_params},
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
    }


# Keys that choose a precision: with any of them in the spec, ftjob adds no bf16.
PRECISION_KEYS = ("bf16", "fp16", "half_precision_backend", "bf16_full_eval", "fp16_full_eval")
GPU_DATALOADER_WORKERS = 2


def defaults(spec: api.FineTuneJobSpec, *, quiet_console: bool = False,
             bf16_supported: bool = False) -> dict[str, tuple[Any, str]]:
    """key -> (value, why) for every TrainingArguments default ftjob sets (pure).

    Keys the spec sets are left out: a user's own setting always wins. None of these
    changes what is computed beyond floating-point precision (bf16, only where the GPU
    runs it natively, no precision was chosen and no user DeepSpeed config given)."""
    user = spec.training_arguments
    on_gpu = spec.resources.gpus_per_node > 0
    chosen: dict[str, tuple[Any, str]] = {
        # The built-in tasks use every trainable parameter in each forward, so DDP's search
        # for unused ones (HF's default without gradient checkpointing) is an extra
        # autograd traversal per step and a warning at start. A model that does leave some
        # unused makes DDP fail with a message naming this key.
        "ddp_find_unused_parameters": (False, "every trainable parameter is used in each "
                                       "forward; the search for unused ones costs a traversal "
                                       "per step"),
    }
    if on_gpu:
        # A user's own DeepSpeed config (configMapRef) may fix fp16 or bf16 itself, and
        # HF rejects a TrainingArguments precision that differs from it: leave it alone.
        own_ds_config = spec.deepspeed is not None and spec.deepspeed.config_map_ref is not None
        if bf16_supported and not own_ds_config and not any(k in user for k in PRECISION_KEYS):
            chosen["bf16"] = (True, "the GPU computes bfloat16 natively, the spec chose no "
                              "precision and gives no DeepSpeed config of its own")
        chosen["dataloader_num_workers"] = (
            GPU_DATALOADER_WORKERS, "collate the next batches while the GPU computes; the "
            "sampler stays in the main process, so the batch order is unchanged")
        chosen["dataloader_pin_memory"] = (True, "page-locked batches copy to the GPU "
                                           "asynchronously")
    if spec.dataset.has_eval_data is False:
        chosen["eval_strategy"] = ("no", "there is no evaluation data")
    if spec.task == api.Task.PREFERENCE.value:
        chosen.update(_preference_defaults(spec, "bf16" in chosen))
    if quiet_console:
        chosen["disable_tqdm"] = (True, "the console reporter draws the one progress bar")
    if spec.task == api.Task.SEQUENCE_CLASSIFICATION.value and spec.peft is not None:
        chosen["label_names"] = (["labels"], "peft wraps the model; Trainer must not drop the "
                                 "labels column by the forward's signature")
    return {k: v for k, v in chosen.items() if k not in user}


def _preference_defaults(spec: api.FineTuneJobSpec, bf16_chosen: bool
                         ) -> dict[str, tuple[Any, str]]:
    """Where TRL's DPOConfig defaults differ from TrainingArguments' and ftjob keeps the
    latter (pure). DPOConfig's learning_rate 1e-6 and logging_steps 10 are kept as TRL has
    them (docs/trainer.md)."""
    chosen: dict[str, tuple[Any, str]] = {}
    if "gradient_checkpointing" not in spec.training_arguments:  # its deprecated alias
        chosen["activation_checkpointing"] = (
            False, "DPOConfig turns it on (about 20% slower steps for less activation "
            "memory); as for the other tasks, set it for long sequences or large models")
    own_ds_config = spec.deepspeed is not None and spec.deepspeed.config_map_ref is not None
    if not bf16_chosen and not own_ds_config and not any(
            k in spec.training_arguments for k in PRECISION_KEYS):
        chosen["bf16"] = (False, "DPOConfig turns bf16 on everywhere; this job runs on a CPU "
                          "or a GPU without native bfloat16, so it stays float32")
    return chosen


def settings(spec: api.FineTuneJobSpec, output_dir: Path, *, world_size: int = 1,
             quiet_console: bool = False, bf16_supported: bool = False,
             deepspeed: dict[str, Any] | None = None) -> tuple[dict[str, Any], int | None]:
    """(keyword arguments for TrainingArguments, the user's save_total_limit)."""
    kwargs = dict(spec.training_arguments)
    save_total_limit = kwargs.pop(OWN_ROTATION_KEY, None)
    on_gpu = spec.resources.gpus_per_node > 0
    kwargs.update(output_dir=str(output_dir), use_cpu=not on_gpu)
    if world_size > 1:
        # Only under torchrun: naming a backend outside it asks for a process group.
        kwargs["ddp_backend"] = "nccl" if on_gpu else "gloo"
    if deepspeed is not None:
        kwargs["deepspeed"] = deepspeed
    if spec.task == api.Task.PREFERENCE.value:
        # Prompt and answer together; clamped to the tokenizer's limit once it is loaded.
        kwargs["max_length"] = spec.dataset.max_length
    for key, (value, _) in defaults(spec, quiet_console=quiet_console,
                                    bf16_supported=bf16_supported).items():
        kwargs.setdefault(key, value)
    return kwargs, save_total_limit


def gpu_supports_bf16() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except Exception:  # noqa: BLE001 - a broken driver is found (and classified) later
        return False


def average_tokens_across_devices(spec: api.FineTuneJobSpec, loss_divides_by_item_count: bool) -> bool:
    """The value ftjob gives `average_tokens_across_devices` (pure).

    The user's value when they set one. Otherwise on only where the model's loss divides a
    sum by Trainer's item count (causal LMs with `ForCausalLMLoss`): there it makes the loss
    the mean over every rank's tokens. A per-example or per-rank mean (classification, T5,
    BART) keeps the key off, or the loss and gradients grow with the number of processes.
    """
    if AVERAGE_TOKENS_KEY in spec.training_arguments:
        return bool(spec.training_arguments[AVERAGE_TOKENS_KEY])
    if spec.task in (api.Task.SEQUENCE_CLASSIFICATION.value, api.Task.PREFERENCE.value):
        return False
    return loss_divides_by_item_count


def average_tokens_reason(spec: api.FineTuneJobSpec, model_name: str,
                          loss_divides_by_item_count: bool) -> str:
    """Why average_tokens_across_devices has its value, for the log (pure)."""
    if AVERAGE_TOKENS_KEY in spec.training_arguments:
        return "set in spec.trainingArguments"
    if spec.task == api.Task.SEQUENCE_CLASSIFICATION.value:
        return "sequence classification: the loss is a per-example mean"
    if spec.task == api.Task.PREFERENCE.value:
        return "preference: the DPO loss is a mean over each rank's pairs"
    if loss_divides_by_item_count:
        return f"{model_name}'s loss divides by the token count of all ranks"
    return f"{model_name}'s loss is a mean over each rank's own tokens"


def build(spec: api.FineTuneJobSpec, output_dir: Path, **options: Any):
    import os

    from transformers import Seq2SeqTrainingArguments, TrainingArguments

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if spec.resources.gpus_per_node > 0:
        options.setdefault("bf16_supported", gpu_supports_bf16())
    kwargs, limit = settings(spec, output_dir, world_size=world_size, **options)
    cls = Seq2SeqTrainingArguments if spec.task == api.Task.SEQ2SEQ.value else TrainingArguments
    if spec.task == api.Task.PREFERENCE.value:
        from trl import DPOConfig as cls  # noqa: N813 - TrainingArguments plus DPO's keys
    try:
        return cls(**kwargs), limit
    except (ValueError, TypeError) as exc:
        if _ENVIRONMENT_ERROR.search(str(exc)):
            # TrainingArguments also sets up the device and process group: a node whose GPUs
            # or NCCL are broken is not a spec error, and another attempt may land elsewhere.
            raise
        raise InvalidSpec(f"spec.trainingArguments: {str(exc).splitlines()[0][:400]}") from exc


_ENVIRONMENT_ERROR = re.compile(r"NCCL|CUDA|cuda|GPU|NVIDIA|driver|ProcessGroup|process group|backend")
