"""Model and tokenizer for the task, optionally wrapped with LoRA adapters."""

from __future__ import annotations

import importlib.resources
import logging
from pathlib import Path
from typing import Any

from ftjob_api import api

from .exits import HubUnreachable, InvalidModel, InvalidSpec, is_network_error

log = logging.getLogger(__name__)

PKG_SCHEME = "pkg://"


def resolve_model_path(path: str, base: Path | None = None) -> Path:
    """`pkg://package/sub/dir` names a folder shipped inside an installed Python package
    (how the demo finds MiniLM from PyPI without a Hub download); a relative path is taken
    against `base` (the manifest's folder for `ftjob run --local`)."""
    if path.startswith(PKG_SCHEME):
        package, _, rest = path[len(PKG_SCHEME):].partition("/")
        try:
            root = importlib.resources.files(package)
        except ModuleNotFoundError as exc:
            raise InvalidModel(f"spec.model.path: {path}: Python package {package!r} is not "
                               f"installed") from exc
        return Path(str(root.joinpath(rest))) if rest else Path(str(root))
    resolved = Path(path)
    if base is not None and not resolved.is_absolute():
        resolved = base / resolved
    return resolved


def model_source(spec: api.FineTuneJobSpec, base: Path | None = None) -> tuple[str, dict[str, Any]]:
    """(what to pass to from_pretrained, extra kwargs); checks a local path exists."""
    model = spec.model
    if model.path is not None:
        path = resolve_model_path(model.path, base)
        if not (path / "config.json").is_file():
            why = "no such directory" if not path.is_dir() else "config.json is missing"
            raise InvalidModel(f"spec.model.path: no model at {path} ({why})")
        return str(path), {}
    return model.name, ({"revision": model.revision} if model.revision else {})


def load_error(exc: BaseException, field: str, what: str) -> Exception:
    """A Hub that cannot be reached is worth a retry; a model that is not there is not."""
    detail = f"{field}: {what}: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
    if field == "spec.model.name" and is_network_error(exc):
        return HubUnreachable(detail)
    return InvalidModel(detail)


def load_tokenizer(source: str, kwargs: dict[str, Any], field: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise load_error(exc, field, f"cannot load a tokenizer from {source}") from exc
    if tokenizer.pad_token is None:
        # Dynamic padding needs a pad token; decoder-only models often ship without one.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def model_field(spec: api.FineTuneJobSpec) -> str:
    """The spec field that names the model, for messages."""
    return "spec.model.path" if spec.model.path else "spec.model.name"


def tokenizer_for(spec: api.FineTuneJobSpec) -> Any:
    """The tokenizer the job tokenizes with, checked for the chat template its dataset
    format needs (the trainer and `ftjob inspect` both load it here)."""
    from ftjob_api import dataset_formats

    from . import causal_lm_data

    source, kwargs = model_source(spec)
    tokenizer = load_tokenizer(source, kwargs, model_field(spec))
    if spec.task == api.Task.CAUSAL_LM.value and \
            dataset_formats.get(spec.dataset.format).needs_chat_template:
        causal_lm_data.require_chat_template(tokenizer, source, spec.dataset.format)
    return tokenizer


_AUTO = {
    api.Task.SEQUENCE_CLASSIFICATION.value: "AutoModelForSequenceClassification",
    api.Task.CAUSAL_LM.value: "AutoModelForCausalLM",
    api.Task.SEQ2SEQ.value: "AutoModelForSeq2SeqLM",
    api.Task.PREFERENCE.value: "AutoModelForCausalLM",
}


def load_model(task: str, source: str, kwargs: dict[str, Any], field: str, tokenizer: Any,
               id2label: dict[int, str] | None = None) -> Any:
    import transformers

    auto = getattr(transformers, _AUTO[task])
    extra = dict(kwargs)
    if id2label is not None:
        # A checkpoint fine-tuned on other classes gets a fresh head of the right size.
        extra.update(num_labels=len(id2label), id2label=id2label,
                     label2id={v: k for k, v in id2label.items()}, ignore_mismatched_sizes=True)
    try:
        model = auto.from_pretrained(source, **extra)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise InvalidSpec(f"spec.task: the model at {source} cannot be loaded for task "
                              f"{task} ({str(exc).splitlines()[0][:200]})") from exc
        raise InvalidModel(f"{field}: {source}: {str(exc).splitlines()[0][:300]}") from exc
    except OSError as exc:
        raise load_error(exc, field, f"cannot load a model from {source}") from exc
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def loss_divides_by_item_count(model: Any) -> bool:
    """Whether the model's loss is a sum divided by Trainer's `num_items_in_batch`.

    Only then is Trainer's `average_tokens_across_devices` right: it counts the label tokens
    of every rank and multiplies the loss by the number of processes, which cancels the
    division by the all-ranks count. A model whose loss is a plain mean (sequence
    classification, and seq2seq models such as T5, BART and Marian, which call
    `CrossEntropyLoss()` themselves) would report and train on world size x its loss.
    True when `forward` calls `self.loss_function` and that function takes the count (e.g.
    GPT-2 and Llama with `ForCausalLMLoss`); False when the source cannot be read.
    """
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        source = inspect.getsource(type(base).forward)
        loss_function = base.loss_function
        takes_count = "num_items_in_batch" in inspect.signature(loss_function).parameters
    except (OSError, TypeError, ValueError, AttributeError):
        return False
    return "self.loss_function(" in source and takes_count


_PEFT_TASK = {
    api.Task.SEQUENCE_CLASSIFICATION.value: "SEQ_CLS",
    api.Task.CAUSAL_LM.value: "CAUSAL_LM",
    api.Task.SEQ2SEQ.value: "SEQ_2_SEQ_LM",
    api.Task.PREFERENCE.value: "CAUSAL_LM",
}


def lora_config(task: str, lora: api.LoraSpec) -> Any:
    """peft's LoraConfig for `spec.peft` (task preference hands it to DPOTrainer, which
    wraps the model itself and scores the reference with the adapter disabled)."""
    from peft import LoraConfig

    return LoraConfig(
        task_type=_PEFT_TASK[task],
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        bias=lora.bias,
        modules_to_save=lora.modules_to_save,
    )


def add_lora(model: Any, task: str, lora: api.LoraSpec) -> Any:
    from peft import get_peft_model

    config = lora_config(task, lora)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise InvalidSpec(f"spec.peft.targetModules: {str(exc).splitlines()[0][:300]}") from exc
