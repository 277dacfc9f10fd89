"""The whole system: operator, trainer image and pods, on the backend given by conftest.

Written once for both backends (`--e2e-backend local|cluster`): everything goes
through kubectl and the API, except `backend.kill_container`, the one act that has no API.
Every job trains a tiny BERT, 2 nodes x 1 CPU process (gloo), on data a seed pod wrote
to a shared claim.
"""

from __future__ import annotations

import time

import pytest
from ftjob_api import naming

from . import jobs, kit
from .backends import UNCHECKED_NAMESPACE, refusal
from .kit import checkpoint_step, finished, probe_claim, seed, step_of
from tests.polling import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MAX_STEPS = 60
SAVE_STEPS = 10
TRAIN_TIMEOUT = 300  # seconds for a job to finish, restarts included, on 2 slow cores
EVENT_TIMEOUT = 60  # seconds for the operator's Events to be posted after the status

OK, CRASH, PREEMPT = "e2e-ok", "e2e-crash", "e2e-preempt"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def seeded(backend):
    """The shared claim with a tiny model and data for every training job."""
    seed(backend, [OK, CRASH, PREEMPT])
    return backend


def wait_status(backend, name, check, what, timeout=TRAIN_TIMEOUT):
    return kit.wait_status(backend, name, check, what, timeout)


# --------------------------------------------------------------------------- scenarios


def test_two_nodes_train_to_success(seeded):
    backend = seeded
    applied = time.monotonic()
    backend.apply(jobs.training_job(OK, MAX_STEPS, SAVE_STEPS))

    wait_status(backend, OK, lambda s: s.get("phase") == "Running" or finished(s), "Running")
    first = wait_status(backend, OK, lambda s: step_of(s) > 0 or finished(s), "a first step")
    assert not finished(first), f"finished before progress was seen: {first}"
    later = wait_status(backend, OK, lambda s: step_of(s) > step_of(first),
                        f"the step to advance past {step_of(first)}")
    done = wait_status(backend, OK, finished, "the end")
    print(f"{OK}: apply -> Succeeded in {time.monotonic() - applied:.0f}s, "
          f"steps seen {step_of(first)} -> {step_of(later)} -> {step_of(done)}")

    assert done["phase"] == "Succeeded", done
    assert step_of(done) == MAX_STEPS
    assert done.get("restarts", 0) == 0
    assert "train_loss" in (done.get("metrics") or {}), done.get("metrics")
    # The final model and the metrics file are on the claim.
    listing = probe_claim(backend, OK, "ls final; ls metrics.json").split()
    assert {"config.json", "model.safetensors", "metrics.json"} <= set(listing), listing


def test_kubectl_shows_columns_and_events(seeded):
    backend = seeded
    wait_status(backend, OK, finished, "the end")  # normally already there
    table = backend.kubectl("get", "ftj").stdout.splitlines()
    header = table[0].split()
    for column in ("NAME", "PHASE", "STEP", "PROGRESS", "RESTARTS", "AGE"):
        assert column in header, table
    row = next(line.split() for line in table[1:] if line.split()[0] == OK)
    assert row[header.index("PHASE")] == "Succeeded"
    assert row[header.index("STEP")] == str(MAX_STEPS)
    # The operator posts its Events in the background, the last one after the status that
    # says Succeeded: poll `kubectl describe` until they are all there.
    reasons = ("Started", "Running", "Succeeded")

    def described_with_events() -> str | None:
        text = backend.kubectl("describe", "ftj", OK).stdout
        listed = text.split("Events:", 1)[1] if "Events:" in text else ""
        return text if all(reason in listed for reason in reasons) else None

    described = wait_for(described_with_events, EVENT_TIMEOUT, f"{OK}: events {reasons}",
                         interval=1.0,
                         describe=lambda: backend.kubectl("describe", "ftj", OK).stdout)
    assert "Events:" in described
    for reason in reasons:
        assert reason in described.split("Events:", 1)[1], described


def test_sigkill_of_one_rank_restarts_the_gang_and_resumes(seeded):
    backend = seeded
    backend.apply(jobs.training_job(CRASH, MAX_STEPS, SAVE_STEPS))
    ready = wait_status(
        backend, CRASH,
        lambda s: checkpoint_step(s) >= SAVE_STEPS or finished(s), "a first checkpoint")
    assert not finished(ready), f"finished before the kill: {ready}"
    victim = f"{CRASH}-{ready['attempt']}-1"
    backend.kill_container(victim)

    done = wait_status(backend, CRASH, finished, "the end after the kill")
    assert done["phase"] == "Succeeded", done
    assert done.get("restarts", 0) == 1, done
    assert done["attempt"] == ready["attempt"] + 1
    assert done["checkpoint"]["resumedFromStep"] > 0, done["checkpoint"]
    assert done["checkpoint"]["resumedFromStep"] >= checkpoint_step(ready)
    assert step_of(done) == MAX_STEPS


