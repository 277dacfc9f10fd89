"""Fixtures for pushing models to a real registry: the TLS + htpasswd registry of
tests/registry.py, the `oras` CLI (scripts/build-oras.sh) to read pushes back, and a small
model folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.oci_images import oras_binary
from tests.registry import REGISTRY_BIN, TestRegistry

LARGE = 3 * 1024 * 1024 + 123  # two "shards" of about 3 MiB: one layer each


@pytest.fixture(params=["htpasswd", "token"])
def registry(request, tmp_path) -> Iterator[TestRegistry]:
    """A registry with Basic auth (htpasswd), and one with Bearer tokens from a token server."""
    if not Path(REGISTRY_BIN).exists():
        pytest.skip(f"{REGISTRY_BIN} is not installed (Debian package docker-registry)")
    reg = TestRegistry.create(tmp_path / "registry", auth=request.param)
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture(scope="session")
def oras_cli() -> str:
    """The oras binary: $FTJOB_ORAS, else built (once, cached) by scripts/build-oras.sh."""
    return oras_binary()


@pytest.fixture
def model(tmp_path) -> Path:
    """A model folder: two shards of random bytes and a few small files, one in a subfolder."""
    folder = tmp_path / "model"
    (folder / "tokenizer").mkdir(parents=True)
    for i, name in enumerate(("model-00001-of-00002.safetensors",
                              "model-00002-of-00002.safetensors")):
        (folder / name).write_bytes(os.urandom(LARGE + i))
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 32}\n')
    (folder / "generation_config.json").write_text("{}\n")
    (folder / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\nworld\n")
    (folder / "README.md").write_text("# a model card\n")
    return folder


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> dict[str, Path]:
    """A tiny BERT and topic-classification data (tests/tinymodels.py), made offline."""
    from tests import tinymodels as tm

    root = tmp_path_factory.mktemp("tiny")
    return {"bert": tm.build_bert(root / "bert"),
            "train": tm.write_jsonl(root / "train.jsonl", tm.classification_rows(384, 1)),
            "validation": tm.write_jsonl(root / "val.jsonl", tm.classification_rows(96, 2))}
