"""Hyperparameter search pieces: suggestions, restart recovery on a real Optuna journal,
search.json and status.search."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from ftjob_api import api
from ftjob_trainer import checkpoints, search, search_trials
from ftjob_trainer.progress_reporters import KubernetesReporter

from tests.unit.trainer.test_progress_reporters import apiserver  # noqa: F401 - fixture

SPACE = {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
         "warmup_steps": {"type": "int", "low": 0, "high": 10, "step": 5},
         "lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosine"]}}


def make_search(**fields) -> api.HyperparameterSearch:
    return api.HyperparameterSearch.model_validate({"trials": 3, "space": SPACE, **fields})


def test_suggest_draws_every_key_in_range_and_a_fixed_trial_replays_it():
    space = make_search().space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    drawn = search.suggest(space, trial)
    assert 1e-5 <= drawn["learning_rate"] <= 1e-2
    assert drawn["warmup_steps"] in (0, 5, 10) and isinstance(drawn["warmup_steps"], int)
    assert drawn["lr_scheduler_type"] in ("linear", "cosine")
    # What the other ranks get from rank 0 (transformers broadcasts a FixedTrial).
    assert search.suggest(space, optuna.trial.FixedTrial(trial.params, trial.number)) == drawn


def record(number, state, value=None, **extra):
    out = {"number": number, "state": state, "params": {"learning_rate": 0.1 * (number + 1)}}
    if value is not None:
        out["value"] = value
    return {**out, **extra}


def test_summary_counts_completed_and_pruned_and_picks_the_best_completed():
    records = [record(0, "COMPLETE", 0.5), record(1, "PRUNED"), record(2, "FAIL"),
               record(3, "COMPLETE", 0.7), record(4, "RUNNING")]
    low = search.summarize(records, make_search(trials=5))
    assert (low["trialsCompleted"], low["trialsTotal"], low["bestTrial"]) == (3, 5, 0)
    high = search.summarize(records, make_search(trials=5, direction="maximize", metric="eval_f1"))
    assert (high["bestTrial"], high["bestValue"], high["metric"]) == (3, 0.7, "eval_f1")
    status = search.status(high)
    assert status == {"trials": "3/5", "trialsCompleted": 3, "trialsTotal": 5, "bestTrial": 3,
                      "bestValue": 0.7, "bestParams": {"learning_rate": 0.4}}
    api.SearchStatus.model_validate(status)  # the shape the CRD's status schema takes
    assert "bestTrial" not in search.summarize([record(0, "PRUNED")], make_search())
    assert search.remaining(records, 5) == 2
    assert search.remaining(records, 2) == 0


def test_to_retry_takes_running_and_interrupted_trials_once():
    records = [record(0, "COMPLETE", 1.0), record(1, "RUNNING"), record(2, "FAIL"),
               record(3, "FAIL", interrupted=True)]
    assert [r["number"] for r in search.to_retry(records)] == [1, 3]
    records += [record(4, "WAITING", retryOf=1)]
    assert [r["number"] for r in search.to_retry(records)] == [3]


def test_recover_fails_the_dead_trial_enqueues_it_and_moves_its_folder(tmp_path):
    _, study = search.open_study(tmp_path, make_search())
    space = make_search().space
    for _ in range(2):
        trial = study.ask()
        search.suggest(space, trial)
        study.tell(trial, 1.0)
    dead = study.ask()  # a run killed during this trial leaves it RUNNING
    params = search.suggest(space, dead)
    ckpt = search.trial_dir(tmp_path, dead.number) / "checkpoint-10"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_text("weights")
    checkpoints.write_marker(ckpt, 10)

    _, reopened = search.open_study(tmp_path, make_search())  # the relaunch
    assert search.recover(reopened, tmp_path) == [(2, 3)]
    trials = reopened.get_trials()
    assert trials[2].state == TrialState.FAIL
    assert trials[3].state == TrialState.WAITING and trials[3].user_attrs == {"retry_of": 2}
    assert checkpoints.latest_complete(search.trial_dir(tmp_path, 3)).step == 10
    assert not search.trial_dir(tmp_path, 2).exists()
    assert search.recover(reopened, tmp_path) == []  # retried already: not again
    assert search.remaining(search.records_of(reopened), 3) == 1
    # Optuna runs the waiting trial first, with the dead trial's parameters; killed in turn,
    # it is retried in turn.
    retried = reopened.ask()
    assert retried.number == 3 and search.suggest(space, retried) == params
    assert search.recover(reopened, tmp_path) == [(3, 4)]


def test_a_torn_last_journal_line_is_cut_so_the_study_reads_and_writes_again(tmp_path):
    _, study = search.open_study(tmp_path, make_search())
    study.enqueue_trial({"learning_rate": 1e-3})
    journal = tmp_path / search.SEARCH_DIR / search.JOURNAL
    good = journal.read_bytes()
    journal.write_bytes(good + b'{"op_code": 5, "worker_id": "x", "tri')  # a write cut short
    assert search.repair_journal(journal)
    assert journal.read_bytes() == good
    assert not search.repair_journal(journal)
    _, study = search.open_study(tmp_path, make_search())
    study.enqueue_trial({"learning_rate": 2e-3})
    _, study = search.open_study(tmp_path, make_search())
    assert [t.system_attrs["fixed_params"] for t in study.get_trials()] == [{"learning_rate": 1e-3},
                                                       {"learning_rate": 2e-3}]


def test_a_restarted_sampler_does_not_draw_the_first_runs_values_again():
    fresh = make_search(sampler="random", seed=3)
    first = optuna.create_study(sampler=search.sampler(fresh, 0)).ask()
    again = optuna.create_study(sampler=search.sampler(fresh, 0)).ask()
    later = optuna.create_study(sampler=search.sampler(fresh, 2)).ask()
    space = fresh.space
    assert search.suggest(space, first) == search.suggest(space, again)
    assert search.suggest(space, first) != search.suggest(space, later)
    grid = make_search(sampler="grid", trials=2, space={
        "warmup_steps": {"type": "int", "low": 0, "high": 10, "step": 5}})
    assert isinstance(search.sampler(grid, 0), optuna.samplers.GridSampler)


class Recording:
    def __init__(self):
        self.seen = []

    def report_search(self, status):
        self.seen.append(status)


def test_recorder_writes_search_json_reports_status_and_keeps_only_curves(tmp_path):
    _, study = search.open_study(tmp_path, make_search())
    trial = study.ask()
    search.suggest(make_search().space, trial)
    ckpt = search.trial_dir(tmp_path, 0) / "checkpoint-4"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": []}))
    checkpoints.write_marker(ckpt, 4)
    reporter = Recording()
    recorder = search.Recorder(tmp_path, make_search(), reporter)
    recorder.record(study)
    assert ckpt.is_dir()  # still running: its checkpoint is needed to resume
    study.tell(trial, 0.25)
    doc = recorder.record(study)
    assert json.loads((tmp_path / search.SEARCH_FILE).read_text()) == doc
    assert doc["trials"][0]["value"] == 0.25 and doc["bestTrial"] == 0
    assert [s["trials"] for s in reporter.seen] == ["0/3", "1/3"]
    assert not ckpt.exists()
    assert (search.trial_dir(tmp_path, 0) / "trainer_state.json").is_file()


def test_the_kubernetes_reporter_patches_status_search(apiserver):  # noqa: F811
    from kubernetes import client

    url, seen = apiserver
    config = client.Configuration()
    config.host = url
    reporter = KubernetesReporter("job-a", "team", api_client=client.ApiClient(config))
    status = {"trials": "1/4", "trialsCompleted": 1, "trialsTotal": 4, "bestTrial": 0,
              "bestValue": 0.5, "bestParams": {"learning_rate": 1e-3}}
    reporter.report_search(status)
    reporter.close()
    assert seen == [("PATCH", "/apis/finetune.dev/v1alpha1/namespaces/team/finetunejobs/job-a/status",
                     "application/merge-patch+json", {"status": {"search": status}})]


def test_a_missing_metric_is_an_invalid_spec_naming_the_metrics_there():
    objective = search.objective_of("eval_f1")
    assert objective({"eval_loss": 1.0, "eval_f1": 0.5}) == 0.5
    with pytest.raises(search.InvalidSpec, match="eval_f1 is not among .*eval_loss"):
        objective({"eval_loss": 1.0})


class FakeHandler:
    def __init__(self):
        self.ended = 0

    def on_train_end(self, *args):
        self.ended += 1


class FakeBase:
    """What SearchTrainer._report_to_hp_search uses of Trainer."""

    hp_search_backend = "optuna"
    args = state = control = None

    def __init__(self):
        self.callback_handler = FakeHandler()
        self.compute_objective = search.objective_of("eval_loss")


class PruningTrial:
    """Rank 0's Optuna trial, as far as reporting goes."""

    study = "the study"

    def __init__(self, prune):
        self.prune = prune
        self.reported = []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.prune


