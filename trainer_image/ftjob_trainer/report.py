"""`ftjob report DIR`: one PNG of a run (train and eval loss, learning rate, eval metrics
against the optimizer step, a mark where an attempt resumed from a checkpoint; for a
hyperparameter search, the metric of every trial from `search.json`; for task preference,
the DPO reward margins and accuracies, train and eval).

Reads what a run leaves in its output folder: Hugging Face's `trainer_state.json` (the
final one, or the newest complete checkpoint's while the run is going) and ftjob's
`attempts.jsonl` (one line per attempt with the step it resumed from, written by
`attempts.record_attempt`). Gathering the series is pure; only `write_png` draws
(matplotlib, Agg backend, no display needed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checkpoints
from .attempts import ATTEMPTS_FILE
SEARCH_FILE = "search.json"
REPORT_FILE = "report.png"
STATE_FILE = "trainer_state.json"
# Logged with every evaluation but not model quality: left out of the plots.
EVAL_TIMINGS = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}
# TRL's DPOTrainer: the reward curves get a panel of their own (train and eval); its other
# diagnostics (log-probs, logits, entropy, token counts) stay out of the plots.
REWARD_CURVES = ("rewards/margins", "rewards/accuracies")
DPO_DIAGNOSTICS = {"entropy", "num_tokens", "mean_token_accuracy"}

Points = list[tuple[int, float]]


@dataclass
class Series:
    train_loss: Points = field(default_factory=list)
    eval_loss: Points = field(default_factory=list)
    learning_rate: Points = field(default_factory=list)
    eval_metrics: dict[str, Points] = field(default_factory=dict)
    rewards: dict[str, Points] = field(default_factory=dict)  # e.g. eval_rewards/margins
    resumed_from: list[int] = field(default_factory=list)
    max_steps: int | None = None
    global_step: int | None = None


def series(log_history: list[dict[str, Any]], resumed_from: list[int] | None = None,
           max_steps: int | None = None, global_step: int | None = None) -> Series:
    """The curves in a trainer_state.json log_history (pure). An evaluation logged twice at
    one step (the last periodic one and the final one) keeps the later value."""
    out = Series(resumed_from=sorted(set(s for s in resumed_from or [] if s > 0)),
                 max_steps=max_steps, global_step=global_step)
    eval_points: dict[str, dict[int, float]] = {}
    rewards: dict[str, dict[int, float]] = {}
    for entry in log_history:
        step = entry.get("step")
        if not isinstance(step, int):
            continue
        if _number(entry.get("loss")):
            out.train_loss.append((step, float(entry["loss"])))
        if _number(entry.get("learning_rate")):
            out.learning_rate.append((step, float(entry["learning_rate"])))
        for key, value in entry.items():
            if not _number(value):
                continue
            if key.removeprefix("eval_") in REWARD_CURVES:
                rewards.setdefault(key, {})[step] = float(value)
            elif key.startswith("eval_") and key not in EVAL_TIMINGS and not _dpo_diagnostic(key):
                eval_points.setdefault(key, {})[step] = float(value)
    out.eval_loss = sorted(eval_points.pop("eval_loss", {}).items())
    out.eval_metrics = {k: sorted(v.items()) for k, v in sorted(eval_points.items())}
    out.rewards = {k: sorted(v.items()) for k, v in sorted(rewards.items())}
    return out


def _dpo_diagnostic(key: str) -> bool:
    name = key.removeprefix("eval_")
    return "/" in name or name in DPO_DIAGNOSTICS


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def resume_steps(lines: list[str]) -> list[int]:
    """Steps attempts resumed from, from attempts.jsonl lines (pure; bad lines skipped)."""
    steps = []
    for line in lines:
        try:
            step = json.loads(line).get("resumedFromStep")
        except (ValueError, AttributeError):
            continue
        if isinstance(step, int) and step > 0:
            steps.append(step)
    return steps


@dataclass
class Trials:
    """A search's metric per trial: finished values, pruned trials' last reports, the best."""

    metric: str
    completed: Points = field(default_factory=list)
    pruned: Points = field(default_factory=list)
    best: int | None = None


def trials(doc: dict[str, Any]) -> Trials:
    """The per-trial points of a search.json document (pure; odd entries skipped)."""
    out = Trials(metric=str(doc.get("metric") or "objective"),
                 best=doc.get("bestTrial") if isinstance(doc.get("bestTrial"), int) else None)
    for trial in doc.get("trials") or []:
        if not isinstance(trial, dict) or not isinstance(trial.get("number"), int):
            continue
        if trial.get("state") == "COMPLETE" and _number(trial.get("value")):
            out.completed.append((trial["number"], float(trial["value"])))
        elif trial.get("state") == "PRUNED":
            last = (trial.get("lastReported") or {}).get("value")
            if _number(last):
                out.pruned.append((trial["number"], float(last)))
    return out


def load_trials(output_dir: Path) -> Trials | None:
    try:
        doc = json.loads((output_dir / SEARCH_FILE).read_text())
    except (OSError, ValueError):
        return None
    return trials(doc) if isinstance(doc, dict) else None


def load(output_dir: Path) -> tuple[Series, Path]:
    """The run's series and the trainer_state.json they came from (the newer of the final
    one and the newest complete checkpoint's)."""
    candidates = [output_dir / STATE_FILE]
    latest = checkpoints.latest_complete(output_dir)
    if latest is not None:
        candidates.append(latest.path / STATE_FILE)
    states = []
    for path in candidates:
        try:
            states.append((json.loads(path.read_text()), path))
        except (OSError, ValueError):
            continue
    if not states:
        raise FileNotFoundError(f"{output_dir}: no {STATE_FILE} (neither from a finished run "
                                f"nor in a complete checkpoint)")
    state, path = max(states, key=lambda s: s[0].get("global_step") or 0)
    attempts = output_dir / ATTEMPTS_FILE
    lines = attempts.read_text().splitlines() if attempts.is_file() else []
    return series(state.get("log_history") or [], resume_steps(lines), state.get("max_steps"),
                  state.get("global_step")), path


