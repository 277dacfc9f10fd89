"""Session fixtures for trainer runs: tiny models and data files, and one baseline run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import tinymodels as tm
from tests.integration.trainer.helpers import Run, classification_spec, run_to_end


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "bert": tm.build_bert(root / "bert"),
        "gpt2": tm.build_gpt2(root / "gpt2"),
        "t5": tm.build_t5(root / "t5"),
        "cls_train": tm.write_jsonl(root / "cls-train.jsonl", tm.classification_rows(384, 1)),
        "cls_val": tm.write_jsonl(root / "cls-val.jsonl", tm.classification_rows(96, 2)),
        "lm_train": tm.write_jsonl(root / "lm-train.jsonl", tm.text_rows(256, 3)),
        "lm_val": tm.write_jsonl(root / "lm-val.jsonl", tm.text_rows(64, 4)),
        "s2s_train": tm.write_jsonl(root / "s2s-train.jsonl", tm.seq2seq_rows(256, 5)),
        "s2s_val": tm.write_jsonl(root / "s2s-val.jsonl", tm.seq2seq_rows(64, 6)),
    }


@pytest.fixture(scope="session")
def baseline(tiny, tmp_path_factory) -> Run:
    """One uninterrupted classification run; resumed runs must end where it ends."""
    run = run_to_end(tmp_path_factory.mktemp("baseline"), classification_spec(tiny))
    assert run.proc.returncode == 0, run.log()
    return run