def test_pruning_is_reported_by_rank_zero_and_stops_training_through_trial_pruned():
    trainer = search_trials.search_trainer(FakeBase)()
    trial = PruningTrial(prune=False)
    trainer._report_to_hp_search(trial, 10, {"eval_loss": 0.9})
    assert trial.reported == [(10, 0.9)] and trainer.objective == 0.9
    with pytest.raises(optuna.TrialPruned):
        trainer._report_to_hp_search(PruningTrial(prune=True), 20, {"eval_loss": 1.2})
    assert trainer.callback_handler.ended == 1
    # The other ranks hold a FixedTrial: they report nothing and follow rank 0's decision
    # (an all_reduce; alone, their own False).
    other = search_trials.search_trainer(FakeBase)()
    other._report_to_hp_search(optuna.trial.FixedTrial({"learning_rate": 1e-3}), 10,
                               {"eval_loss": 0.9})
    assert other.objective == 0.9 and other.callback_handler.ended == 0


def test_a_grid_search_retries_an_interrupted_point_and_then_runs_the_rest(tmp_path):
    """GridSampler gives an enqueued trial no grid point; with one point left after the retry
    its after_trial read the missing grid_id (KeyError). The retry takes the dead trial's."""
    grid = make_search(sampler="grid", trials=2, space={
        "lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosine"]}})
    storage, study = search.open_study(tmp_path, grid)
    study.sampler = search.sampler(grid, 0)
    dead = study.ask()  # the run is killed during trial 0: left RUNNING
    first = search.suggest(grid.space, dead)

    storage, study = search.open_study(tmp_path, grid)  # the relaunch, as search.run does it
    assert search.recover(study, tmp_path) == [(0, 1)]
    records = search.records_of(study)
    resumed = optuna.create_study(storage=storage, study_name=search.STUDY_NAME,
                                  load_if_exists=True, sampler=search.sampler(grid, len(records)))
    seen = []

    def objective(trial):
        seen.append(search.suggest(grid.space, trial)["lr_scheduler_type"])
        return 1.0

    resumed.optimize(objective, n_trials=search.remaining(records, grid.trials))
    assert seen[0] == first["lr_scheduler_type"]  # the retry, with the dead trial's value
    assert sorted(seen) == ["cosine", "linear"]  # then the point not run yet
    assert [t.state for t in resumed.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE,
                                                       TrialState.COMPLETE]


