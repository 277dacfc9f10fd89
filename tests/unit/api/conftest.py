import copy
import textwrap
from pathlib import Path

import pytest

from ftjob_api.manifests import load_file

ROOT = Path(__file__).resolve().parents[3]

# A small valid manifest as a user writes it (YAML text).
GOOD = textwrap.dedent("""\
    apiVersion: finetune.dev/v1alpha1
    kind: FineTuneJob
    metadata: {name: good}
    spec:
      task: causal-lm
      model: {path: /models/gpt2}
      dataset: {files: {train: /d/train.jsonl}}
      trainingArguments: {learning_rate: 5e-5, max_steps: 100}
    """)


@pytest.fixture
def valid_job() -> dict:
    """A small valid job that each case of the invalid catalogue breaks in one way."""
    return copy.deepcopy(
        {
            "apiVersion": "finetune.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": "topics", "namespace": "ml"},
            "spec": {
                "task": "sequence-classification",
                "model": {"name": "bert-base-uncased"},
                "dataset": {
                    "files": {"train": "/data/train.jsonl", "validation": "/data/val.jsonl"},
                    "textColumn": "title",
                },
                "trainingArguments": {
                    "num_train_epochs": 1,
                    "learning_rate": 5e-5,
                    "eval_strategy": "epoch",
                    "save_strategy": "epoch",
                },
                "resources": {"nodes": 1, "gpusPerNode": 1},
            },
        }
    )


def example_documents():
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in load_file(path):
            if doc.body.get("kind") == "FineTuneJob":
                yield pytest.param(doc, id=f"{path.name}#{doc.index + 1}")
