"""`ftjob run FILE --local`: the same launcher and workers as in a pod, on this machine."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from ftjob_api import api, contract, pod_env
from ftjob_api.manifests import ManifestError, load_file
from ftjob_api.problems import errors
from ftjob_api.validation import validate_document

from . import exits, launch, output_owner
from .modeling import PKG_SCHEME

RUNS_DIR = "ftjob-runs"


def pick_document(documents: list[Any], job_name: str | None) -> tuple[Any | None, str]:
    """The FineTuneJob to run (pure): by name, or the only one. Returns (doc, error)."""
    jobs = [d for d in documents if isinstance(d.body, dict) and d.body.get("kind") == api.KIND]
    if job_name is not None:
        jobs = [d for d in jobs if (d.body.get("metadata") or {}).get("name") == job_name]
        if not jobs:
            return None, f"no {api.KIND} named {job_name!r}"
    if not jobs:
        return None, f"no {api.KIND} found"
    if len(jobs) > 1:
        names = ", ".join(str((d.body.get("metadata") or {}).get("name")) for d in jobs)
        return None, f"{len(jobs)} FineTuneJobs ({names}); choose one with --name"
    return jobs[0], ""


def resolve_paths(spec: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative `dataset.files` and `model.path` are taken against the manifest's folder (pure)."""
    spec = copy.deepcopy(spec)
    files = (spec.get("dataset") or {}).get("files") or {}
    for split, value in list(files.items()):
        if isinstance(value, str) and not Path(value).is_absolute():
            files[split] = str((base / value).resolve())
    model = spec.get("model") or {}
    path = model.get("path")
    if isinstance(path, str) and not path.startswith(PKG_SCHEME) and not Path(path).is_absolute():
        model["path"] = str((base / path).resolve())
    return spec


def local_uid(file: str, name: str) -> str:
    """The identity of a local run (pure): the manifest file and the job's name, so that the
    same manifest run again resumes from its output folder and another one (a different
    manifest into the same folder) finds it owned by another job, as in a cluster."""
    digest = hashlib.sha256(f"{Path(file).resolve()}#{name}".encode()).hexdigest()
    return f"local-{digest[:16]}"


def default_nproc(spec: dict[str, Any]) -> int:
    gpus = ((spec.get("resources") or {}).get("gpusPerNode")) or 0
    return gpus if gpus > 0 else 2


class LocalJobError(Exception):
    """A manifest `ftjob run --local` or `ftjob inspect` cannot use: `lines` for stderr
    (unreadable, no such job), `problems` for stdout (validation, as `ftjob validate`)."""

    def __init__(self, lines: list[str], problems: list[str] | None = None) -> None:
        super().__init__("\n".join(lines + (problems or [])))
        self.lines = lines
        self.problems = problems or []

    def print(self) -> None:
        for line in self.lines:
            print(line, file=sys.stderr)
        for line in self.problems:
            print(line)


