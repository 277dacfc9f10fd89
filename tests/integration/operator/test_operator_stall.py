"""The real trainer against the real operator on the real control plane: a rank that hangs
is restarted (Stalled), and a suspend is recorded only with the checkpoint it really saved.

The test plays the kubelet for the job's one pod (`bring_up`) and runs that pod's container
itself: `ftjob-launch` with two ranks, reporting progress as the job's own ServiceAccount.
Deleting the pod ends that process, as the kubelet would (SIGTERM, or a kill).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from ftjob_api import naming
from ftjob_api.contract import ExitCode

from tests import tinymodels as tm
from tests.controlplane.install import service_account_kubeconfig
from tests.integration.operator.helpers import (TIMEOUT, Real, bring_up, condition, describe,
                                                events, manifest, pods, status, wait_event)
from tests.integration.trainer.helpers import Run, start
from tests.polling import wait_for

pytestmark = pytest.mark.cluster

# Generous: loading torch and the model on a shared machine takes tens of seconds.
TRAINER_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {"bert": tm.build_bert(root / "bert"),
            "train": tm.write_jsonl(root / "train.jsonl", tm.classification_rows(256, 1))}


@pytest.fixture
def h(cluster) -> Real:
    return Real(cluster)


def spec(tiny: dict[str, Path], max_steps: int, save_steps: int,
         **restart_policy: Any) -> dict[str, Any]:
    return {
        "model": {"path": str(tiny["bert"])},
        "dataset": {"files": {"train": str(tiny["train"])}, "maxLength": 32},
        "trainingArguments": {"max_steps": max_steps, "save_steps": save_steps,
                              "logging_steps": 1, "per_device_train_batch_size": 8,
                              "learning_rate": 3e-3, "seed": 7},
        "resources": {"nodes": 1, "cpu": "1", "memory": "1Gi"},
        "storage": {"accessModes": ["ReadWriteOnce"], "size": "1Gi"},
        "restartPolicy": {"maxRestarts": 2, "backoffSeconds": 0, **restart_policy},
    }


def run_pod_container(h: Real, tmp_path: Path, body: dict[str, Any], attempt: int,
                      **env: str) -> Run:
    """The job pod's container: ftjob-launch with 2 ranks, in its own PID namespace (a kill
    takes every rank, as a pod kill does), reporting as the job's ServiceAccount."""
    kubeconfig = service_account_kubeconfig(h.cluster.plane, h.ns, naming.trainer_account(
        body["metadata"]["name"]), tmp_path / f"trainer-{attempt}.kubeconfig")
    return start(tmp_path / "pod", body["spec"], nproc=2, isolate=True, name="job", env={
        "FTJOB_JOB_NAME": body["metadata"]["name"], "FTJOB_NAMESPACE": h.ns,
        "FTJOB_ATTEMPT": str(attempt), "FTJOB_REPORTER": "kubernetes",
        "FTJOB_PROGRESS_INTERVAL": "0", "KUBECONFIG": str(kubeconfig), **env})


def launcher_pid(run: Run) -> int:
    """ftjob-launch inside the PID namespace (PID 1 there), the one the kubelet signals."""
    import psutil

    children = wait_for(lambda: psutil.Process(run.proc.pid).children(), 30, "the launcher")
    return children[0].pid


def kill(run: Run) -> None:
    if run.proc.poll() is None:
        run.proc.kill()  # unshare --kill-child: the whole PID namespace goes
        run.proc.wait(30)


def stepped(h: Real, name: str, attempt: int, step: int):
    return lambda: ((p := status(h, name).get("progress") or {}).get("attempt") == attempt
                    and (p.get("globalStep") or 0) >= step and p)


def test_a_rank_that_stops_stepping_restarts_the_gang_as_stalled(h, tiny, tmp_path,
                                                                   run_operator):
    body = manifest("hang", **spec(tiny, max_steps=200, save_steps=2, stallTimeoutSeconds=20,
                                   startupTimeoutSeconds=600))
    with run_operator():
        h.create_job(body)
        bring_up(h, name="hang", nodes=1)
        trainer = run_pod_container(h, tmp_path, body, 1, FTJOB_TEST_MODE="1",
                                    FTJOB_TEST_HANG_AT_STEP="3")
        try:
            seen = wait_for(stepped(h, "hang", 1, 3), TRAINER_TIMEOUT, "the trainer to reach step 3",
                            describe=lambda: trainer.log())
            assert seen["activity"] in ("training", "saving") and seen["lastStepTime"]
            st = wait_for(lambda: (s := status(h, "hang")).get("restarts") == 1 and s, TIMEOUT,
                          "a Stalled restart", describe=lambda: describe(h, "hang"))
        finally:
            kill(trainer)
        assert trainer.proc.returncode is not None
        # Rank 1 never left step 3: the job did not end on its own, the operator restarted it.
        assert not (trainer.output_dir / "final").exists(), trainer.log()
        record = st["attempts"][0]
        assert record["attempt"] == 1 and record["reason"] == "Stalled", st["attempts"]
        assert record["lastStep"] == 3 and record["stepsLost"] == 1, record  # checkpoint-2
        assert "no training step since step 3 for" in record["message"], record
        restarting = condition(st, "Restarting")
        assert restarting["reason"] == "Stalled" or st["phase"] != "Restarting", st
        # Events are posted in the background, after the status patch: poll for it.
        wait_event(h, "Stalled", "hang")
        stalled = next(e for e in events(h, "hang") if e["reason"] == "Stalled")
        assert "since step 3 for" in stalled["message"], stalled
        assert "stallTimeoutSeconds 20s" in stalled["message"], stalled
        # The budget counts it, and the next attempt follows.
        wait_for(lambda: len(pods(h, "hang", 2)) == 1, TIMEOUT, "attempt 2",
                 describe=lambda: describe(h, "hang"))


