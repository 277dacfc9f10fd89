"""pod_env.trainer_env: the one builder of the trainer's contract variables, used by the
operator's render (pods) and by `ftjob run --local`."""

from __future__ import annotations

from ftjob_api import api, contract, pod_env

SPEC = {"task": "causal-lm", "model": {"path": "/m"}, "dataset": {"files": {"train": "t.jsonl"}}}


def _spec(**fields):
    return api.parse_spec({**SPEC, **fields})


def test_local_gets_only_what_the_spec_and_the_run_give():
    env = pod_env.trainer_env(_spec(), job_file="/r/job.json", output_dir="/r", job_name="x",
                              reporter="console")
    assert env == {contract.ENV_JOB_FILE: "/r/job.json", contract.ENV_OUTPUT_DIR: "/r",
                   contract.ENV_JOB_NAME: "x", contract.ENV_REPORTER: "console"}
    env = pod_env.trainer_env(_spec(monitoring={"metricsPort": 9400,
                                                "progressIntervalSeconds": 2}),
                              job_file="/r/job.json", output_dir="/r", job_name="x",
                              reporter="console")
    assert env[contract.ENV_METRICS_PORT] == "9400"
    assert env[contract.ENV_PROGRESS_INTERVAL] == "2"


def test_a_pod_gets_every_variable_in_the_order_it_lists_them():
    env = pod_env.trainer_env(_spec(), job_file="/etc/ftjob/job.json", output_dir="/output",
                              job_name="x", reporter="kubernetes", namespace="ns", job_uid="u",
                              attempt=3, termination_log="/dev/termination-log",
                              hf_home="/output/.cache/huggingface", metrics_port_default=9400,
                              progress_interval_default=5, deepspeed_config="/etc/ds.json")
    assert list(env) == [contract.ENV_JOB_FILE, contract.ENV_OUTPUT_DIR, contract.ENV_JOB_NAME,
                         contract.ENV_NAMESPACE, contract.ENV_JOB_UID, contract.ENV_ATTEMPT,
                         contract.ENV_REPORTER, contract.ENV_PROGRESS_INTERVAL,
                         contract.ENV_TERMINATION_LOG, "HF_HOME", contract.ENV_METRICS_PORT,
                         contract.ENV_DEEPSPEED_CONFIG]
    assert env[contract.ENV_ATTEMPT] == "3" and env[contract.ENV_PROGRESS_INTERVAL] == "5"


def test_metrics_port_zero_turns_off_a_default():
    assert pod_env.metrics_port(_spec(monitoring={"metricsPort": 0}), 9400) is None
    assert pod_env.metrics_port(_spec(), 9400) == 9400
    assert pod_env.metrics_port(_spec()) is None
