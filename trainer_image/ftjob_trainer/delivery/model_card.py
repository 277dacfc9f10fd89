"""The model card (`README.md`) of a finished job's model, in Hugging Face's format.

YAML front matter (`base_model`, `library_name`, `pipeline_tag`, `tags`, `datasets`,
`model-index` with the final evaluation's metrics), then markdown: base model, data,
training arguments, final metrics, the quality gate, attempts and goodput, how to load it.
`render_model_card` is pure; `write_model_cards` gathers its inputs from the output folder
and the job's spec and writes the card into each model folder.

Where the facts come from, in the output folder: `metrics.json` (rank 0, after the final
evaluation: `globalStep` and `metrics`, Trainer's `train_*`, `eval_*`, `test_*` names),
`attempts.jsonl` (one line per attempt: `startedAt`, `resumedFromStep`, `worldSize`) and
`final/labels.json` (classification). Goodput is not in the output folder: the operator
keeps it in `status.goodput`; a caller that has it passes it in.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from . import merge

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
METRICS_FILE = "metrics.json"  # entrypoint.METRICS_FILE
ATTEMPTS_FILE = "attempts.jsonl"  # attempts.ATTEMPTS_FILE
FINAL_DIR = "final"  # entrypoint.FINAL_DIR
LABELS_FILE = "labels.json"

_PIPELINE_TAG = {
    "sequence-classification": "text-classification",
    "causal-lm": "text-generation",
    "seq2seq": "text2text-generation",
    "preference": "text-generation",
}
_AUTO_CLASS = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "preference": "AutoModelForCausalLM",
}
# Trainer's bookkeeping next to an evaluation's metrics: not results of the model.
_BOOKKEEPING = ("runtime", "samples_per_second", "steps_per_second", "samples")
_RESULT_SPLITS = (("eval_", "evaluation"), ("test_", "test"))


def render_model_card(*, base_model: str, task: str, metrics: dict[str, Any],
                      training_arguments: dict[str, Any], dataset: dict[str, Any] | None = None,
                      peft: dict[str, Any] | None = None, adapter: bool = False,
                      merged: bool = False, base_revision: str | None = None,
                      model_name: str | None = None, global_step: int | None = None,
                      labels: list[Any] | None = None,
                      attempts: Iterable[dict[str, Any]] = (),
                      goodput: dict[str, Any] | None = None, gate: Any = None,
                      versions: dict[str, str] | None = None) -> str:
    """The card's text (pure).

    `base_model`: the spec's model name (Hub id) or path, as the spec gives it; `task`: the
    spec's task; `metrics`: metrics.json's "metrics"; `training_arguments`: the spec's
    trainingArguments; `dataset` and `peft`: the spec's (camelCase keys, as in the job
    file); `adapter`: the folder holds a LoRA adapter (library_name peft), else a full model,
    `merged` from an adapter; `attempts`: attempts.jsonl's lines; `goodput`: status.goodput
    (camelCase), None when not known; `gate`: a gate.GateResult or None; `versions`: library
    -> version, for the record."""
    name = model_name or "fine-tuned model"
    front = front_matter(base_model=base_model, task=task, metrics=metrics, dataset=dataset,
                         adapter=adapter, peft=peft is not None or merged, model_name=name)
    sections = [
        _intro(name, base_model, base_revision, task, adapter, merged),
        _base_section(base_model, base_revision, adapter, merged),
        _data_section(dataset or {}, metrics, labels),
        _training_section(training_arguments, peft, global_step),
        _metrics_section(metrics),
        _gate_section(gate),
        _attempts_section(list(attempts), goodput),
        _load_section(base_model, base_revision, task, adapter, labels),
        _versions_section(versions or {}),
    ]
    body = "\n\n".join(s for s in sections if s)
    header = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return f"---\n{header}---\n\n{body}\n"


def front_matter(*, base_model: str, task: str, metrics: dict[str, Any],
                 dataset: dict[str, Any] | None, adapter: bool, peft: bool,
                 model_name: str) -> dict[str, Any]:
    """The card's metadata, as Hugging Face's model cards hold it."""
    dataset = dataset or {}
    tags = ["ftjob", task] + (["lora"] if peft else []) + (
        ["dpo", "trl"] if task == "preference" else [])
    front: dict[str, Any] = {
        "base_model": base_model,
        "base_model_relation": "adapter" if adapter else "finetune",
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": _PIPELINE_TAG.get(task, "text-generation"),
        "tags": tags,
    }
    if dataset.get("name"):
        front["datasets"] = [dataset["name"]]
    results = model_index_results(task, metrics, dataset)
    if results:
        front["model-index"] = [{"name": model_name, "results": results}]
    return front


def model_index_results(task: str, metrics: dict[str, Any],
                        dataset: dict[str, Any]) -> list[dict[str, Any]]:
    """One result per evaluated split (evaluation, test) with its finite metrics, values
    exactly as given."""
    results = []
    for prefix, split in _RESULT_SPLITS:
        found = result_metrics(metrics, prefix)
        if not found:
            continue
        results.append({
            "task": {"type": _PIPELINE_TAG.get(task, "text-generation")},
            "dataset": _index_dataset(dataset, split),
            "metrics": [{"type": name[len(prefix):], "value": value, "name": name}
                        for name, value in found.items()],
        })
    return results


def result_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """The split's metrics that describe the model (no runtimes, sample counts), finite
    numbers only, sorted by name."""
    return {k: metrics[k] for k in sorted(metrics)
            if isinstance(k, str) and k.startswith(prefix)
            and k[len(prefix):] not in _BOOKKEEPING and _finite(metrics[k])}


def _index_dataset(dataset: dict[str, Any], split: str) -> dict[str, Any]:
    hub = dataset.get("name")
    entry: dict[str, Any] = {"name": hub or "local files", "type": hub or "local"}
    if hub and dataset.get("config"):
        entry["config"] = dataset["config"]
    if split == "test":
        entry["split"] = dataset.get("testSplit") or "test"
    elif dataset.get("evalFraction") is not None:
        entry["split"] = f"{dataset.get('trainSplit') or 'train'} (held-out fraction)"
    else:
        entry["split"] = dataset.get("evalSplit") or "validation"
    return entry


# --------------------------------------------------------------------------- sections


def _intro(name: str, base: str, revision: str | None, task: str, adapter: bool,
           merged: bool) -> str:
    what = ("the LoRA adapter (load it on top of the base model)" if adapter
            else "the LoRA adapter merged into the base weights (a plain Transformers model)"
            if merged else "the fully fine-tuned model")
    return (f"# {name}\n\n`{base}`{_at(revision)} fine-tuned for `{task}` with the Hugging "
            f"Face Trainer by ftjob (a FineTuneJob). This folder holds {what}.")


def _base_section(base: str, revision: str | None, adapter: bool, merged: bool) -> str:
    lines = ["## Base model", "", f"- model: `{base}`"]
    if revision:
        lines.append(f"- revision: `{revision}`")
    if adapter:
        lines.append("- this folder holds only the adapter: the base model is loaded separately")
    elif merged:
        lines.append("- the adapter's weights are merged in: the base is not needed to load it")
    return "\n".join(lines)


def _data_section(dataset: dict[str, Any], metrics: dict[str, Any],
                  labels: list[Any] | None) -> str:
    lines = ["## Data", ""]
    if dataset.get("name"):
        lines.append(f"- dataset: `{dataset['name']}`" + (
            f", config `{dataset['config']}`" if dataset.get("config") else "")
            + _at(dataset.get("revision")))
    files = dataset.get("files") if isinstance(dataset.get("files"), dict) else {}
    for split, path in files.items():
        lines.append(f"- {split} file: `{path}`")
    for key in ("trainSplit", "evalSplit", "testSplit", "evalFraction", "maxTrainSamples",
                "maxEvalSamples", "shuffleSeed", "maxLength", "maxTargetLength", "format"):
        if dataset.get(key) is not None:
            lines.append(f"- {key}: `{_plain(dataset[key])}`")
    for split in ("train", "eval", "test"):
        count = metrics.get(f"{split}_samples")
        if isinstance(count, int) and not isinstance(count, bool):
            lines.append(f"- {split} samples: {count}")
    if labels:
        lines.append(f"- labels ({len(labels)}): " + ", ".join(f"`{v}`" for v in labels))
    return "\n".join(lines) if len(lines) > 2 else ""


def _training_section(arguments: dict[str, Any], peft: dict[str, Any] | None,
                      global_step: int | None) -> str:
    lines = ["## Training arguments", ""]
    if global_step is not None:
        lines += [f"Trained for {global_step} optimizer steps.", ""]
    if arguments:
        lines += ["`TrainingArguments` set by the job (the rest are the defaults of the "
                  "trainer image's transformers and ftjob's):", "",
                  *_table(("argument", "value"), ((k, _cell(v)) for k, v in sorted(arguments.items())))]
    else:
        lines.append("No `TrainingArguments` set by the job: the trainer image's defaults.")
    if peft is not None:
        lines += ["", "LoRA (`spec.peft`):", "",
                  *_table(("setting", "value"), ((k, _cell(v)) for k, v in sorted(peft.items())))]
    return "\n".join(lines)


def _metrics_section(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "## Final metrics\n\nThe job recorded no metrics."
    rows = ((k, _number(v)) for k, v in sorted(metrics.items()) if isinstance(k, str))
    return "\n".join(["## Final metrics", "",
                      "From the final evaluation after training (`metrics.json`):", "",
                      *_table(("metric", "value"), rows)])


def _gate_section(gate: Any) -> str:
    if gate is None:
        return ""
    return f"## Quality gate\n\n{gate.message}"


def _attempts_section(attempts: list[dict[str, Any]], goodput: dict[str, Any] | None) -> str:
    lines = ["## Attempts and goodput", ""]
    if attempts:
        restarts = len(attempts) - 1
        lines += [f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''} "
                  f"({restarts} restart{'s' if restarts != 1 else ''}):", "",
                  *_table(("attempt", "started", "resumed from step", "world size"),
                          ((str(i), _plain(a.get("startedAt", "")),
                            _plain(a.get("resumedFromStep", "")), _plain(a.get("worldSize", "")))
                           for i, a in enumerate(attempts, 1))), ""]
    else:
        lines += ["No attempts were recorded in the output folder.", ""]
    lines.append(_goodput_text(goodput))
    return "\n".join(lines)


def _goodput_text(goodput: dict[str, Any] | None) -> str:
    if not goodput:
        return ("Goodput: not known when this card was written (the operator keeps it in the "
                "FineTuneJob's `status.goodput`).")
    ratio = goodput.get("ratio")
    parts = [f"ratio {ratio:.1%}" if _finite(ratio) else "ratio unknown"]
    for key, what in (("productiveSeconds", "productive seconds"),
                      ("wallSeconds", "wall-clock seconds"), ("stepsLost", "steps lost"),
                      ("attemptsFolded", "older attempts folded")):
        if _finite(goodput.get(key)):
            parts.append(f"{_number(goodput[key])} {what}")
    return ("Goodput (the share of the job's time spent on training steps that were kept, "
            "from `status.goodput`): " + ", ".join(parts) + ".")


def _load_section(base: str, revision: str | None, task: str, adapter: bool,
                  labels: list[Any] | None) -> str:
    auto = _AUTO_CLASS.get(task, "AutoModelForCausalLM")
    if adapter:
        extra = f", num_labels={len(labels)}" if labels else ""
        extra += f", revision={revision!r}" if revision else ""
        code = ["from peft import PeftModel",
                f"from transformers import {auto}, AutoTokenizer", "",
                *(["# pkg://: a folder inside that installed Python package"]
                  if base.startswith("pkg://") else []),
                f"base = {auto}.from_pretrained({base!r}{extra})",
                'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
                "model = model.merge_and_unload()  # optional: one plain model",
                'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")']
    else:
        code = [f"from transformers import {auto}, AutoTokenizer", "",
                f'model = {auto}.from_pretrained("path/to/this/folder")',
                'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")']
    return "\n".join(["## How to load it", "", "```python", *code, "```"])


def _versions_section(versions: dict[str, str]) -> str:
    if not versions:
        return ""
    return "\n".join(["## Framework versions", "",
                      *(f"- {name} {version}" for name, version in sorted(versions.items()))])


# --------------------------------------------------------------------------- formatting


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return lines


def _escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _cell(value: Any) -> str:
    return f"`{_plain(value)}`"


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return _plain(value)


def _finite(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _at(revision: str | None) -> str:
    return f" (revision `{revision}`)" if revision else ""


# --------------------------------------------------------------------------- I/O


def write_model_cards(output_dir: str | os.PathLike[str], spec: dict[str, Any], *,
                      model_dirs: Iterable[str | os.PathLike[str]] | None = None,
                      job_name: str | None = None, goodput: dict[str, Any] | None = None,
                      gate: Any = None) -> list[Path]:
    """Write README.md into each model folder (by default `final/`, and `merged/` once a
    merge completed there), each atomically; returns the cards written.

    `spec`: the job's spec as the job file holds it (camelCase: `model`, `dataset`,
    `trainingArguments`, `peft`, `task`); `goodput`: status.goodput when the caller has it;
    `gate`: the gate.GateResult, when the job has a gate."""
    output_dir = Path(output_dir)
    summary = read_metrics(output_dir)
    model = spec.get("model") if isinstance(spec.get("model"), dict) else {}
    facts = dict(
        base_model=str(model.get("name") or model.get("path") or "unknown"),
        base_revision=model.get("revision"), task=str(spec.get("task") or "causal-lm"),
        metrics=summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {},
        global_step=summary.get("globalStep"),
        training_arguments=spec.get("trainingArguments") or {},
        dataset=spec.get("dataset") or {}, peft=spec.get("peft"), model_name=job_name,
        labels=read_labels(output_dir / FINAL_DIR), attempts=read_attempts(output_dir),
        goodput=goodput, gate=gate)
    written = []
    for folder in (model_dirs if model_dirs is not None else default_model_dirs(output_dir)):
        folder = Path(folder)
        adapter = (folder / merge.ADAPTER_CONFIG).is_file()
        merged = not adapter and (folder / merge.MARKER).is_file()
        text = render_model_card(**facts, adapter=adapter, merged=merged,
                                 versions=library_versions(adapter or merged, facts["task"]))
        write_text_atomic(folder / CARD_FILE, text)
        written.append(folder / CARD_FILE)
    return written


def default_model_dirs(output_dir: Path) -> list[Path]:
    dirs = [output_dir / FINAL_DIR]
    merged = output_dir / merge.MERGED_DIR
    if (merged / merge.MARKER).is_file():
        dirs.append(merged)
    return dirs


def read_metrics(output_dir: Path) -> dict[str, Any]:
    """metrics.json ({globalStep, resumedFromStep, metrics}); {} when absent or unreadable."""
    try:
        summary = json.loads((output_dir / METRICS_FILE).read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: no final metrics for the model card: %s", output_dir / METRICS_FILE, exc)
        return {}
    return summary if isinstance(summary, dict) else {}


def read_attempts(output_dir: Path) -> list[dict[str, Any]]:
    """attempts.jsonl's lines, in order; a line cut short (a kill mid-write) is skipped."""
    try:
        text = (output_dir / ATTEMPTS_FILE).read_text()
    except OSError:
        return []
    attempts = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            attempts.append(entry)
    return attempts


def read_labels(final_dir: Path) -> list[Any] | None:
    try:
        labels = json.loads((final_dir / LABELS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return labels if isinstance(labels, list) else None


def library_versions(peft: bool, task: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["ftjob", "transformers", "torch"] + (["peft"] if peft else []) + (
        ["trl"] if task == "preference" else [])
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def write_text_atomic(path: Path, text: str) -> None:
    """Write `path` whole or not at all: a temporary file beside it, flushed, renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
