"""Hyperparameter search pieces: suggestions, restart recovery on a real Optuna journal,
search.json and status.search."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from ftjob_operator import api
from ftjob_trainer import checkpoints, search
from ftjob_trainer.reporters import KubernetesReporter

from tests.unit.trainer.test_reporters import apiserver  # noqa: F401 - fixture

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
    trainer = search.search_trainer(FakeBase)()
    trial = PruningTrial(prune=False)
    trainer._report_to_hp_search(trial, 10, {"eval_loss": 0.9})
    assert trial.reported == [(10, 0.9)] and trainer.objective == 0.9
    with pytest.raises(optuna.TrialPruned):
        trainer._report_to_hp_search(PruningTrial(prune=True), 20, {"eval_loss": 1.2})
    assert trainer.callback_handler.ended == 1
    # The other ranks hold a FixedTrial: they report nothing and follow rank 0's decision
    # (an all_reduce; alone, their own False).
    other = search.search_trainer(FakeBase)()
    other._report_to_hp_search(optuna.trial.FixedTrial({"learning_rate": 1e-3}), 10,
                               {"eval_loss": 0.9})
    assert other.objective == 0.9 and other.callback_handler.ended == 0
