"""spec.hyperparameterSearch: `Trainer.hyperparameter_search(backend="optuna")` that survives
restarts.

Layout on the output volume:

    search/study.journal     the Optuna study (JournalStorage, file backend)
    search/trial-N/          trial N's checkpoints (verified like the main run's)
    search.json              every trial's parameters, value and state, and the best so far

Why a journal file and not SQLite: the output volume may be NFS, where SQLite's fcntl locks
are unreliable (SQLite FAQ); Optuna's JournalFileBackend appends one JSON line per change
under a link-based lock and is documented for NFS. Only world rank 0 ever writes it.

Restarts. Optuna numbers trials itself; after a gang restart, a trial the dead run left
RUNNING, stopped by a preemption, or ended by an error that may pass on a retry (out of
memory, a lost peer, a failed collective) is marked FAIL and enqueued again with the same
parameters (and, for the grid sampler, the same grid point); its folder is renamed to the new
trial's, so the retry resumes from the interrupted trial's newest complete checkpoint. A trial
that failed on a permanent error (invalid spec, data or model) is not retried. Finished
(COMPLETE or PRUNED) trials are never run again, and only `trials` minus the finished ones are
asked of the study, so the total stays `trials`. Samplers are seeded with
`seed + trials already in the study`, so a restarted random or TPE sampler does not draw the
first run's parameters again.

Torchrun. As in transformers' run_hp_search_optuna, rank 0 runs the study and broadcasts each
trial's parameters (a FixedTrial) to the other ranks, which run the same number of trials.
Pruning is agreed by all ranks (all_reduce), so a pruned trial stops on every rank at once.
The Trainer subclass the trials run in is search_trials.search_trainer.

After the search, the best parameters train the final model in the output folder itself
(see docs/trainer.md for why this is retrained rather than copied from the best trial).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ftjob_api import api

from . import checkpoints
from .exits import InvalidData, InvalidModel, InvalidSpec, write_json_atomic

log = logging.getLogger(__name__)

SEARCH_DIR = "search"
JOURNAL = "study.journal"
SEARCH_FILE = "search.json"
STUDY_NAME = "ftjob"
TRIAL_PREFIX = "trial-"
FINISHED = ("COMPLETE", "PRUNED")
# Errors that the same trial would raise again: the job fails, the trial is not retried.
PERMANENT = (InvalidSpec, InvalidData, InvalidModel)
# What GridSampler keeps of a trial's grid point; an enqueued retry needs it (see recover).
GRID_ATTRS = ("grid_id", "search_space")


class SearchStopped(Exception):
    """A stop request (preemption, suspend) ended a trial early: leave the search, keep the
    trial's checkpoint; the next attempt retries the trial from it."""

    def __init__(self, global_step: int) -> None:
        super().__init__(f"stopped on request during a trial at step {global_step}")
        self.global_step = global_step


class NoCompletedTrial(InvalidSpec):
    """Every trial was pruned or failed: the search space or metric needs changing."""


# --------------------------------------------------------------------------- pure parts


def suggest(space: dict[str, api.SearchParameter], trial: Any) -> dict[str, Any]:
    """The trial's value of every searched key (Optuna Trial or FixedTrial alike)."""
    values = {}
    for key, p in space.items():
        if p.type == "float":
            values[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
        elif p.type == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log,
                                            step=int(p.step or 1))
        else:
            values[key] = trial.suggest_categorical(key, p.choices)
    return values


def trial_dir(root: Path, number: int) -> Path:
    return root / SEARCH_DIR / f"{TRIAL_PREFIX}{number}"


def trial_record(t: Any) -> dict[str, Any]:
    """One trial as search.json shows it (from an Optuna FrozenTrial)."""
    record: dict[str, Any] = {"number": t.number, "state": t.state.name, "params": dict(t.params)}
    if t.value is not None and t.state.name != "PRUNED":
        record["value"] = t.value
    elif t.intermediate_values:  # a pruned or unfinished trial: its last evaluation
        step = max(t.intermediate_values)
        record["lastReported"] = {"step": step, "value": t.intermediate_values[step]}
    for attr, key in (("retry_of", "retryOf"), ("interrupted", "interrupted")):
        if attr in t.user_attrs:
            record[key] = t.user_attrs[attr]
    if t.datetime_start is not None:
        record["startedAt"] = t.datetime_start.isoformat(timespec="seconds")
    if t.datetime_complete is not None:
        record["completedAt"] = t.datetime_complete.isoformat(timespec="seconds")
    return record


def summarize(records: list[dict[str, Any]], search: api.HyperparameterSearch) -> dict[str, Any]:
    """search.json from the trial records (pure): finished count, best COMPLETE trial."""
    done = [r for r in records if r["state"] in FINISHED]
    scored = [r for r in records if r["state"] == "COMPLETE" and "value" in r]
    pick = min if search.direction == "minimize" else max
    best = pick(scored, key=lambda r: r["value"]) if scored else None
    out: dict[str, Any] = {
        "metric": search.metric,
        "direction": search.direction,
        "trialsCompleted": len(done),
        "trialsTotal": search.trials,
    }
    if best is not None:
        out.update(bestTrial=best["number"], bestValue=best["value"], bestParams=best["params"])
    out["trials"] = records
    return out


