"""The operator sets every FTJOB_* variable the trainer reads on each pod, empty when it has
nothing to set (so podTemplate.envFrom cannot supply one): the trainer reads empty as unset."""

from __future__ import annotations

import json
from pathlib import Path

from ftjob_api import api, contract
from ftjob_operator import render
from ftjob_trainer import job as trainer_job, testing
from ftjob_trainer.launch import termination_log_path

from tests.unit.operator.test_operator_render import CPU_SPEC, JOB, SETTINGS


def test_the_trainer_reads_every_empty_variable_as_unset(tmp_path):
    pod = render.render_pod(JOB, api.parse_spec(CPU_SPEC | {"monitoring": {}}), 1, 0, SETTINGS)
    # The container sees a variable with neither `value` nor `valueFrom` as the empty string.
    env = {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0]["env"]
           if "valueFrom" not in e}
    blank = {n: "" for n in contract.TRAINER_ENV if env.get(n) == ""}
    assert {"FTJOB_TEST_MODE", "FTJOB_DEEPSPEED_CONFIG", "FTJOB_STOP_FILE"} <= blank.keys()
    assert testing.hooks(blank) == []
    assert termination_log_path({contract.ENV_TERMINATION_LOG: ""}) in (
        None, Path(contract.DEFAULT_TERMINATION_LOG))
    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps({"metadata": {"name": "j", "namespace": "n"},
                                     "spec": CPU_SPEC}))
    ctx = trainer_job.load_context({**blank, contract.ENV_JOB_FILE: str(spec_file),
                                    contract.ENV_REPORTER: "", contract.ENV_ATTEMPT: "",
                                    contract.ENV_PROGRESS_INTERVAL: ""})
    assert (ctx.metrics_port, ctx.deepspeed_config, ctx.attempt) == (None, None, 0)
    assert (ctx.progress_interval, ctx.reporter) == (5.0, "none")
