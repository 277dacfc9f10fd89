"""`ftjob validate` and `ftjob crd` as a user runs them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import yaml

from .conftest import GOOD, ROOT



def ftjob(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ftjob_cli.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_valid_file_exits_zero(tmp_path):
    (tmp_path / "job.yaml").write_text(GOOD)
    result = ftjob("validate", str(tmp_path / "job.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stderr


def test_each_problem_on_its_own_line_with_file_and_path(tmp_path):
    bad = GOOD.replace("learning_rate: 5e-5", "lerning_rate: 5e-5, fp16: true, bf16: true")
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD + "---\n" + bad.replace("name: good", "name: bad"))
    result = ftjob("validate", str(path))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    prefix = f"{path}:17 (bad): error: "  # line of the keys in the second document
    assert lines == [
        prefix + "spec.trainingArguments.lerning_rate: unknown field; did you mean learning_rate?",
        prefix + "spec.trainingArguments.bf16: fp16 and bf16 cannot both be true; choose one",
        prefix + "spec.trainingArguments.fp16: fp16 needs a GPU but spec.resources.gpusPerNode "
        "is 0; use bf16 on CPU or request GPUs",
    ]


def test_cross_field_errors_reported_per_line(tmp_path):
    bad = GOOD.replace("{learning_rate: 5e-5, max_steps: 100}",
                       "{max_steps: 100, fp16: true, bf16: true, eval_strategy: steps}")
    path = tmp_path / "bad.yaml"
    path.write_text(bad)
    result = ftjob("validate", str(path))
    assert result.returncode == 1
    paths = [line.split(": ")[2] for line in result.stdout.strip().splitlines()]
    assert paths == ["spec.trainingArguments.bf16", "spec.trainingArguments.fp16",
                     "spec.trainingArguments.eval_strategy"]


def test_exit_nonzero_if_any_file_is_bad(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(GOOD.replace("causal-lm", "causal_lm"))
    result = ftjob("validate", str(tmp_path / "good.yaml"), str(tmp_path / "bad.yaml"))
    assert result.returncode == 1
    assert "bad.yaml:5 (good): error: spec.task:" in result.stdout


def test_line_numbers_point_at_the_field(tmp_path):
    path = tmp_path / "block.yaml"
    path.write_text(textwrap.dedent("""\
        apiVersion: finetune.dev/v1alpha1
        kind: FineTuneJob
        metadata:
          name: lines
        spec:
          task: causal-lm
          model:
            path: /models/gpt2
          dataset:
            files:
              train: /d/train.txt
          env:
            - name: A
              value: "1"
            - name: RANK
              value: "0"
          trainingArguments:
            max_steps: 10
            lerning_rate: 0.1
        """))
    result = ftjob("validate", str(path))
    assert result.returncode == 1
    located = sorted(line.split(" (lines)")[0] for line in result.stdout.splitlines())
    assert located == [f"{path}:11", f"{path}:15", f"{path}:19"]


def test_other_kinds_are_skipped_not_failed(tmp_path):
    path = tmp_path / "bundle.yaml"
    path.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: hf}\n---\n" + GOOD)
    result = ftjob("validate", str(path))
    assert result.returncode == 0
    assert "skipped (Secret" in result.stderr


def test_missing_file_and_broken_yaml_are_clear_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec:\n  task: [unclosed\n")
    result = ftjob("validate", str(tmp_path / "nope.yaml"), str(broken))
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}: cannot read" in result.stderr
    assert f"{broken}:3:1: not valid YAML: expected ',' or ']'" in result.stderr
    assert "(while parsing a flow sequence at line 2)" in result.stderr


def test_file_without_finetunejobs_fails(tmp_path):
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    result = ftjob("validate", str(path))
    assert result.returncode == 1
    assert "no FineTuneJob" in result.stderr


def test_warnings_do_not_fail(tmp_path):
    path = tmp_path / "nosave.yaml"
    path.write_text(GOOD.replace("max_steps: 100", "max_steps: 100, save_strategy: 'no'"))
    result = ftjob("validate", str(path))
    assert result.returncode == 0
    assert "warning: spec.trainingArguments.save_strategy" in result.stderr


def test_every_example_validates():
    examples = sorted(str(p) for p in (ROOT / "examples").glob("*.yaml"))
    assert len(examples) >= 4
    result = ftjob("validate", *examples)
    assert result.returncode == 0, result.stdout + result.stderr


def test_crd_command_prints_the_crd():
    result = ftjob("crd")
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout)["metadata"]["name"] == "finetunejobs.finetune.dev"