def read_local_job(file: str, job_name: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the job's metadata, its spec with relative paths taken against the manifest's
    folder): the one FineTuneJob of `file` (or the one named), validated."""
    try:
        documents = load_file(file)
    except ManifestError as exc:
        raise LocalJobError([f"error: {exc}"]) from None
    doc, error = pick_document(documents, job_name)
    if doc is None:
        raise LocalJobError([f"error: {file}: {error}"])
    problems = errors(validate_document(doc.body))
    if problems:
        raise LocalJobError([], [f"{file}: {p.path}: {p.message}" for p in problems])
    return doc.body["metadata"], resolve_paths(doc.body["spec"], Path(file).resolve().parent)


def push_target(reference: str, plain_http: bool = False) -> tuple[dict[str, Any] | None, str]:
    """`ftjob run --local --push REPOSITORY[:TAG]` as `spec.output.oci` (pure); (None, why)
    when it is not a reference to push to."""
    repository, tag = reference.strip().removeprefix("oci://"), None
    last = repository.rsplit("/", 1)[-1]
    if "/" in repository and ":" in last:
        repository, _, tag = repository.rpartition(":")
    target = {"repository": repository, "plainHTTP": plain_http, **({"tag": tag} if tag else {})}
    try:
        api.OciTarget.model_validate(target)
    except ValueError as exc:
        first = exc.errors()[0] if hasattr(exc, "errors") else {"msg": str(exc)}
        return None, f"--push {reference}: {first['msg'].removeprefix('Value error, ')}"
    return target, ""


def run_local(file: str, nproc: int | None = None, output: str | None = None,
              job_name: str | None = None, push: str | None = None,
              plain_http: bool = False) -> int:
    try:
        metadata, spec = read_local_job(file, job_name)
    except LocalJobError as exc:
        exc.print()
        return 2
    if push is not None:  # the manifest's spec.output, pushing where the command line says
        target, why = push_target(push, plain_http)
        if target is None:
            print(f"error: {why}", file=sys.stderr)
            return 2
        spec = {**spec, "output": {**(spec.get("output") or {}), "oci": target}}
    name = metadata["name"]
    output_dir = Path(output or Path(RUNS_DIR) / name).resolve()
    uid = local_uid(file, name)
    refused = _foreign_output(output_dir, uid, name, spec)
    if refused is not None:
        return refused
    output_dir.mkdir(parents=True, exist_ok=True)
    job_file = output_dir / "job.json"
    job_file.write_text(json.dumps({"metadata": {"name": name, "uid": uid,
                                                 "namespace": metadata.get("namespace")},
                                    "spec": spec}, indent=1))

    env = dict(os.environ)
    # The contract variables as a pod gets them (pod_env, shared with the operator's render);
    # a local identity (`local_uid`), no namespace, attempt or mounted DeepSpeed config here.
    env.update(pod_env.trainer_env(
        api.parse_spec(spec), job_file=str(job_file), output_dir=str(output_dir),
        job_name=name, job_uid=uid, reporter=env.get(contract.ENV_REPORTER, "console")))
    env.update({
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
    })
    if spec["model"].get("path") and (spec.get("dataset") or {}).get("files"):
        env.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never wait on the Hub
    procs = nproc or default_nproc(spec)
    print(f"running {name} with {procs} process(es); output in {output_dir}", file=sys.stderr)
    decision = launch.run(["--standalone", f"--nproc-per-node={procs}"], env)
    line = exits.encode_summary(decision.summary)
    log_path = env.get(contract.ENV_TERMINATION_LOG)
    launch.write_termination_log(Path(log_path) if log_path else output_dir / "termination-log", line)
    print(describe(decision.summary))
    if decision.exit_code == 0 and spec.get("output"):
        return deliver_local(output_dir, name, spec, env)
    return decision.exit_code


def local_push_config(env: dict[str, str]) -> str | None:
    """The registry credentials of a local run: FTJOB_PUSH_CONFIG (a dockerconfigjson
    file), else what `docker login` / `oras login` wrote ($DOCKER_CONFIG/config.json or
    ~/.docker/config.json), else none (an anonymous push)."""
    explicit = env.get(contract.ENV_PUSH_CONFIG, "").strip()
    if explicit:
        return explicit
    folder = env.get("DOCKER_CONFIG", "").strip() or str(Path.home() / ".docker")
    found = Path(folder) / "config.json"
    return str(found) if found.is_file() else None


def deliver_local(output_dir: Path, name: str, spec: dict[str, Any], env: dict[str, str]) -> int:
    """spec.output after a local run succeeded: what the operator's export pod does."""
    from .delivery import export  # the registry client loads only when asked for

    try:
        result = export.export(output_dir, name, spec, push_config=local_push_config(env),
                               registry_ca=env.get(contract.ENV_REGISTRY_CA, "").strip() or None)
    except export.ExportFailed as exc:
        retry = "run the same command again to retry" if exc.retryable else "fix it and rerun"
        print(f"export failed: {exc.message} ({retry}; the trained model stays in "
              f"{output_dir / export.FINAL_DIR})")
        return exc.exit_code
    print(f"output: {result.get('phase')}: {result.get('reference') or ''}"
          f"{'@' + result['digest'] if result.get('digest') else ''}".rstrip(": "))
    if result.get("message"):
        print(f"  {result['message']}")
    return 0


def _foreign_output(output_dir: Path, uid: str, name: str, spec: dict[str, Any]) -> int | None:
    """The exit code when `output_dir` holds another run's output (checked before the job
    file is written into it; the trainer checks again and claims it), else None."""
    adopt = api.parse_spec(spec).storage.adopt_previous_output
    try:
        output_owner.claim(output_dir, uid, name, adopt, is_zero=False)
    except exits.OutputOwnedByOtherJob as exc:
        print(describe(exits.failure_summary(exits.classify_exception(exc))))
        return int(exc.code)
    return None


def describe(summary: dict[str, Any]) -> str:
    """The closing lines for a person at a terminal (pure)."""
    if summary.get("reason") == "Preempted" and "globalStep" in summary:
        return (f"stopped at step {summary['globalStep']} after saving a checkpoint; run the "
                f"same command again to resume from it")
    if summary.get("status") != "succeeded":
        return (f"failed: {summary.get('reason')} (exit {summary.get('exitCode')}): "
                f"{summary.get('message')}")
    metrics = summary.get("metrics") or {}
    lines = [f"succeeded after {summary.get('globalStep')} steps"]
    if summary.get("stoppedEarly"):
        lines.append(f"  {summary['stoppedEarly']}")
    if summary.get("search"):
        from .search import describe as describe_search

        lines.append(f"  {describe_search(summary['search'])}; the final model trained with "
                     "these")
    for key in ("eval_accuracy", "eval_f1", "eval_loss", "test_accuracy", "eval_perplexity"):
        if key in metrics:
            lines.append(f"  {key}: {metrics[key]:.4f}")
    lines.append(f"  saved model: {summary.get('finalModel')}")
    return "\n".join(lines)
