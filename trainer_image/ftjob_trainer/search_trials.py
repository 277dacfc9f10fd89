"""The Trainer side of spec.hyperparameterSearch (search.py runs the study): a Trainer
subclass whose trials each run in their own folder with verified resume, take the drawn
values uncast, and are pruned on every rank at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ftjob_api import api

from . import checkpoints
from .search import PERMANENT, SearchStopped, suggest, trial_dir


@dataclass
class Hooks:
    """What the search Trainer needs besides Trainer's own arguments."""

    root: Path
    space: dict[str, api.SearchParameter]
    is_zero: bool
    stopped: Callable[[], int | None]  # step a stop request ended training at, or None
    on_trial_start: Callable[[Any], None]  # rank 0: the Optuna trial about to run


def _start_trial(trainer: Any, trial: Any) -> Any:
    """Set the trial's values and folder on `trainer.args`; the checkpoint to resume it from."""
    hooks = trainer.hooks
    # Before Trainer.train(): it seeds and calls model_init with these arguments.
    for key, value in suggest(hooks.space, trial).items():
        setattr(trainer.args, key, value)
    folder = trial_dir(hooks.root, trial.number)
    trainer.args.output_dir = str(folder)
    if hooks.is_zero:
        folder.mkdir(parents=True, exist_ok=True)
        hooks.on_trial_start(trial)
    with trainer.args.main_process_first(local=False, desc="find trial checkpoint"):
        return (checkpoints.prepare_resume(folder) if hooks.is_zero
                else checkpoints.latest_complete(folder))


def _train_trial(trainer: Any, train: Callable[..., Any], trial: Any, kwargs: dict) -> Any:
    """Trainer.train (`train`) on one trial, resumed from its checkpoint; what a pruned,
    failed or stopped trial leaves for Optuna and the next attempt."""
    import optuna

    resume = _start_trial(trainer, trial)
    hooks = trainer.hooks
    try:
        result = train(resume_from_checkpoint=str(resume.path) if resume else None, trial=trial,
                       **kwargs)
    except optuna.TrialPruned:
        _release_model(trainer)  # transformers frees a trial's model only after a completed one
        if hooks.is_zero:
            raise  # Optuna records the trial as pruned
        return None  # the other ranks go on to the next trial's broadcast
    except PERMANENT:
        raise  # the trial would fail the same way again: FAIL, not retried
    except Exception:
        # Out of memory, a lost peer, a collective failing after SIGTERM: Optuna stores the
        # trial as FAIL; marked, the next attempt retries it from its checkpoint (to_retry)
        # instead of counting it as done.
        if hooks.is_zero and hasattr(trial, "set_user_attr"):
            trial.set_user_attr("interrupted", True)
        raise
    if hooks.stopped() is not None and trainer.state.global_step < trainer.state.max_steps:
        if hooks.is_zero:
            trial.set_user_attr("interrupted", True)
        raise SearchStopped(trainer.state.global_step)
    return result


def _release_model(trainer: Any) -> None:
    from accelerate.utils.memory import release_memory

    trainer.model_wrapped, trainer.model = release_memory(trainer.model_wrapped, trainer.model)
    trainer.accelerator.clear()


def search_trainer(base: type) -> type:
    """A Trainer subclass for trials: each trial in its own folder with verified resume, the
    trial's values set without Trainer's cast to the old type (warmup_steps 0 -> int would
    turn 0.1 into 0), and pruning agreed by every rank.

    Two private Trainer hooks remain overridden, for want of a public equivalent:
    `_hp_search_setup` (Trainer sets `hp_space(trial)` on the arguments cast to each old
    value's type, with no public way to skip the cast; the override sets the drawn values
    again, uncast) and `_report_to_hp_search` (Trainer reports to Optuna and prunes on rank 0
    alone, which would leave the other ranks waiting in a collective; a callback cannot
    replace it, since Trainer calls the hook after the callbacks' `on_evaluate` and would
    report and prune again). The search values themselves go in through the public
    `hyperparameter_search(hp_space=..., compute_objective=...)`.
    """
    import optuna

    from .stopping import agree

    class SearchTrainer(base):
        hooks: Hooks

        def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
            if self.hp_search_backend is None or trial is None:
                return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                                     **kwargs)
            return _train_trial(self, super().train, trial, kwargs)

        def _hp_search_setup(self, trial):  # private Trainer hook: see the docstring above
            super()._hp_search_setup(trial)
            if self.hp_search_backend is not None and trial is not None:
                for key, value in suggest(self.hooks.space, trial).items():
                    setattr(self.args, key, value)

        def _report_to_hp_search(self, trial, step, metrics):  # private hook: see above
            if self.hp_search_backend is None or trial is None:
                return
            self.objective = self.compute_objective(dict(metrics))
            prune = False
            if hasattr(trial, "study"):  # rank 0's real trial; the others hold a FixedTrial
                trial.report(self.objective, step)
                prune = trial.should_prune()
            if agree(prune):
                self.callback_handler.on_train_end(self.args, self.state, self.control)
                raise optuna.TrialPruned()

    SearchTrainer.__name__ = f"Search{base.__name__}"
    return SearchTrainer
