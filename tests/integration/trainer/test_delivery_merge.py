"""Merging a LoRA adapter into its base: a folder that loads with transformers alone and
computes what base + adapter computed; sharded, crash- and disk-full-safe, reused.

The adapters are made with peft on the tiny models (tests/tinymodels.py) with the trainer's
own LoraConfig and saved as the trainer saves `final/` (adapter, tokenizer, labels.json),
their B matrices random so that the merge changes the weights.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ftjob_api import api
from ftjob_trainer import modeling
from ftjob_trainer.delivery import merge
from ftjob_trainer.delivery.merge import MergeError, NoSpaceForMerge, merge_adapter

from tests import tinymodels as tm

TEXTS = ["the market price says new", "goal match team in the cup", "lab study of gene data"]


def make_adapter(base: Path, final: Path, task: str, targets: list[str],
                 labels: list[str] | None = None) -> Path:
    """`final/` as the trainer leaves it for a LoRA job, with non-zero LoRA B weights."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    id2label = dict(enumerate(labels)) if labels else None
    model = modeling.load_model(task, str(base), {}, "spec.model.path", tokenizer, id2label)
    peft_model = modeling.add_lora(model, task, api.LoraSpec(r=4, alpha=8,
                                                             target_modules=targets))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    if labels:
        (final / "labels.json").write_text(json.dumps(labels))
    return final


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merge-models")
    gpt2, bert = tm.build_gpt2(root / "gpt2"), tm.build_bert(root / "bert")
    return {
        "gpt2": gpt2, "bert": bert,
        "lm": make_adapter(gpt2, root / "lm-final", "causal-lm", ["c_attn"]),
        "cls": make_adapter(bert, root / "cls-final", "sequence-classification",
                            ["query", "value"], labels=["economy", "science", "sports"]),
    }


@pytest.fixture
def lm_final(models, tmp_path) -> Path:
    """A copy of the causal-LM adapter folder in this test's output folder."""
    return Path(shutil.copytree(models["lm"], tmp_path / "final"))


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def logits(model, tokenizer) -> torch.Tensor:
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def base_plus_adapter(auto, base: Path, final: Path, **kwargs):
    from peft import PeftModel

    return PeftModel.from_pretrained(auto.from_pretrained(base, **kwargs), final)


def test_the_merged_causal_lm_loads_alone_and_computes_what_base_plus_adapter_did(
        models, lm_final, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = merge_adapter(lm_final, tmp_path / "merged")
    assert result.path == tmp_path / "merged" and not result.reused
    merged_dir = result.path
    assert not (merged_dir / "adapter_config.json").exists()
    assert {"config.json", "model.safetensors", "tokenizer.json", merge.MARKER} <= {
        p.name for p in merged_dir.iterdir()}
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert not hasattr(merged, "peft_config")
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    expected = logits(base_plus_adapter(AutoModelForCausalLM, models["gpt2"], lm_final),
                      tokenizer)
    assert torch.allclose(logits(merged, tokenizer), expected, atol=1e-5, rtol=0)
    # Not a no-op: the base alone computes something else.
    base = logits(AutoModelForCausalLM.from_pretrained(models["gpt2"]), tokenizer)
    assert (base - expected).abs().max() > 1e-2


def test_the_merged_classifier_keeps_the_trained_head_and_the_labels(models, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    final = models["cls"]
    result = merge_adapter(final, tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(result.path)
    assert merged.config.id2label == {0: "economy", 1: "science", 2: "sports"}
    assert json.loads((result.path / "labels.json").read_text()) == [
        "economy", "science", "sports"]
    tokenizer = AutoTokenizer.from_pretrained(result.path)
    expected = logits(base_plus_adapter(AutoModelForSequenceClassification, models["bert"],
                                        final, num_labels=3), tokenizer)
    assert torch.allclose(logits(merged, tokenizer), expected, atol=1e-5, rtol=0)


def test_a_small_shard_size_gives_shards_and_an_index(models, lm_final, tmp_path):
    from transformers import AutoModelForCausalLM

    result = merge_adapter(lm_final, tmp_path / "merged", max_shard_size="40KB")
    shards = sorted(p.name for p in result.path.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 2, sorted(p.name for p in result.path.iterdir())
    index = json.loads((result.path / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert not (result.path / "model.safetensors").exists()
    assert set(shards) <= set(result.files)
    AutoModelForCausalLM.from_pretrained(result.path)


def _save_then_fail(exc: BaseException):
    def save(self, save_directory, *args, **kwargs):
        (Path(save_directory) / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 1024)
        raise exc
    return save


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    # What safetensors raises: its own error class, the OS's words, no errno.
    RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
], ids=["oserror", "safetensors"])
def test_a_full_disk_leaves_no_merged_folder_and_the_adapter_intact(
        lm_final, tmp_path, monkeypatch, failure):
    from transformers import PreTrainedModel

    before = digests(lm_final)
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", _save_then_fail(failure))
    with pytest.raises(NoSpaceForMerge) as caught:
        merge_adapter(lm_final, tmp_path / "merged")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'merged'}: no space left on the device")
    assert "spec.storage.size" in message
    assert caught.value.__cause__ is failure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]  # no merged, no partial
    assert digests(lm_final) == before


def test_another_failure_is_raised_as_it_is_and_leaves_nothing(lm_final, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    monkeypatch.setattr(PreTrainedModel, "save_pretrained",
                        _save_then_fail(OSError(errno.EIO, "Input/output error")))
    with pytest.raises(OSError) as caught:
        merge_adapter(lm_final, tmp_path / "merged")
    assert caught.value.errno == errno.EIO and not isinstance(caught.value, NoSpaceForMerge)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_a_second_call_reuses_the_complete_merge(lm_final, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    first = merge_adapter(lm_final, tmp_path / "merged")
    marker = json.loads((first.path / merge.MARKER).read_text())
    assert sorted(marker["files"]) == list(first.files)
    assert marker["adapterDigest"] == merge.adapter_digest(lm_final)
    stamps = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}
    (first.path / "README.md").write_text("a model card, written after the merge\n")

    def never(*args, **kwargs):
        raise AssertionError("a complete merge of the same adapter is merged again")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", never)
    second = merge_adapter(lm_final, tmp_path / "merged")
    assert second.reused and second.path == first.path and second.files == first.files
    assert {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()
            if p.name != "README.md"} == stamps


def test_a_changed_adapter_is_merged_again(models, lm_final, tmp_path):
    first = merge_adapter(lm_final, tmp_path / "merged")
    weights = (first.path / "model.safetensors").read_bytes()
    shutil.rmtree(lm_final)
    make_adapter(models["gpt2"], lm_final, "causal-lm", ["c_attn", "c_proj"])
    second = merge_adapter(lm_final, tmp_path / "merged")
    assert not second.reused
    assert (second.path / "model.safetensors").read_bytes() != weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "merged"]


def test_leftovers_of_a_killed_merge_are_replaced(lm_final, tmp_path):
    from transformers import AutoModelForCausalLM

    partial = merge.partial_dir(tmp_path / "merged")
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".merged.replaced").mkdir()  # killed while replacing an older merge
    (tmp_path / "merged").mkdir()  # a folder without a marker is not a complete merge
    (tmp_path / "merged" / "config.json").write_text("{}")
    result = merge_adapter(lm_final, tmp_path / "merged")
    assert not result.reused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "merged"]
    AutoModelForCausalLM.from_pretrained(result.path)