def write_png(data: Series, path: Path, title: str, search: Trials | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step_panels = 2 + bool(data.eval_metrics) + bool(data.rewards)
    panels = step_panels + (1 if search is not None else 0)
    fig, all_axes = plt.subplots(panels, 1, figsize=(9, 3.1 * panels), constrained_layout=True)
    axes = list(all_axes[:step_panels])
    for ax in axes[1:]:
        ax.sharex(axes[0])
    loss_ax, lr_ax = axes[0], axes[1]
    if data.train_loss:
        loss_ax.plot(*zip(*data.train_loss), color="tab:blue", linewidth=1.4, label="train loss")
    if data.eval_loss:
        loss_ax.plot(*zip(*data.eval_loss), color="tab:orange", marker="o", linewidth=1.4,
                     label="eval loss")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("Loss")
    if data.learning_rate:
        lr_ax.plot(*zip(*data.learning_rate), color="tab:green", linewidth=1.4,
                   label="learning rate")
    lr_ax.set_ylabel("learning rate")
    lr_ax.set_title("Learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if data.eval_metrics:
        metric_ax = axes[2]
        for name, points in data.eval_metrics.items():
            metric_ax.plot(*zip(*points), marker="o", linewidth=1.4, label=name)
        metric_ax.set_ylabel("metric value")
        metric_ax.set_title("Evaluation metrics")
        metric_ax.ticklabel_format(axis="y", useOffset=False)
        values = [v for points in data.eval_metrics.values() for _, v in points]
        if all(0.0 <= v <= 1.0 for v in values):  # accuracy, F1: the whole 0..1 scale
            metric_ax.set_ylim(0.0, 1.05)
    for ax in axes:
        for i, step in enumerate(data.resumed_from):
            ax.axvline(step, color="tab:red", linestyle="--", linewidth=1.2,
                       label="resumed from checkpoint" if i == 0 else None)
        if data.max_steps:
            ax.set_xlim(0, data.max_steps * 1.03)  # room for the marks at the last step
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=9)
    if data.rewards:  # after the resume marks: its legend joins both of its axes
        _draw_rewards(axes[-1], data.rewards)
    axes[-1].set_xlabel("optimizer step")
    if search is not None:
        _draw_trials(all_axes[-1], search)
    fig.suptitle(title, fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_rewards(ax, rewards: dict[str, Points]) -> None:
    """DPO: reward margins (left axis) and reward accuracies (right axis, 0..1)."""
    right = ax.twinx()
    right.set_ylim(0.0, 1.05)
    right.set_ylabel("reward accuracy")
    for name, points in rewards.items():
        target = right if name.endswith("accuracies") else ax
        style = {"marker": "o"} if name.startswith("eval_") else {}
        target.plot(*zip(*points), linewidth=1.2, label=name,
                    linestyle=":" if target is right else "-", **style)
    ax.set_ylabel("reward margin")
    ax.set_title("Preference rewards (chosen minus rejected)")
    handles = [h for a in (ax, right) for h in a.get_legend_handles_labels()[0]]
    labels = [label for a in (ax, right) for label in a.get_legend_handles_labels()[1]]
    ax.legend(handles, labels, loc="best", fontsize=8)


def _draw_trials(ax, search: Trials) -> None:
    if search.completed:
        ax.plot(*zip(*search.completed), "o", color="tab:blue", label="completed")
    if search.pruned:
        ax.plot(*zip(*search.pruned), "x", color="tab:gray", label="pruned (last report)")
    best = dict(search.completed).get(search.best) if search.best is not None else None
    if best is not None:
        ax.plot([search.best], [best], "*", color="tab:red", markersize=14,
                label=f"best: trial {search.best}")
    ax.set_title(f"Hyperparameter search: {search.metric} per trial")
    ax.set_xlabel("trial")
    ax.set_ylabel(search.metric)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=9)


def job_name(output_dir: Path) -> str:
    """The job's name from the job file `ftjob run --local` leaves there, else the folder's."""
    try:
        return str(json.loads((output_dir / "job.json").read_text())["metadata"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return output_dir.resolve().name


def report(output_dir: Path, output: Path | None = None) -> Path:
    search = load_trials(output_dir)
    try:
        data, _ = load(output_dir)
    except FileNotFoundError:
        if search is None:
            raise
        data = Series()  # a search still in its trials: the final run has not started
    name = job_name(output_dir)
    title = f"{name}: step {data.global_step or 0}" + (f" of {data.max_steps}" if data.max_steps else "")
    if data.resumed_from:
        title += f", resumed from step {', '.join(str(s) for s in data.resumed_from)}"
    return write_png(data, output or output_dir / REPORT_FILE, title, load_trials(output_dir))