def test_none_completed_means_every_trial_pruned_or_failed_and_retried():
    assert search.none_completed([record(0, "PRUNED"), record(1, "FAIL"),
                                  record(2, "PRUNED", retryOf=1)])
    assert not search.none_completed([record(0, "PRUNED"), record(1, "COMPLETE", 0.5)])
    assert not search.none_completed([record(0, "PRUNED"), record(1, "FAIL")])  # not retried
    assert not search.none_completed([])


class Accelerator:
    def __init__(self):
        self.cleared = 0

    def clear(self):
        self.cleared += 1


class TrainingBase(FakeBase):
    """What SearchTrainer.train uses of Trainer; its train raises `failure`."""

    failure: BaseException | None = None

    def __init__(self, tmp_path):
        super().__init__()
        import contextlib
        import types

        self.args = types.SimpleNamespace(
            output_dir=None, main_process_first=lambda **_: contextlib.nullcontext())
        self.model = self.model_wrapped = object()
        self.accelerator = Accelerator()
        self.hooks = search_trials.Hooks(root=tmp_path, space=make_search().space, is_zero=True,
                                         stopped=lambda: None, on_trial_start=lambda trial: None)

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        raise self.failure

    def _hp_search_setup(self, trial):
        pass


@pytest.mark.parametrize("failure, retried", [
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("NCCL error: remote process exited"), True),
    (search.InvalidSpec("spec.hyperparameterSearch.metric: eval_f1 is not among ..."), False),
])
def test_a_trial_ended_by_an_error_is_retried_unless_the_error_is_permanent(tmp_path, failure,
                                                                            retried):
    _, study = search.open_study(tmp_path, make_search())
    trainer = search_trials.search_trainer(TrainingBase)(tmp_path)
    trainer.failure = failure
    with pytest.raises(type(failure)):
        study.optimize(lambda trial: trainer.train(trial=trial), n_trials=1)
    assert study.get_trials()[0].state == TrialState.FAIL  # as Optuna stores it
    _, reopened = search.open_study(tmp_path, make_search())
    assert search.recover(reopened, tmp_path) == ([(0, 1)] if retried else [])