# So many steps that no machine finishes before the deletion lands: the scenario waits for
# conditions, never for time. The job is deleted once the next attempt has resumed.
PREEMPT_STEPS = 1_000_000


@pytest.fixture(scope="module")
def preempted(seeded):
    """A job whose rank 1 pod is deleted gracefully mid-training: (status then, status once
    the next attempt trains past the step it resumed from)."""
    backend = seeded
    # No periodic checkpoint: whatever the resume starts from was saved on SIGTERM.
    backend.apply(jobs.training_job(PREEMPT, PREEMPT_STEPS, save_steps=10 * PREEMPT_STEPS))
    running = wait_status(backend, PREEMPT, lambda s: step_of(s) >= 5, "step 5")
    backend.delete("pods", f"{PREEMPT}-{running['attempt']}-1")

    def resumed_and_training(status):
        # Until the new attempt's trainer reports, status.progress and .checkpoint are still
        # the old attempt's (resumedFromStep 0 for a first attempt): wait for a resume point.
        resumed = (status.get("checkpoint") or {}).get("resumedFromStep") or 0
        return (status.get("attempt") == running["attempt"] + 1
                and status.get("phase") == "Running" and resumed > 0
                and step_of(status) > resumed)

    after = wait_status(backend, PREEMPT, resumed_and_training,
                        "the next attempt to train past its resume point")
    backend.kubectl("delete", "finetunejob", PREEMPT, "--wait=false")
    return running, after


def test_graceful_pod_deletion_checkpoints_on_sigterm_and_loses_no_step(preempted):
    running, after = preempted
    assert after["phase"] == "Running", after
    resumed = after["checkpoint"]["resumedFromStep"]
    # 0 steps lost: the resume starts at or after the last step reported before SIGTERM.
    assert resumed >= step_of(running) > 0, (resumed, step_of(running))
    assert after["checkpoint"]["latest"]["step"] == resumed, after["checkpoint"]


def test_graceful_pod_deletion_leaves_the_restart_budget_alone(preempted):
    _, after = preempted
    assert after.get("restarts", 0) == 0, "a preemption must not use the restart budget"
    assert after.get("preemptions", 0) == 1, after


def test_kubectl_apply_refuses_a_misspelt_training_argument(backend):
    """The chart's admission webhook, served by the operator's Deployment and called by the
    API server: the typo is refused at apply time, with its field path and a suggestion,
    and nothing is stored."""
    name = "e2e-typo"
    answer = refusal(backend, jobs.misspelt_job(name))
    assert answer is not None, "kubectl apply admitted a misspelt training argument"
    typo, suggestion = jobs.MISSPELT
    assert 'admission webhook "validate.finetune.dev" denied the request' in answer, answer
    assert f"spec.trainingArguments.{typo}: unknown field; did you mean {suggestion}?" \
        in answer, answer
    assert backend.get("finetunejobs", name) is None, "a refused job was stored"


def test_invalid_spec_and_missing_data_fail_without_restarts(seeded):
    backend = seeded
    invalid = jobs.training_job("e2e-invalid", MAX_STEPS, SAVE_STEPS,
                                no_such_training_argument=1)
    missing = jobs.training_job("e2e-nodata", MAX_STEPS, SAVE_STEPS, train_file="nope.jsonl")
    # Where the webhook checks, the invalid spec never gets in; the missing file is beyond
    # what admission can see, so that job is stored and fails when it runs.
    refused = refusal(backend, invalid)
    assert refused is not None and "no_such_training_argument" in refused, refused
    assert backend.get("finetunejobs", "e2e-invalid") is None
    backend.apply(missing)

    # A job the webhook never saw (a namespace outside its selector; under failurePolicy
    # Ignore, one applied while the operator was down): the operator's own check fails it,
    # with the problems the webhook reports.
    backend.create_namespace(UNCHECKED_NAMESPACE)
    unchecked = backend.in_namespace(UNCHECKED_NAMESPACE)
    unchecked.apply(invalid)
    bad_spec = kit.wait_status(unchecked, "e2e-invalid", finished, "Failed", timeout=60)
    assert bad_spec["phase"] == "Failed"
    assert "no_such_training_argument" in bad_spec["message"], bad_spec["message"]
    for problem in bad_spec["message"].split("; "):
        assert problem in refused, (problem, refused)
    assert unchecked.list("pods", f"{naming.LABEL_JOB}=e2e-invalid") == [], "pods for a bad spec"

    no_data = wait_status(backend, "e2e-nodata", finished, "Failed")
    assert no_data["phase"] == "Failed"
    assert "nope.jsonl" in no_data["message"], no_data["message"]
    assert no_data.get("restarts", 0) == 0 and no_data["attempt"] == 1, no_data