def test_a_folder_without_an_adapter_or_a_target_inside_it_is_refused(models, tmp_path):
    with pytest.raises(MergeError, match="no LoRA adapter to merge"):
        merge_adapter(models["gpt2"], tmp_path / "merged")
    with pytest.raises(MergeError, match="must be outside the adapter's"):
        merge_adapter(models["lm"], models["lm"] / "merged")
    with pytest.raises(MergeError, match="must be outside the adapter's"):
        merge_adapter(models["lm"], models["lm"])


def test_the_base_is_the_adapters_own_or_the_callers_with_pkg_resolved():
    config = {"base_model_name_or_path": "org/base", "revision": "abc"}
    assert merge.base_source(config, None, None) == ("org/base", "abc")
    assert merge.base_source(config, "org/other", None) == ("org/other", None)
    import json as json_package

    resolved, _ = merge.base_source(config, "pkg://json", None)
    assert Path(resolved) == Path(json_package.__file__).parent
    with pytest.raises(MergeError, match="names no base model"):
        merge.base_source({}, None, None)


_REAL_DISK_FULL = """
import sys
from ftjob_trainer.delivery.merge import NoSpaceForMerge, merge_adapter
try:
    merge_adapter(sys.argv[1], sys.argv[2])
except NoSpaceForMerge as exc:
    print("NoSpaceForMerge:", exc)
    sys.exit(3)
"""


def test_a_real_full_disk(lm_final, tmp_path):
    """The merge onto a 64 KiB tmpfs (the tiny GPT-2 needs about 130 KiB), in a mount
    namespace of its own; skipped where this machine cannot make one."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespace here (unshare -m)")
    volume = tmp_path / "volume"
    volume.mkdir()
    before = digests(lm_final)
    script = (f"mount -t tmpfs -o size=64k tmpfs {volume} && "
              f"{sys.executable} -c '{_REAL_DISK_FULL}' {lm_final} {volume}/merged; "
              f"code=$?; ls -A {volume}; exit $code")
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[3], timeout=600)
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"NoSpaceForMerge: {volume}/merged: no space left on the device" in done.stdout
    # `ls -A` of the volume printed nothing: no merged folder, no partial one.
    assert done.stdout.rstrip().splitlines()[-1].startswith("NoSpaceForMerge:"), done.stdout
    assert digests(lm_final) == before
