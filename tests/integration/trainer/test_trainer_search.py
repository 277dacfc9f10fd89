"""Hyperparameter search under torchrun (2 processes): 4 trials end to end, a kill -9 during
the third and a relaunch, a SIGTERM during a trial and a relaunch; and the same search at
1 process through `ftjob run --local`.

The search draws only learning_rate (random sampler, seed 3), so the first three trials of
every run here have the same parameters; with 40 steps at a global batch of 8 they reach
clearly different eval losses (measured: 1.092, 0.689, 1.097, 1.096 at 1 process).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftjob_api.contract import ExitCode
from ftjob_trainer import checkpoints, search
from tests.integration.trainer.helpers import classification_spec, poll, run_to_end, start

TRIALS = 4
GLOBAL_BATCH = 8
# Resumed and uninterrupted runs agree to the last bit on CPU/gloo (test_trainer_resume).
EXACT = 1e-6
# 1 vs 2 processes: same rows and weights, other dropout masks (test_trainer_world_size).
REL_TOLERANCE = 0.15


def search_spec(tiny, nproc: int = 2, trials: int = TRIALS) -> dict:
    spec = classification_spec(tiny, max_steps=40, save_steps=10, logging_steps=10,
                               warmup_steps=0, per_device_train_batch_size=GLOBAL_BATCH // nproc)
    del spec["trainingArguments"]["learning_rate"]
    spec["hyperparameterSearch"] = {
        "trials": trials, "sampler": "random", "seed": 3,
        "space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}}}
    return spec


def summary(run) -> dict:
    return json.loads((run.output_dir / search.SEARCH_FILE).read_text())


def by_number(doc: dict) -> dict[int, dict]:
    return {t["number"]: t for t in doc["trials"]}


def complete(doc: dict) -> list[dict]:
    return [t for t in doc["trials"] if t["state"] == "COMPLETE"]


def assert_best_trains_final(run, doc: dict) -> None:
    values = {t["number"]: t["value"] for t in complete(doc)}
    assert doc["bestTrial"] == min(values, key=values.get)
    assert doc["bestValue"] == values[doc["bestTrial"]]
    # The final model is trained again from the pretrained weights with the best parameters:
    # with the same seed it ends exactly where the best trial ended.
    final_eval = run.metrics()["metrics"]["eval_loss"]
    assert math.isclose(final_eval, doc["bestValue"], rel_tol=0, abs_tol=EXACT), (final_eval, doc)
    assert (run.output_dir / "final" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    run = run_to_end(tmp_path_factory.mktemp("search"), search_spec(tiny), nproc=2)
    assert run.proc.returncode == 0, run.log()
    return run


def test_four_trials_then_the_best_parameters_train_the_final_model(uninterrupted):
    doc = summary(uninterrupted)
    assert (doc["trialsCompleted"], doc["trialsTotal"]) == (TRIALS, TRIALS)
    assert [t["number"] for t in complete(doc)] == [0, 1, 2, 3]
    rates = [t["params"]["learning_rate"] for t in complete(doc)]
    assert len(set(rates)) == TRIALS and all(1e-4 <= r <= 3e-2 for r in rates)
    # A fresh 3-class head scores about ln 3; the trials are real training runs that differ.
    values = [t["value"] for t in complete(doc)]
    assert all(v < math.log(3) + 0.05 for v in values)
    assert max(values) - min(values) > 0.01, values
    assert_best_trains_final(uninterrupted, doc)
    assert uninterrupted.summary()["search"] == search.status(doc)  # the termination message
    # A finished trial keeps its curves, not its checkpoints.
    for number in range(TRIALS):
        folder = search.trial_dir(uninterrupted.output_dir, number)
        assert (folder / "trainer_state.json").is_file()
        assert checkpoints.candidates(folder) == []


def trial_running_with_checkpoint(output_dir, number: int):
    try:
        doc = json.loads((output_dir / search.SEARCH_FILE).read_text())
    except (OSError, ValueError):
        return None
    trial = by_number(doc).get(number)
    if trial is None or trial["state"] != "RUNNING":
        return None
    return checkpoints.latest_complete(search.trial_dir(output_dir, number))


def test_kill9_during_trial_3_then_relaunch_keeps_finished_trials_and_resumes_the_third(
        uninterrupted, tiny, tmp_path):
    spec = search_spec(tiny)
    killed = start(tmp_path, spec, nproc=2, isolate=True)
    ckpt = poll(lambda: trial_running_with_checkpoint(killed.output_dir, 2), 300,
                "trial 2 (the third) running with a complete checkpoint")
    os.kill(killed.proc.pid, signal.SIGKILL)  # the PID namespace dies with it, like a pod
    killed.wait(30)
    before = by_number(summary(killed))
    assert before[2]["state"] == "RUNNING", "the third trial ended before the kill"
    assert [before[n]["state"] for n in (0, 1)] == ["COMPLETE", "COMPLETE"]

    relaunched = start(tmp_path, spec, nproc=2)
    assert relaunched.wait() == 0, relaunched.log()
    doc = summary(relaunched)
    after = by_number(doc)
    log = relaunched.log(tail=None)
    assert "2 of 4 trials finished, 2 to run" in log
    # Trials 0 and 1 were kept, not run again.
    for n in (0, 1):
        assert after[n] == before[n]
    # The interrupted trial failed and was retried once with its parameters, from its
    # checkpoint, and ended where the uninterrupted run's third trial ended.
    assert after[2]["state"] == "FAIL"
    retries = [t for t in doc["trials"] if t.get("retryOf") == 2]
    assert len(retries) == 1 and retries[0]["state"] == "COMPLETE"
    retry = retries[0]
    assert retry["params"] == after[2]["params"]
    folder = search.trial_dir(relaunched.output_dir, retry["number"])
    assert f"resuming from {folder}/checkpoint-" in log
    assert int(log.split(f"resuming from {folder}/checkpoint-")[1].split()[0]) >= ckpt.step
    expected = by_number(summary(uninterrupted))[2]
    assert retry["params"] == expected["params"]
    assert math.isclose(retry["value"], expected["value"], rel_tol=0, abs_tol=EXACT)
    # Exactly four finished trials, and the best of them trained the final model.
    assert len(complete(doc)) == TRIALS
    assert (doc["trialsCompleted"], doc["trialsTotal"]) == (TRIALS, TRIALS)
    assert_best_trains_final(relaunched, doc)


def test_sigterm_during_a_trial_exits_preempted_and_the_relaunch_resumes_that_trial(
        uninterrupted, tiny, tmp_path):
    spec = search_spec(tiny, trials=2)
    run = start(tmp_path, spec, nproc=2)
    poll(lambda: trial_running_with_checkpoint(run.output_dir, 0), 300,
         "trial 0 running with a complete checkpoint")
    run.proc.send_signal(signal.SIGTERM)  # to the launcher, as the kubelet does to PID 1
    assert run.wait(120) == ExitCode.PREEMPTED, run.log()
    stopped = run.summary()["globalStep"]
    assert 10 <= stopped < 40
    assert checkpoints.latest_complete(search.trial_dir(run.output_dir, 0)).step == stopped

    relaunched = start(tmp_path, spec, nproc=2)
    assert relaunched.wait() == 0, relaunched.log()
    doc = summary(relaunched)
    first = by_number(doc)[0]
    assert first["state"] == "FAIL" and first["interrupted"] is True
    retry = next(t for t in doc["trials"] if t.get("retryOf") == 0)
    folder = search.trial_dir(relaunched.output_dir, retry["number"])
    assert f"resuming from {folder}/checkpoint-{stopped} " in relaunched.log(tail=None)
    expected = by_number(summary(uninterrupted))[0]
    assert retry["params"] == expected["params"]
    assert math.isclose(retry["value"], expected["value"], rel_tol=0, abs_tol=EXACT)
    assert len(complete(doc)) == 2 and doc["trialsCompleted"] == 2
    assert_best_trains_final(relaunched, doc)


def test_the_same_search_at_one_process_with_ftjob_run_local(uninterrupted, tiny, tmp_path):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump({
        "apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": "search-one"}, "spec": search_spec(tiny, nproc=1)}))
    output = tmp_path / "output"
    ftjob = Path(sys.executable).parent / "ftjob"
    done = subprocess.run([str(ftjob), "run", str(manifest), "--local", "--nproc", "1",
                           "--output", str(output)], capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home()),
                               "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu",
                               "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    doc = json.loads((output / search.SEARCH_FILE).read_text())
    two = complete(summary(uninterrupted))
    one = complete(doc)
    assert len(one) == TRIALS
    # Rank 0 runs the study: the same draws at 1 and at 2 processes; at 2, every rank trained
    # each trial with them (a rank with other values would not reproduce the best trial).
    assert [t["params"] for t in one] == [t["params"] for t in two]
    for a, b in zip(one, two):
        assert math.isclose(a["value"], b["value"], rel_tol=REL_TOLERANCE), (a, b)
    assert doc["bestTrial"] == summary(uninterrupted)["bestTrial"]
    final_eval = json.loads((output / "metrics.json").read_text())["metrics"]["eval_loss"]
    assert math.isclose(final_eval, doc["bestValue"], rel_tol=0, abs_tol=EXACT)
    # The console shows the search; the closing lines name the best trial.
    assert "search: 0/4 trials finished" in done.stderr
    assert f"search: 4/4 trials finished; best trial {doc['bestTrial']}" in done.stderr
    assert f"best trial {doc['bestTrial']} ({doc['bestValue']:.4f})" in done.stdout
    assert json.loads((output / "termination-log").read_text())["search"]["trials"] == "4/4"


def test_median_pruning_at_two_processes_stops_poor_trials_on_every_rank(tiny, tmp_path):
    spec = search_spec(tiny, trials=8)
    spec["trainingArguments"].update(max_steps=30, eval_strategy="steps", eval_steps=10)
    spec["hyperparameterSearch"].update(pruner="median", seed=5)
    run = run_to_end(tmp_path, spec, nproc=2)  # a rank left training alone would hang here
    assert run.proc.returncode == 0, run.log()
    doc = summary(run)
    pruned = [t for t in doc["trials"] if t["state"] == "PRUNED"]
    assert pruned, doc  # measured: 3 of the last 3 after Optuna's 5 startup trials
    assert doc["trialsCompleted"] == 8 and len(complete(doc)) + len(pruned) == 8
    for trial in pruned:
        assert trial["number"] >= 5 and trial["lastReported"]["step"] < 30
    assert_best_trains_final(run, doc)
