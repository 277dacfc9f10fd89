"""How `ftjob inspect` shows its figures to a person, and `--show N` examples with the
trained tokens set apart (rich; plain text with markers where the output is no terminal)."""

from __future__ import annotations

from typing import Any

from ftjob_api import api

from .inspection import Inspection, Tokenized

IGNORE = -100
# Where styles cannot show (a pipe, a file), trained text is put between these.
PLAIN_OPEN, PLAIN_CLOSE = "\u27e6", "\u27e7"


# --------------------------------------------------------------------------- examples


def split_of(ins: Inspection, name: str) -> Tokenized | None:
    return next((s for s in ins.splits if s.name == name), None)


def examples(ins: Inspection, split_name: str, count: int) -> list[dict[str, Any]]:
    """The first `count` examples of a split as the trainer feeds them (before packing):
    segments of decoded text, each trained or not, and the tokens maxLength cut."""
    split = split_of(ins, split_name)
    if split is None or count <= 0:
        return []
    if ins.spec.task == api.Task.PREFERENCE.value:
        return [_pair_example(ins, split.full[row], row)
                for row in range(min(count, len(split.full)))]
    packed = ins.spec.dataset.packing
    rows = split.full if packed else split.fed
    shown = []
    for row in range(min(count, len(rows))):
        example = rows[row]
        cut = len(split.full[row]["input_ids"]) - len(example["input_ids"])
        shown.append({"row": row, "segments": _segments(ins, example), "cutTokens": cut,
                      **_label(ins, example)})
    return shown


def _pair_example(ins: Inspection, pair: dict[str, Any], row: int) -> dict[str, Any]:
    """The prompt (masked) and the chosen answer (trained) as segments, the rejected answer
    (trained too) beside them; tokens cut at maxLength counted over both sequences."""
    decode, limit = ins.tokenizer.decode, ins.max_length
    prompt = len(pair["prompt_ids"])
    cut = sum(max(0, prompt + len(pair[k]) - limit) for k in ("chosen_ids", "rejected_ids"))
    return {"row": row, "cutTokens": cut,
            "segments": [{"text": decode(pair["prompt_ids"]), "trained": False},
                         {"text": decode(pair["chosen_ids"]), "trained": True}],
            "rejected": decode(pair["rejected_ids"])}


def _label(ins: Inspection, example: dict[str, Any]) -> dict[str, Any]:
    if ins.spec.task == api.Task.SEQUENCE_CLASSIFICATION.value:
        return {"label": ins.labels.names[example["labels"]]}
    return {}


def _segments(ins: Inspection, example: dict[str, Any]) -> list[dict[str, Any]]:
    """[{text, trained}] in order: runs of tokens decoded together."""
    tokenizer, task = ins.tokenizer, ins.spec.task
    ids = example["input_ids"]
    if task == api.Task.SEQ2SEQ.value:
        return [{"text": tokenizer.decode(ids), "trained": False},
                {"text": tokenizer.decode(example["labels"]), "trained": True}]
    if task == api.Task.SEQUENCE_CLASSIFICATION.value:
        return [{"text": tokenizer.decode(ids), "trained": False}]
    labels = example.get("labels")
    trained = ([lab != IGNORE for lab in labels] if labels is not None
               else [i != tokenizer.pad_token_id for i in ids])
    segments: list[dict[str, Any]] = []
    start = 0
    for end in range(1, len(ids) + 1):
        if end == len(ids) or trained[end] != trained[start]:
            segments.append({"text": tokenizer.decode(ids[start:end]), "trained": trained[start]})
            start = end
    return segments


# --------------------------------------------------------------------------- text


def print_report(report: dict[str, Any], shown: list[dict[str, Any]], name: str,
                 console: Any) -> None:
    """The figures as a person reads them; warnings last."""
    head = f"[bold]{name}[/bold]: {report['task']}"
    if report["format"]:
        head += f" ({report['format']}{', packing' if report['packing'] else ''})"
    console.print(f"{head}, maxLength {report['maxLength']}, world size {report['worldSize']}")
    for note in report["notes"]:
        console.print(f"[yellow]note[/yellow]: {note}")
    for split_name, split in report["splits"].items():
        console.print()
        console.print(f"[bold]{split_name}[/bold]  ({split['origin']})")
        for label, value in _split_lines(split):
            console.print(f"  {label:<20}{value}", highlight=False)
    _print_steps(report, console)
    if shown:
        _print_examples(shown, console)
    if report["warnings"]:
        console.print()
        console.print("[bold yellow]warnings[/bold yellow]")
        for warning in report["warnings"]:
            console.print(f"  {warning['split'] or 'job'}: {warning['message']} "
                          f"[dim]({warning['code']})[/dim]", highlight=False)