def status(summary: dict[str, Any]) -> dict[str, Any]:
    """status.search (api.SearchStatus, camelCase) from a search.json summary (pure)."""
    best = {name: summary[key] for name, key in (("best_trial", "bestTrial"),
                                                 ("best_value", "bestValue"),
                                                 ("best_params", "bestParams")) if key in summary}
    return api.to_patch(api.SearchStatus(
        trials=f"{summary['trialsCompleted']}/{summary['trialsTotal']}",
        trials_completed=summary["trialsCompleted"], trials_total=summary["trialsTotal"],
        **best), keep_none=True)


def describe(status: dict[str, Any]) -> str:
    """One line for a person: trials finished and the best so far (pure)."""
    line = f"search: {status.get('trials')} trials finished"
    if "bestTrial" in status:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in (status.get("bestParams") or {}).items())
        line += f"; best trial {status['bestTrial']} ({status.get('bestValue'):.4f}) with {params}"
    return line


def to_retry(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials a dead, stopped or failed run left unfinished and that were not retried yet
    (pure). A FAIL counts only when marked `interrupted` (a stop request or a retryable error);
    one that failed on a permanent error (PERMANENT) is not run again."""
    retried = {r["retryOf"] for r in records if "retryOf" in r}
    return [r for r in records
            if (r["state"] == "RUNNING" or (r["state"] == "FAIL" and r.get("interrupted")))
            and r["number"] not in retried]


def none_completed(records: list[dict[str, Any]]) -> bool:
    """Every trial ended without a value: pruned, or failed and retried (pure). A trial that
    failed and was not retried, or is unfinished, is not a search without result."""
    retried = {r["retryOf"] for r in records if "retryOf" in r}
    return bool(records) and all(r["state"] == "PRUNED" or
                                 (r["state"] == "FAIL" and r["number"] in retried)
                                 for r in records)


def remaining(records: list[dict[str, Any]], total: int) -> int:
    """Trials still to run: the total less the finished ones (pure). Waiting (enqueued)
    trials are among them: Optuna runs those first."""
    return max(0, total - sum(1 for r in records if r["state"] in FINISHED))


def repair_journal(path: Path) -> bool:
    """Cut a torn last line (a write cut short by a node crash) off the journal: Optuna would
    glue the next record onto it and then fail to read the study."""
    if not path.is_file():
        return False
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return False
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("cut a torn last record (%d bytes) off %s", len(data) - keep, path)
    return True


# --------------------------------------------------------------------------- Optuna


def open_study(output_dir: Path, search: api.HyperparameterSearch):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = output_dir / SEARCH_DIR / JOURNAL
    journal.parent.mkdir(parents=True, exist_ok=True)
    repair_journal(journal)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME,
                                direction=search.direction, load_if_exists=True)
    return storage, study


def sampler(search: api.HyperparameterSearch, trials_so_far: int):
    import optuna

    if search.sampler == "grid":
        grid = {k: p.grid() for k, p in search.space.items()}
        return optuna.samplers.GridSampler(grid, seed=search.seed)
    seed = None if search.seed is None else search.seed + trials_so_far
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def pruner(search: api.HyperparameterSearch):
    import optuna

    return optuna.pruners.MedianPruner() if search.pruner == "median" else optuna.pruners.NopPruner()


def records_of(study) -> list[dict[str, Any]]:
    return [trial_record(t) for t in study.get_trials(deepcopy=False)]


def recover(study, output_dir: Path) -> list[tuple[int, int]]:
    """Mark trials a dead run left RUNNING as failed and enqueue each unfinished trial again
    with its parameters; move its folder to the retry's. Returns (old, new) numbers."""
    from optuna.trial import TrialState

    moved = []
    for record in to_retry(records_of(study)):
        old = record["number"]
        if record["state"] == "RUNNING":
            study.tell(old, state=TrialState.FAIL)
        study.enqueue_trial(record["params"], user_attrs={"retry_of": old})
        trials = study.get_trials(deepcopy=False)
        retry, new = trials[-1], trials[-1].number
        # GridSampler gives an enqueued trial no grid point, yet its after_trial reads one
        # when a single point is left (KeyError): the retry takes the failed trial's.
        for key in GRID_ATTRS:
            if key in trials[old].system_attrs:
                study._storage.set_trial_system_attr(retry._trial_id, key,
                                                     trials[old].system_attrs[key])
        source, target = trial_dir(output_dir, old), trial_dir(output_dir, new)
        if source.is_dir():
            if target.exists():
                shutil.rmtree(target)
            os.replace(source, target)
        log.warning("trial %d did not finish: retried as trial %d with the same parameters%s",
                    old, new, ", from its checkpoint" if checkpoints.latest_complete(target) else "")
        moved.append((old, new))
    return moved


def tidy(output_dir: Path, records: list[dict[str, Any]]) -> None:
    """A finished trial never runs again: keep its newest trainer_state.json (its curves, for
    `ftjob report`) and delete its checkpoints, so the volume holds one trial's at a time."""
    for record in records:
        if record["state"] not in FINISHED and record["state"] != "FAIL":
            continue
        folder = trial_dir(output_dir, record["number"])
        found = checkpoints.candidates(folder)
        if not found:
            continue
        latest = checkpoints.latest_complete(folder)
        state = latest.path / checkpoints.TRAINER_STATE if latest else None
        if state is not None and state.is_file():
            shutil.copyfile(state, folder / checkpoints.TRAINER_STATE)
        for path in found:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(folder / checkpoints.ASIDE_DIR, ignore_errors=True)


# --------------------------------------------------------------------------- running the study


def objective_of(metric: str) -> Callable[[dict[str, float]], float]:
    def objective(metrics: dict[str, float]) -> float:
        if metric not in metrics:
            raise InvalidSpec(f"spec.hyperparameterSearch.metric: {metric} is not among the "
                           f"evaluation metrics ({', '.join(sorted(metrics))})")
        return float(metrics[metric])

    return objective


def broadcast(value: Any) -> Any:
    """Rank 0's value on every rank (no-op without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Recorder:
    """World rank 0: search.json and status.search after every change of the study."""

    def __init__(self, output_dir: Path, search: api.HyperparameterSearch, reporter: Any) -> None:
        self.path = output_dir / SEARCH_FILE
        self.search = search
        self.reporter = reporter
        self.last: dict[str, Any] | None = None

    def record(self, study) -> dict[str, Any]:
        summary = summarize(records_of(study), self.search)
        write_json_atomic(self.path, summary)
        tidy(self.path.parent, summary["trials"])
        if self.last is None or self.last["trialsCompleted"] != summary["trialsCompleted"]:
            finished = [r for r in summary["trials"] if r["state"] in FINISHED]
            if self.last is not None and finished:
                latest = max(finished, key=lambda r: r.get("completedAt", ""))
                log.info("trial %d %s: %s=%s; %d/%d finished; best trial %s (%s)",
                         latest["number"], latest["state"].lower(), self.search.metric,
                         latest.get("value", latest.get("lastReported", {}).get("value")),
                         summary["trialsCompleted"], summary["trialsTotal"],
                         summary.get("bestTrial"), summary.get("bestValue"))
        report = getattr(self.reporter, "report_search", None)
        if report is not None:
            try:
                report(status(summary))
            except Exception:  # noqa: BLE001 - reporting must never stop training
                log.exception("search reporter failed; the search goes on")
        self.last = summary
        return summary


@dataclass
class Best:
    params: dict[str, Any]
    status: dict[str, Any]  # status.search at the end (rank 0; empty on the others)


def run(*, output_dir: Path, search: api.HyperparameterSearch, trainer: Any, is_zero: bool,
        reporter: Any) -> Best:
    """Run the trials still to run with `trainer` (a search_trials.search_trainer instance with
    model_init)
    and return the best trial's parameters on every rank."""
    recorder = Recorder(output_dir, search, reporter) if is_zero else None
    kwargs: dict[str, Any] = {}
    todo = 0
    if is_zero:
        storage, study = open_study(output_dir, search)
        recover(study, output_dir)
        records = records_of(study)
        todo = remaining(records, search.trials)
        recorder.record(study)
        log.info("hyperparameter search: %d of %d trials finished, %d to run",
                 search.trials - todo, search.trials, todo)
        kwargs = dict(storage=storage, study_name=STUDY_NAME, load_if_exists=True,
                      sampler=sampler(search, len(records)), pruner=pruner(search))
        trainer.hooks.on_trial_start = lambda trial: recorder.record(trial.study)
    todo = broadcast(todo)
    if todo:
        try:
            trainer.hyperparameter_search(
                hp_space=lambda trial: suggest(search.space, trial),
                compute_objective=objective_of(search.metric),
                n_trials=todo, direction=search.direction, backend="optuna",
                hp_name=lambda trial: "",  # the folder is set per trial (SearchTrainer.train)
                **kwargs)
        except ValueError:
            # transformers reads study.best_trial after the trials, which raises ValueError
            # when none completed; NoCompletedTrial below says so (permanent, on every rank).
            if not (is_zero and none_completed(records_of(open_study(output_dir, search)[1]))):
                raise
    best, final = None, {}
    if is_zero:
        _, study = open_study(output_dir, search)
        summary = recorder.record(study)
        final = status(summary)
        best = summary.get("bestParams")
        if best is None:
            best = NoCompletedTrial(f"no trial of {search.trials} completed (all pruned or "
                                    "failed): nothing to train the final model with")
        else:
            log.info("best trial %d: %s=%s with %s", summary["bestTrial"], search.metric,
                     summary["bestValue"], best)
    best = broadcast(best)
    if isinstance(best, Exception):
        raise best
    return Best(best, final)
