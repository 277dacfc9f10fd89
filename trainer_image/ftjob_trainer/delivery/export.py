"""The export step of `spec.output`, after training succeeded: the quality gate, the LoRA
merge, the model cards, the push. Run by `ftjob-export` (the operator's export pod, on the
job's output claim) and by `ftjob run --local`, with the same result: `status.output`, also
kept as `output.json` in the output folder.

Order: the gate first (a model that misses it is neither merged nor pushed: `Withheld`),
then the merge, then the cards (they go into the image), then the push. Each step can run
again: a complete merge is reused, blobs the registry has are not sent again, so a retried
export after a registry outage costs only what is missing. `final/` is only read (its
README.md aside, which becomes the model card).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ftjob_api import api, contract

from .. import exits, modeling
from . import gate as gates
from . import merge, model_card, modelcar, oci

log = logging.getLogger("ftjob_trainer.export")

FINAL_DIR = "final"


class ExportFailed(Exception):
    """The export cannot finish now; `retryable`: a later try may (registry down, disk
    full), or not before something changes (credentials, a refused repository, no adapter)."""

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.message = message
        self.retryable = retryable

    @property
    def exit_code(self) -> int:
        return int(contract.ExitCode.EXPORT_RETRYABLE if self.retryable
                   else contract.ExitCode.EXPORT_REFUSED)


def pushed_folder(output_dir: Path, output: api.OutputSpec) -> Path:
    """What goes into the image (pure): the merged model when a merge was asked for, else
    `final/` (the model, or the adapter with its tokenizer)."""
    return output_dir / (contract.MERGED_DIR_NAME if output.merge_adapter else FINAL_DIR)


def gate_status(gate: api.QualityGate, result: gates.GateResult) -> api.GateResult:
    return api.GateResult(metric=result.metric, value=result.value, bound=result.bound,
                          comparison=gate.comparison, passed=result.passed)


def export(output_dir: str | os.PathLike[str], job_name: str, spec: Mapping[str, Any], *,
           push_config: str | os.PathLike[str] | None = None,
           registry_ca: str | os.PathLike[str] | None = None,
           goodput: dict[str, Any] | None = None,
           on_blob: Callable[[oci.BlobEvent], None] | None = None) -> dict[str, Any]:
    """Gate, merge, cards, push for the job whose output is `output_dir` and whose spec
    (camelCase, as the job file holds it) is `spec`; returns status.output (camelCase) and
    writes it to output.json. Raises ExportFailed."""
    output_dir = Path(output_dir)
    parsed = api.parse_spec(dict(spec))
    output = parsed.output or api.OutputSpec()
    metrics = model_card.read_metrics(output_dir).get("metrics") or {}
    if not (output_dir / FINAL_DIR).is_dir():
        raise ExportFailed(f"no trained model in {output_dir / FINAL_DIR}: the export runs "
                           "after training succeeded", retryable=False)
    result = checked = None
    if output.gate is not None:
        result = gates.check_gate(metrics, output.gate.metric, min=output.gate.min,
                                  max=output.gate.max)
        checked = gate_status(output.gate, result)
        log.info("%s", result.message)
    withheld = result is not None and not result.passed
    if output.merge_adapter and not withheld:
        _merge(output_dir, parsed)
    model_card.write_model_cards(output_dir, dict(spec), job_name=job_name, goodput=goodput,
                                 gate=result)
    if withheld:
        return _finish(output_dir, api.OutputStatus(
            phase=api.OutputPhase.WITHHELD, gate=checked,
            message=f"{result.message}: not pushed"))
    if output.oci is None:
        return _finish(output_dir, api.OutputStatus(
            phase=api.OutputPhase.READY, gate=checked,
            message=f"model in {pushed_folder(output_dir, output)}"))
    try:
        pushed = oci.push(pushed_folder(output_dir, output), output.oci.reference(job_name),
                          docker_config=Path(push_config) if push_config else None,
                          ca_file=registry_ca,
                          plain_http=output.oci.plain_http, on_blob=on_blob,
                          annotations={"dev.finetune.job": job_name},
                          base_layers=_shell_layers())
    except oci.PushError as exc:
        raise ExportFailed(exc.message, retryable=exc.retryable) from None
    return _finish(output_dir, api.OutputStatus(
        phase=api.OutputPhase.PUSHED, reference=pushed.reference, digest=pushed.digest,
        size=pushed.size, gate=checked, pushed_at=contract.rfc3339(pushed.finished),
        message=_pushed_message(pushed)))


def _pushed_message(pushed: oci.PushResult) -> str:
    sent = f"sent {pushed.blobs_sent} blobs, {pushed.bytes_sent} bytes"
    return sent + (f"; {pushed.blobs_skipped} the registry already had"
                   if pushed.blobs_skipped else "")


def _shell_layers() -> list[oci.Layer]:
    """The busybox layer KServe's modelcar needs, when a static busybox is here."""
    shell = modelcar.find_shell()
    return [modelcar.shell_layer(shell)] if shell is not None else []


