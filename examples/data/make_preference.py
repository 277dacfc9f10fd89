"""Build what `examples/dpo-local.yaml` runs on: a tiny chat GPT-2 and preference pairs.

    .venv/bin/python examples/data/make_preference.py

writes `examples/models/tiny-chat-gpt2/` (a random two-layer GPT-2, 32 wide, with a
word-level tokenizer and a minimal chat template: the test suite's tiny model, built in
seconds, not downloaded; git ignores the folder) and the pairs next to this script,
`preference-train.jsonl` and `preference-validation.jsonl` (deterministic, committed).
Each pair's prompt is a headline; the chosen answer stays on its topic, the rejected one
drifts to another topic. The model is random and the data templated: the run shows DPO
working end to end (reward accuracy on held-out pairs rising from 0), not model quality.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests import tinymodels

    model = tinymodels.build_gpt2_chat(ROOT / "examples" / "models" / "tiny-chat-gpt2")
    train = tinymodels.write_jsonl(HERE / "preference-train.jsonl",
                                   tinymodels.preference_rows(256, 21))
    val = tinymodels.write_jsonl(HERE / "preference-validation.jsonl",
                                 tinymodels.preference_rows(64, 22))
    print(f"wrote {model}, {train} and {val}")


if __name__ == "__main__":
    main()
