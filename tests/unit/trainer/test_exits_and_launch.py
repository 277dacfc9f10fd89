"""Failure classification, the launcher's choice among ranks, and the termination message."""

from __future__ import annotations

import json

import pytest
from ftjob_api.contract import TERMINATION_MESSAGE_LIMIT, ExitCode, debugging
from ftjob_trainer import exits, launch, torchrun
from ftjob_trainer.exits import RankFailure


def test_classify_known_and_unknown_failures():
    import torch

    assert exits.classify_exception(exits.InvalidData("spec.dataset.x: bad")).exit_code == ExitCode.INVALID_DATA
    assert exits.classify_exception(torch.OutOfMemoryError("CUDA out of memory")).exit_code == ExitCode.OUT_OF_MEMORY
    assert exits.classify_exception(RuntimeError("DefaultCPUAllocator: can't allocate memory: out of memory")) \
        .exit_code == ExitCode.OUT_OF_MEMORY
    assert exits.classify_exception(RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer; "
                                       "Connection reset by peer")).exit_code == ExitCode.DISTRIBUTED_TIMEOUT
    assert exits.classify_exception(torch.distributed.DistBackendError("NCCL watchdog timed out")) \
        .exit_code == ExitCode.DISTRIBUTED_TIMEOUT
    unknown = exits.classify_exception(KeyError("x"), rank=3)
    assert (unknown.exit_code, unknown.reason, unknown.rank) == (ExitCode.UNKNOWN, "Error", 3)
    assert unknown.message.startswith("KeyError")


def test_most_significant_failure_wins_ties_go_to_the_lowest_rank():
    oom = RankFailure(20, "OutOfMemory", "m", rank=0)
    preempted = RankFailure(30, "Preempted", "p", rank=2)
    permanent = RankFailure(11, "InvalidData", "d", rank=3)
    unknown = RankFailure(1, "Error", "u", rank=1)
    assert exits.most_significant([unknown, oom, preempted, permanent]) is permanent
    assert exits.most_significant([unknown, oom, preempted]) is preempted
    assert exits.most_significant([unknown, oom]) is oom
    assert exits.most_significant([RankFailure(1, "Error", "b", 1), RankFailure(1, "Error", "a", 0)]).rank == 0
    assert exits.most_significant([]) is None


def test_decide_success_keeps_numbers_only():
    decision = launch.decide_exit(0, [], {"globalStep": 5, "resumedFromStep": 0, "finalModel": "/o/final",
                                     "metrics": {"eval_accuracy": 0.9, "note": "x", "nan": float("nan")}},
                             stop_requested=False)
    assert decision.exit_code == 0
    assert decision.summary == {"status": "succeeded", "globalStep": 5, "resumedFromStep": 0,
                                "finalModel": "/o/final", "metrics": {"eval_accuracy": 0.9}}


def test_decide_uses_the_ranks_failure_not_torchruns_code():
    failures = [RankFailure(30, "Preempted", "stopped", 1, global_step=41), RankFailure(1, "Error", "x", 0)]
    decision = launch.decide_exit(1, failures, None, stop_requested=True)
    assert decision.exit_code == ExitCode.PREEMPTED
    assert decision.summary == {"status": "failed", "exitCode": 30, "reason": "Preempted",
                                "message": "stopped", "globalStep": 41}


def test_decide_without_any_record():
    assert launch.decide_exit(1, [], None, stop_requested=False).exit_code == ExitCode.UNKNOWN
    assert launch.decide_exit(1, [], None, stop_requested=True).exit_code == ExitCode.PREEMPTED
    assert "killed by SIGKILL" in launch.decide_exit(-9, [], None, False).summary["message"]
    # ftjob_trainer.torchrun reports a worker killed by signal N as 128 + N.
    assert "killed by SIGKILL" in launch.decide_exit(137, [], None, False).summary["message"]
    assert "killed" not in launch.decide_exit(1, [], None, False).summary["message"]


@pytest.mark.parametrize("worker_exitcode, status", [(11, 11), (-9, 137), (-15, 143), (0, 1)])
def test_torchrun_turns_a_failed_worker_into_its_exit_status(worker_exitcode, status):
    assert torchrun.exit_status(worker_exitcode) == status


def test_failure_files_round_trip_and_torn_files_are_ignored(tmp_path):
    exits.write_failure(tmp_path, RankFailure(11, "InvalidData", "bad", rank=1))
    (tmp_path / "failure-rank0.json").write_text('{"exit_code": 1')  # killed mid-write
    assert exits.read_failures(tmp_path) == [RankFailure(11, "InvalidData", "bad", rank=1)]


@pytest.mark.parametrize("message_len, metric_count", [(10_000, 3), (100, 400)])
def test_summary_always_fits_the_termination_message(message_len, metric_count):
    summary = {"status": "failed", "exitCode": 11, "reason": "InvalidData", "message": "m" * message_len,
               "metrics": {f"eval_metric_{i}": 0.123456789 for i in range(metric_count)}}
    line = exits.encode_summary(summary)
    assert len(line.encode()) <= TERMINATION_MESSAGE_LIMIT
    decoded = json.loads(line)
    assert decoded["status"] == "failed" and decoded["exitCode"] == 11


def test_torchrun_command_never_restarts_on_its_own():
    cmd = launch.torchrun_command(["--nnodes=2", "--node-rank=0"], python="py")
    assert cmd == ["py", "-m", "ftjob_trainer.torchrun", "--nnodes=2", "--node-rank=0",
                   "--max-restarts=0", "-m", "ftjob_trainer.entrypoint"]


def test_termination_log_path_from_environment(tmp_path):
    assert launch.termination_log_path({"FTJOB_TERMINATION_LOG": str(tmp_path / "t")}) == tmp_path / "t"


def test_an_unreachable_hub_is_retryable_a_missing_model_is_not():
    from ftjob_trainer.modeling import load_error

    offline = OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    missing = OSError("bert-base-uncasd is not a local folder and is not a valid model identifier")
    assert exits.classify_exception(load_error(offline, "spec.model.name", "x")).exit_code == ExitCode.UNKNOWN
    assert exits.classify_exception(load_error(missing, "spec.model.name", "x")).exit_code == ExitCode.INVALID_MODEL
    # A local folder cannot be fixed by waiting.
    assert exits.classify_exception(load_error(offline, "spec.model.path", "x")).exit_code == ExitCode.INVALID_MODEL
    # A plain connection error outside torch.distributed is not a distributed timeout.
    assert exits.classify_exception(ConnectionError("reset")).exit_code == ExitCode.UNKNOWN


def test_a_dataset_on_an_unreachable_hub_is_retryable(monkeypatch):
    import datasets
    from ftjob_api import api
    from ftjob_trainer import data

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'klue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(exits.HubUnreachable, match="spec.dataset.name: cannot reach the Hub for 'klue'"):
        data.load_splits(api.DatasetSource(name="klue", config="ynat"))


@pytest.mark.parametrize("value, on", [(None, False), ("", False), ("0", False), ("1", True),
                                       ("yes", True)])
def test_the_debug_switch_is_on_for_any_value_but_empty_and_zero(value, on):
    env = {} if value is None else {"FTJOB_DEBUG": value}
    assert debugging(env) is on