def _merge(output_dir: Path, parsed: api.FineTuneJobSpec) -> None:
    source, kwargs = modeling.model_source(parsed)
    try:
        merge.merge_adapter(output_dir / FINAL_DIR, output_dir / contract.MERGED_DIR_NAME,
                            base_model=source, revision=kwargs.get("revision"),
                            task=str(getattr(parsed.task, "value", parsed.task)))
    except merge.NoSpaceForMerge as exc:
        raise ExportFailed(str(exc), retryable=True) from None
    except merge.MergeError as exc:
        raise ExportFailed(str(exc), retryable=False) from None


def _finish(output_dir: Path, status: api.OutputStatus) -> dict[str, Any]:
    result = api.to_patch(status)
    exits.write_json_atomic(output_dir / contract.OUTPUT_RESULT_FILE_NAME, result)
    return result


# --------------------------------------------------------------------------- ftjob-export


def goodput_from(env: Mapping[str, str]) -> dict[str, Any] | None:
    """status.goodput as the operator passed it (FTJOB_GOODPUT), for the model card; None
    when absent or unreadable (the card then says it is not known)."""
    raw = env.get(contract.ENV_GOODPUT, "").strip()
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        log.warning("%s is not JSON: the model card leaves goodput out", contract.ENV_GOODPUT)
        return None
    return value if isinstance(value, dict) else None


def _path(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def main(env: Mapping[str, str] | None = None) -> int:
    """`ftjob-export`: the export pod's command. Reads the job file and output folder the
    training pods read (contract env), the mounted push credentials and registry CA; exits
    0, EXPORT_RETRYABLE or EXPORT_REFUSED with status.output (or the error) as its
    termination message."""
    env = os.environ if env is None else env
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    termination = Path(_path(env, contract.ENV_TERMINATION_LOG)
                       or contract.DEFAULT_TERMINATION_LOG)
    try:
        document = json.loads(Path(env[contract.ENV_JOB_FILE]).read_text())
        name = document["metadata"]["name"]
        result = export(env[contract.ENV_OUTPUT_DIR], name, document["spec"],
                        push_config=_path(env, contract.ENV_PUSH_CONFIG),
                        registry_ca=_path(env, contract.ENV_REGISTRY_CA),
                        goodput=goodput_from(env))
        code, message = 0, result
    except ExportFailed as exc:
        code, message = exc.exit_code, {"message": exc.message}
    except (KeyError, ValueError, OSError) as exc:  # a job file or folder it cannot read
        code, message = int(contract.ExitCode.UNKNOWN), {
            "message": f"export: {type(exc).__name__}: {exc}"}
    line = json.dumps(message, separators=(",", ":"))[:contract.TERMINATION_MESSAGE_LIMIT]
    try:
        termination.write_text(line)
    except OSError as exc:
        log.warning("termination message not written to %s: %s", termination, exc)
    print(line, file=sys.stderr if code else sys.stdout)
    return code


if __name__ == "__main__":
    sys.exit(main())
