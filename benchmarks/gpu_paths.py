"""The GPU paths, run for real on a CUDA machine: NCCL, bf16, fp16, DeepSpeed ZeRO-2/3, and a
kill -9 + verified resume, all through `ftjob run --local` (the same launcher and entrypoint as a
pod). Prints one JSON line per run and writes them to `$OUT/gpu_paths.jsonl` (or ./).

    python -m benchmarks.gpu_paths            # from the repository root, on a GPU machine

Models are random (GPT-2 124M shape, BERT-base shape) with a small word-level tokenizer, so no
Hub access is needed; figures are throughput and loss behaviour, not model quality.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import tinymodels  # noqa: E402  (tests/tinymodels.py: tokenizer and data builders)


def build_models(base: Path) -> dict[str, Path]:
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    tokenizer = tinymodels.build_tokenizer(base / "gpt2")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=768,
                                      n_layer=12, n_head=12, pad_token_id=tokenizer.pad_token_id))
    gpt2.save_pretrained(base / "gpt2")
    tinymodels.build_tokenizer(base / "bert")
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12,
                                num_attention_heads=12, intermediate_size=3072,
                                max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id))
    bert.save_pretrained(base / "bert")
    return {"gpt2": base / "gpt2", "bert": base / "bert"}


def write_data(base: Path) -> dict[str, Path]:
    rows = tinymodels.classification_rows(4096, seed=1)
    texts = [{"text": " ".join([r["text"]] * 6)} for r in rows]  # ~60 words per example
    return {
        "cls_train": tinymodels.write_jsonl(base / "cls-train.jsonl", rows[:3584]),
        "cls_val": tinymodels.write_jsonl(base / "cls-val.jsonl", rows[3584:]),
        "lm_train": tinymodels.write_jsonl(base / "lm-train.jsonl", texts[:3584]),
        "lm_val": tinymodels.write_jsonl(base / "lm-val.jsonl", texts[3584:]),
    }


def manifest(name: str, task: str, model: Path, train: Path, val: Path, args: dict,
             deepspeed: dict | None = None) -> dict:
    spec = {
        "task": task,
        "model": {"path": str(model)},
        "dataset": {"files": {"train": str(train), "validation": str(val)}, "maxLength": 128},
        "trainingArguments": {"per_device_train_batch_size": 32, "learning_rate": 1e-4,
                              "logging_steps": 10, "save_steps": 50, "seed": 42,
                              "eval_strategy": "no", "report_to": "none", **args},
        "resources": {"gpusPerNode": 1},
    }
    if deepspeed:
        spec["deepspeed"] = deepspeed
    return {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name}, "spec": spec}


def launch(doc: dict, work: Path, isolate: bool = False) -> subprocess.Popen:
    path = work / f"{doc['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    out = work / "runs" / doc["metadata"]["name"]
    cmd = [sys.executable, "-m", "ftjob_cli.cli", "run", str(path), "--local",
           "--nproc", "1", "--output", str(out)]
    if isolate:
        # A new PID namespace: killing it kills torchrun's workers too (they start new
        # sessions). CUDA needs a /proc of its own namespace there (error 304 otherwise).
        cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *cmd]
    return subprocess.Popen(cmd,
                            env={**os.environ, "FTJOB_REPORTER": "none"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, out: Path, started: float) -> dict:
    log, _ = proc.communicate(timeout=1200)
    (out / "run.log").write_text(log)
    summary_file = out / "termination-log"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    metrics = summary.get("metrics") or {}
    # The loss logged at the last step: comparable between an uninterrupted and a resumed run
    # (train_loss averages only the steps of the last attempt).
    states = sorted(out.glob("checkpoint-*/trainer_state.json"),
                    key=lambda p: int(p.parent.name.split("-")[1]))
    history = json.loads(states[-1].read_text())["log_history"] if states else []
    logged = [(h["step"], h["loss"]) for h in history if "loss" in h]
    return {"rc": proc.returncode, "wall_s": round(time.time() - started, 1),
            "globalStep": summary.get("globalStep"),
            "resumedFromStep": summary.get("resumedFromStep"),
            "train_loss": metrics.get("train_loss"),
            "last_logged_step_loss": logged[-1] if logged else None,
            "train_steps_per_second": metrics.get("train_steps_per_second"),
            "train_samples_per_second": metrics.get("train_samples_per_second"),
            "status": summary.get("status"), "message": summary.get("message"),
            "log_tail": log[-1500:] if proc.returncode else ""}


def fresh(doc: dict, work: Path) -> None:
    shutil.rmtree(work / "runs" / doc["metadata"]["name"], ignore_errors=True)


def run(doc: dict, work: Path) -> dict:
    started = time.time()
    proc = launch(doc, work)
    return finish(proc, work / "runs" / doc["metadata"]["name"], started)


def kill_after_checkpoint_then_resume(doc: dict, work: Path) -> dict:
    out = work / "runs" / doc["metadata"]["name"]
    fresh(doc, work)
    started = time.time()
    proc = launch(doc, work, isolate=True)
    deadline = time.time() + 600
    marker = None
    while time.time() < deadline and proc.poll() is None:
        found = sorted(out.glob("checkpoint-*/ftjob-complete.json"))
        if found:
            marker = found[-1]
            break
        time.sleep(0.5)
    if marker is None:
        proc.kill()
        return {"error": "no complete checkpoint before the deadline"}
    proc.send_signal(signal.SIGKILL)  # the whole PID namespace dies with it
    proc.communicate()
    killed_at = time.time()
    result = run(doc, work)
    result["killed_after"] = marker.parent.name
    result["kill_to_end_s"] = round(time.time() - killed_at, 1)
    result["first_attempt_s"] = round(killed_at - started, 1)
    return result


def main() -> None:
    import torch

    work = Path(os.environ.get("GPU_WORK", "/tmp/ftjob-gpu"))
    work.mkdir(parents=True, exist_ok=True)
    models = build_models(work / "models")
    data = write_data(work / "data")
    lm = dict(task="causal-lm", model=models["gpt2"], train=data["lm_train"], val=data["lm_val"])
    cls = dict(task="sequence-classification", model=models["bert"], train=data["cls_train"],
               val=data["cls_val"])
    steps = {"max_steps": 200}
    cases = [
        ("lm-fp32", manifest("lm-fp32", **lm, args=steps), run),
        ("lm-bf16", manifest("lm-bf16", **lm, args={**steps, "bf16": True}), run),
        ("cls-fp16", manifest("cls-fp16", **cls, args={**steps, "fp16": True}), run),
        ("lm-bf16-zero2", manifest("lm-bf16-zero2", **lm, args={**steps, "bf16": True},
                                   deepspeed={"zeroStage": 2}), run),
        ("lm-bf16-zero3", manifest("lm-bf16-zero3", **lm, args={**steps, "bf16": True},
                                   deepspeed={"zeroStage": 3}), run),
        ("lm-bf16-kill-resume", manifest("lm-bf16-kill-resume", **lm,
                                         args={**steps, "bf16": True}),
         kill_after_checkpoint_then_resume),
        ("lm-bf16-zero3-kill-resume", manifest("lm-bf16-zero3-kill-resume", **lm,
                                               args={**steps, "bf16": True},
                                               deepspeed={"zeroStage": 3}),
         kill_after_checkpoint_then_resume),
    ]
    only = set(sys.argv[1:])
    out_dir = Path(os.environ.get("OUT", "."))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    with open(out_dir / "gpu_paths.jsonl", "a") as sink:
        for name, doc, how in cases:
            if only and name not in only:
                continue
            fresh(doc, work)
            result = {"case": name, "device": device, "torch": torch.__version__, **how(doc, work)}
            line = json.dumps(result)
            print(line, flush=True)
            sink.write(line + "\n")


if __name__ == "__main__":
    main()
