"""Runs inside a pod of the trainer image: writes a tiny model and data for each job.

    python seed.py CLAIM_ROOT JOB...     -> CLAIM_ROOT/<job>/inputs/{model/,train.jsonl}

tinymodels.py sits next to this file (both come from one ConfigMap), so the cluster needs
no download and no extra image.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import tinymodels as tm  # noqa: E402

TRAIN_ROWS = 512


def main(root: str, jobs: list[str]) -> None:
    for job in jobs:
        inputs = Path(root) / job / "inputs"
        tm.build_bert(inputs / "model")
        tm.write_jsonl(inputs / "train.jsonl", tm.classification_rows(TRAIN_ROWS, 1))
    Path("/dev/termination-log").write_text(f"seeded {' '.join(jobs)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