def test_a_pruned_trial_frees_its_model_on_every_rank(tmp_path):
    for is_zero in (True, False):
        trainer = search_trials.search_trainer(TrainingBase)(tmp_path)
        trainer.hooks.is_zero = is_zero
        trainer.failure = optuna.TrialPruned()
        trial = optuna.trial.FixedTrial({"learning_rate": 1e-3, "warmup_steps": 5,
                                         "lr_scheduler_type": "linear"}, 0)
        if is_zero:
            with pytest.raises(optuna.TrialPruned):
                trainer.train(trial=trial)
        else:
            assert trainer.train(trial=trial) is None
        assert trainer.model is None and trainer.model_wrapped is None
        assert trainer.accelerator.cleared == 1


def test_a_search_whose_trials_are_all_pruned_ends_with_no_completed_trial(tmp_path):
    """transformers' run_hp_search_optuna reads study.best_trial (ValueError when no trial
    completed) before search.run can say why: that would be exit 1, retried in vain."""
    import types

    from transformers.integrations.integration_utils import run_hp_search_optuna

    class Trainer:
        args = types.SimpleNamespace(process_index=0, world_size=1)
        hooks = types.SimpleNamespace(on_trial_start=None)
        ran = 0

        def train(self, resume_from_checkpoint=None, trial=None):
            Trainer.ran += 1
            search.suggest(make_search().space, trial)
            trial.report(1.0, 1)
            raise optuna.TrialPruned()

        def hyperparameter_search(self, hp_space, compute_objective, n_trials, direction,
                                  backend, hp_name, **kwargs):
            return run_hp_search_optuna(self, n_trials, direction, **kwargs)

    with pytest.raises(search.NoCompletedTrial, match="no trial of 3 completed"):
        search.run(output_dir=tmp_path, search=make_search(), trainer=Trainer(), is_zero=True,
                   reporter=None)
    assert Trainer.ran == 3


def test_a_search_does_not_keep_the_pretrained_model_loaded_next_to_the_trials(tmp_path):
    """Every trial and the final run load their own through model_init."""
    from ftjob_trainer import entrypoint
    from ftjob_trainer.job import JobContext
    from tests import tinymodels as tm
    from tests.integration.trainer.helpers import classification_spec

    tiny = {"bert": tm.build_bert(tmp_path / "bert"),
            "cls_train": tm.write_jsonl(tmp_path / "train.jsonl", tm.classification_rows(16, 1)),
            "cls_val": tm.write_jsonl(tmp_path / "val.jsonl", tm.classification_rows(8, 2))}
    spec = classification_spec(tiny, max_steps=2, eval_strategy="steps", eval_steps=1)
    plain = entrypoint.prepare(JobContext("a", None, api.parse_spec(spec), tmp_path / "a"))
    assert plain.model is not None
    spec["hyperparameterSearch"] = {"trials": 2, "space": {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}}
    searched = entrypoint.prepare(JobContext("b", None, api.parse_spec(spec), tmp_path / "b"))
    assert searched.model is None
    assert type(searched.model_init()) is type(plain.model)