def suspend_once_stepping(h: Real, name: str, pod: str, trainer: Run) -> None:
    """Once attempt 1 has trained 3 steps, suspend the job and wait for the pod's deletion."""
    wait_for(stepped(h, name, 1, 3), TRAINER_TIMEOUT, "the trainer to step",
             describe=lambda: trainer.log())
    h.patch_spec({"suspend": True}, name=name)
    wait_for(lambda: h.kubelet.get(h.ns, pod)["metadata"].get("deletionTimestamp"),
             TIMEOUT, "the pod to be deleted")


def test_suspend_records_the_verified_checkpoint_and_resume_loses_nothing(h, tiny, tmp_path,
                                                                          run_operator):
    body = manifest("pause", **spec(tiny, max_steps=400, save_steps=1000))
    with run_operator():
        h.create_job(body)
        bring_up(h, name="pause", nodes=1)
        pod = naming.pod("pause", 1, 0)
        h.kubelet.hold(h.ns, pod)  # Terminating until the container has stopped
        trainer = run_pod_container(h, tmp_path, body, 1)
        try:
            suspend_once_stepping(h, "pause", pod, trainer)
            wait_for(lambda: status(h, "pause")["message"].startswith(
                "suspending: waiting for 1 pod"), TIMEOUT, "the Suspending message")
            # The kubelet's SIGTERM to the container's PID 1.
            os.kill(launcher_pid(trainer), signal.SIGTERM)
            assert trainer.wait(TRAINER_TIMEOUT) == ExitCode.PREEMPTED, trainer.log()
        finally:
            kill(trainer)
        h.kubelet.remove(h.ns, pod)
        st = wait_for(lambda: (s := status(h, "pause")).get("attempts")
                      and s["attempts"][0].get("endTime") and s, TIMEOUT,
                      "the suspended attempt to be recorded", describe=lambda: describe(h, "pause"))
        record = st["attempts"][0]
        saved = st["checkpoint"]["latest"]["step"]
        assert (trainer.output_dir / f"checkpoint-{saved}").is_dir()
        assert record["reason"] == "Suspended" and record["lastStep"] == saved, record
        assert record["stepsLost"] == 0, record
        assert f"checkpoint-{saved} verified" in record["message"]
        assert condition(st, "SuspendCheckpointSaved")["status"] == "True"
        wait_event(h, "SuspendCheckpointSaved", "pause")

        h.patch_spec({"suspend": False}, name="pause")
        bring_up(h, attempt=2, name="pause", nodes=1)
        resumed = run_pod_container(h, tmp_path, body, 2)
        try:
            st = wait_for(lambda: (s := status(h, "pause")).get("attempts", [{}])[-1]
                          .get("firstStepTime") and s, TRAINER_TIMEOUT,
                          "attempt 2's first step", describe=lambda: resumed.log())
        finally:
            kill(resumed)
        first, second = st["attempts"]
        assert second["attempt"] == 2 and second["resumedFromStep"] == saved, st["attempts"]
        assert first["downtimeSeconds"] > 0 and first["stepsLost"] == 0
        assert st["goodput"]["stepsLost"] == 0 and st["goodput"]["productiveSeconds"] > 0


def test_suspend_whose_save_failed_says_so(h, tiny, tmp_path, run_operator):
    body = manifest("lost", **spec(tiny, max_steps=400, save_steps=1000))
    with run_operator():
        h.create_job(body)
        bring_up(h, name="lost", nodes=1)
        pod = naming.pod("lost", 1, 0)
        h.kubelet.hold(h.ns, pod)
        trainer = run_pod_container(h, tmp_path, body, 1)
        try:
            suspend_once_stepping(h, "lost", pod, trainer)
        finally:
            kill(trainer)  # past the grace period: no save
        h.kubelet.remove(h.ns, pod)
        st = wait_for(lambda: (s := status(h, "lost")).get("attempts")
                      and s["attempts"][0].get("endTime") and s, TIMEOUT,
                      "the suspended attempt to be recorded", describe=lambda: describe(h, "lost"))
        # Posted in the background: awaited while the operator still runs.
        wait_event(h, "SuspendCheckpointFailed", "lost")
    record = st["attempts"][0]
    assert record["reason"] == "Suspended" and record["stepsLost"] == record["lastStep"] >= 3
    assert "its checkpoint was not saved" in record["message"], record
    saved = condition(st, "SuspendCheckpointSaved")
    assert saved["status"] == "False" and saved["reason"] == "CheckpointMissing", saved
