"""The loss users read does not depend on the number of processes, for every task.

transformers 5.23 multiplies the loss by the number of processes when
`average_tokens_across_devices` is on and the model's forward takes **kwargs. ftjob keeps
that only where the model's loss divides by the all-ranks token count (causal LM); these
runs compare the first logged loss and the eval loss of one job at 1 and at 2 processes,
with the same global batch (16) and therefore the same first 16 training rows.
"""

from __future__ import annotations

import json
import math

import pytest
from tests.integration.trainer.helpers import classification_spec, run_to_end

# Same rows, same initial weights; what differs between 1 and 2 processes is dropout's
# random masks and summation order. World-size scaling would be a factor of 2.
REL_TOLERANCE = 0.1
GLOBAL_BATCH = 16


def task_spec(task: str, tiny) -> dict:
    short = {"max_steps": 2, "logging_steps": 1, "save_strategy": "no", "seed": 7,
             "per_device_eval_batch_size": 8, "learning_rate": 1e-3}
    if task == "sequence-classification":
        spec = classification_spec(tiny)
        spec["trainingArguments"] = dict(short)
        return spec
    if task == "causal-lm":
        return {"task": task, "model": {"path": str(tiny["gpt2"])},
                "dataset": {"files": {"train": str(tiny["lm_train"]),
                                      "validation": str(tiny["lm_val"])}, "maxLength": 32},
                "trainingArguments": dict(short)}
    return {"task": task, "model": {"path": str(tiny["t5"])},
            "dataset": {"files": {"train": str(tiny["s2s_train"]), "validation": str(tiny["s2s_val"])},
                        "textColumn": "source", "targetColumn": "target", "maxLength": 32},
            "trainingArguments": dict(short)}


def first_loss_and_eval(tmp_path, spec: dict, nproc: int) -> tuple[float, float]:
    spec = json.loads(json.dumps(spec))
    spec["trainingArguments"]["per_device_train_batch_size"] = GLOBAL_BATCH // nproc
    run = run_to_end(tmp_path / f"nproc{nproc}", spec, nproc=nproc)
    assert run.proc.returncode == 0, run.log()
    state = json.loads((run.output_dir / "trainer_state.json").read_text())
    first = next(e["loss"] for e in state["log_history"] if "loss" in e)
    return first, run.metrics()["metrics"]["eval_loss"]


# Classification (the case users hit first) runs in `make test-fast`; all three in `make test`.
@pytest.mark.parametrize("task", ["sequence-classification",
                                  pytest.param("causal-lm", marks=pytest.mark.slow),
                                  pytest.param("seq2seq", marks=pytest.mark.slow)])
def test_first_loss_and_eval_loss_do_not_scale_with_world_size(task, tiny, tmp_path):
    spec = task_spec(task, tiny)
    one = first_loss_and_eval(tmp_path, spec, 1)
    two = first_loss_and_eval(tmp_path, spec, 2)
    print(f"{task}: first loss 1 proc {one[0]:.4f}, 2 procs {two[0]:.4f}; "
          f"eval_loss {one[1]:.4f} vs {two[1]:.4f}")
    assert math.isclose(one[0], two[0], rel_tol=REL_TOLERANCE), (one, two)
    assert math.isclose(one[1], two[1], rel_tol=REL_TOLERANCE), (one, two)
    if task == "sequence-classification":
        # A fresh head gives near-uniform predictions: cross-entropy ln(3 labels).
        assert math.isclose(two[0], math.log(3), abs_tol=0.15), two