def _split_lines(split: dict[str, Any]) -> list[tuple[str, str]]:
    lengths = split["lengths"]
    lines = [("examples", f"{split['examples']}  (empty: {split['emptyRows']['count']})"),
             ("tokens per example", f"p50 {lengths['p50']}  p90 {lengths['p90']}  p99 "
              f"{lengths['p99']}  max {lengths['max']}  (before truncation)")]
    cut = split["truncation"]
    if cut is not None:
        lines.append(("truncated", f"{cut['examples']} examples ({cut['fraction']:.1%}), "
                      f"{cut['tokens']} tokens cut at maxLength {cut['maxLength']}"))
    else:
        lines.append(("packed", f"{split['rows']} rows of up to the maxLength"))
    if "targets" in split:
        t = split["targets"]
        lines.append(("target tokens", f"p50 {t['lengths']['p50']}  p99 {t['lengths']['p99']}  "
                      f"max {t['lengths']['max']}; {t['truncation']['examples']} truncated at "
                      f"{t['truncation']['maxLength']}"))
    if "promptLengths" in split:
        p = split["promptLengths"]
        lines.append(("prompt tokens", f"p50 {p['p50']}  p99 {p['p99']}  max {p['max']}; "
                      f"identical pairs: {split['identicalPairs']['count']}"))
    if "trainableTokens" in split:
        lines.append(("trainable tokens", f"{split['trainableTokens']} of {split['tokens']} "
                      f"({split['trainableFraction']:.1%}); examples with none: "
                      f"{split['untrainedRows']['count']}"))
    padding = f"{split['padding']:.1%} at batch {split['batchSize']}"
    what_if = split.get("whatIf")
    if what_if:
        padding += (f"; {'with' if what_if['packing'] else 'without'} packing: "
                    f"{what_if['padding']:.1%} ({what_if['rows']} rows)")
    lines.append(("padding", padding))
    if "labels" in split:
        labels = split["labels"]
        counts = ", ".join(f"{k} {v}" for k, v in labels["counts"].items())
        lines.append(("labels", f"{counts}  (imbalance {labels['imbalance']}x)"))
    return lines


def _print_steps(report: dict[str, Any], console: Any) -> None:
    steps = report["steps"]
    if steps is None:
        return
    console.print()
    console.print(f"[bold]optimizer steps[/bold]  {steps['perEpoch']} per epoch, "
                  f"{steps['total']} in total ({steps['epochs']} epochs); global batch "
                  f"{steps['globalBatch']} = {steps['perDevice']} per device x "
                  f"{report['worldSize']} processes x {steps['accumulation']} accumulated",
                  highlight=False)
    cost = report["cost"]
    if cost is not None:
        gpus = (f"{cost['gpuHours']} GPU-hours on {cost['gpus']} GPUs" if cost["gpus"]
                else "a CPU job: no GPU-hours")
        console.print(f"[bold]time[/bold]  {cost['seconds']} s ({cost['hours']} h) at "
                      f"{cost['stepsPerSecond']} steps/s ({cost['rateFrom']}); {gpus}",
                      highlight=False)


def _print_examples(shown: list[dict[str, Any]], console: Any) -> None:
    from rich.text import Text

    plain = not console.is_terminal
    console.print()
    if not any(s["trained"] for e in shown for s in e["segments"]):
        legend = "input -> label"
    elif plain:
        legend = f"trained text between {PLAIN_OPEN} {PLAIN_CLOSE}, the rest is masked"
    else:
        legend = "[bold green]trained[/bold green], [dim]masked (label -100)[/dim]"
    console.print(f"[bold]examples[/bold]  ({legend})")
    for example in shown:
        text = Text(f"  row {example['row']}: ")
        for segment in example["segments"]:
            if segment["trained"]:
                body = f"{PLAIN_OPEN}{segment['text']}{PLAIN_CLOSE}" if plain else segment["text"]
                text.append(body, style="bold green")
            else:
                text.append(segment["text"], style="dim")
        if "label" in example:
            text.append(f"  -> label {example['label']}", style="bold green")
        if "rejected" in example:
            rejected = example["rejected"]
            text.append("  | rejected: ")
            text.append(f"{PLAIN_OPEN}{rejected}{PLAIN_CLOSE}" if plain else rejected, style="red")
        if example["cutTokens"]:
            text.append(f"  [{example['cutTokens']} tokens cut by maxLength]", style="red")
        console.print(text)
