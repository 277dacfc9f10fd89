"""Where progress goes: the job's status in Kubernetes, the terminal, Prometheus, nowhere."""

from __future__ import annotations

import logging
import sys
from typing import Any

from ftjob_api import api

log = logging.getLogger(__name__)


class NullReporter:
    def report(self, progress, checkpoint, final=False) -> None:
        pass

    def report_search(self, search) -> None:
        pass

    def close(self) -> None:
        pass


class FanoutReporter:
    """Several reporters; one failing does not keep the others from being called."""

    def __init__(self, reporters: list[Any]) -> None:
        self.reporters = reporters

    def report(self, progress, checkpoint, final=False) -> None:
        for reporter in self.reporters:
            try:
                reporter.report(progress, checkpoint, final)
            except Exception:  # noqa: BLE001
                log.exception("%s failed", type(reporter).__name__)

    def report_search(self, search) -> None:
        for reporter in self.reporters:
            if hasattr(reporter, "report_search"):
                try:
                    reporter.report_search(search)
                except Exception:  # noqa: BLE001
                    log.exception("%s failed", type(reporter).__name__)

    def close(self) -> None:
        for reporter in self.reporters:
            try:
                reporter.close()
            except Exception:  # noqa: BLE001
                log.exception("%s failed to close", type(reporter).__name__)


class KubernetesReporter:
    """Merge-patches status.progress / status.checkpoint of this job only.

    The pod's ServiceAccount may patch `finetunejobs/status` and nothing else, so this is the
    only call it makes. The body is sent as application/merge-patch+json: a merge patch
    replaces exactly the two keys it names and leaves phase and conditions to the operator.
    """

    CONTENT_TYPE = "application/merge-patch+json"

    def __init__(self, name: str, namespace: str, api_client: Any = None) -> None:
        self.name = name
        self.namespace = namespace
        self._api = None
        self._api_client = api_client

    def _custom_objects(self):
        if self._api is None:
            from kubernetes import client, config

            if self._api_client is None:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
                self._api_client = client.ApiClient()
            self._api = client.CustomObjectsApi(self._api_client)
        return self._api

    @staticmethod
    def body(progress: dict[str, Any], checkpoint: dict[str, Any] | None) -> dict[str, Any]:
        status: dict[str, Any] = {"progress": progress}
        if checkpoint is not None:
            status["checkpoint"] = checkpoint
        return {"status": typed_status(status)}

    def report(self, progress, checkpoint, final=False) -> None:
        self._patch(self.body(progress, checkpoint), "status.progress")

    @staticmethod
    def search_body(search: dict[str, Any]) -> dict[str, Any]:
        """status.search (api.SearchStatus). A merge patch merges bestParams key by key, which
        replaces it: every trial has the same keys (those of the search space)."""
        return {"status": typed_status({"search": search})}

    def report_search(self, search: dict[str, Any]) -> None:
        self._patch(self.search_body(search), "status.search")

    def _patch(self, body: dict[str, Any], what: str) -> None:
        try:
            self._custom_objects().patch_namespaced_custom_object_status(
                group=api.GROUP,
                version=api.VERSION,
                namespace=self.namespace,
                plural=api.PLURAL,
                name=self.name,
                body=body,
                _content_type=self.CONTENT_TYPE,
                _request_timeout=10,
            )
        except Exception as exc:  # noqa: BLE001 - logged, never raised
            log.warning("could not patch %s/%s %s: %s", self.namespace, self.name, what, exc)

    def close(self) -> None:
        if self._api_client is not None and hasattr(self._api_client, "close"):
            self._api_client.close()


class ConsoleReporter:
    """A progress bar on a terminal; otherwise (CI logs, `make demo` piped) one line per
    step reported, plus a line when evaluation results or a checkpoint arrive."""

    def __init__(self, stream=None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or sys.stderr)
        self._bar = None
        self._task = None
        self._shown: tuple[int, str, int | None] = (-1, "", None)

    def _ensure_bar(self, total: int):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        if self._bar is None:
            self._bar = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=self.console, transient=False)
            self._bar.start()
            self._task = self._bar.add_task("train", total=total, info="")
        return self._bar

    @staticmethod
    def describe(progress: dict[str, Any], checkpoint: dict[str, Any] | None) -> str:
        parts = []
        if "loss" in progress:
            parts.append(f"loss {progress['loss']:.4f}")
        if "samplesPerSecond" in progress:
            parts.append(f"{progress['samplesPerSecond']:.1f} samples/s")
        metrics = progress.get("evalMetrics") or {}
        for key in ("eval_accuracy", "eval_rewards/accuracies", "eval_loss"):
            if key in metrics:
                parts.append(f"{key} {metrics[key]:.4f}")
        latest = (checkpoint or {}).get("latest")
        if latest:
            parts.append(f"ckpt {latest['step']}")
        return "  ".join(parts)

    @staticmethod
    def lines(progress: dict[str, Any], checkpoint: dict[str, Any] | None,
              shown: tuple[int, str, int | None]) -> tuple[list[str], tuple[int, str, int | None]]:
        """Log lines for one report, without repeats (pure): a step line the first time a
        step is reported, then a line for new evaluation results and one for a newly saved
        checkpoint. `shown` is (step, eval text, checkpoint step) printed so far."""
        step, total = progress.get("globalStep", 0), progress.get("maxSteps", 0)
        last_step, last_eval, last_ckpt = shown
        out = []
        if step != last_step:
            parts = [f"step {step}/{total} ({progress.get('percent', 0.0):.0f}%)"]
            if "loss" in progress:
                parts.append(f"loss {progress['loss']:.4f}")
            if "samplesPerSecond" in progress:
                parts.append(f"{progress['samplesPerSecond']:.1f} samples/s")
            if progress.get("etaSeconds") is not None:
                parts.append(f"eta {progress['etaSeconds']:.0f}s")
            out.append("  ".join(parts))
        metrics = progress.get("evalMetrics") or {}
        eval_text = "  ".join(f"{k} {metrics[k]:.4f}" for k in ConsoleReporter.EVAL_KEYS if k in metrics)
        if eval_text and eval_text != last_eval:
            out.append(f"step {step}/{total}  {eval_text}")
        ckpt = ((checkpoint or {}).get("latest") or {}).get("step")
        if ckpt is not None and ckpt != last_ckpt:
            out.append(f"step {step}/{total}  checkpoint-{ckpt} complete")
        return out, (step, eval_text or last_eval, ckpt if ckpt is not None else last_ckpt)

    EVAL_KEYS = ("eval_accuracy", "eval_f1", "eval_rewards/accuracies", "eval_loss",
                 "eval_perplexity")

    def report(self, progress, checkpoint, final=False) -> None:
        if "globalStep" not in progress:
            return  # still loading: nothing to show yet
        if self.console.is_terminal:
            bar = self._ensure_bar(progress.get("maxSteps") or 0)
            bar.update(self._task, completed=progress.get("globalStep", 0),
                       info=self.describe(progress, checkpoint))
            if final:
                self.close()
            return
        lines, self._shown = self.lines(progress, checkpoint, self._shown)
        for line in lines:
            self.console.print(line, highlight=False, soft_wrap=True)

    def report_search(self, search: dict[str, Any]) -> None:
        from .search import describe

        line = describe(search)
        if line != getattr(self, "_search_shown", None):
            self._search_shown = line
            self.console.print(line, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class PrometheusReporter:
    """Gauges on rank 0's /metrics (FTJOB_METRICS_PORT)."""

    def __init__(self, port: int, registry=None) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = registry or CollectorRegistry()
        names = {
            "globalStep": ("ftjob_global_step", "Optimizer steps done"),
            "maxSteps": ("ftjob_max_steps", "Optimizer steps in the run"),
            "loss": ("ftjob_train_loss", "Latest logged training loss"),
            "learningRate": ("ftjob_learning_rate", "Latest learning rate"),
            "samplesPerSecond": ("ftjob_samples_per_second", "Training throughput"),
            "etaSeconds": ("ftjob_eta_seconds", "Estimated seconds to finish"),
        }
        self.gauges = {key: Gauge(n, h, registry=self.registry) for key, (n, h) in names.items()}
        self.checkpoint_step = Gauge("ftjob_checkpoint_step", "Step of the newest complete "
                                     "checkpoint", registry=self.registry)
        if port:
            start_http_server(port, registry=self.registry)

    def report(self, progress, checkpoint, final=False) -> None:
        for key, gauge in self.gauges.items():
            if progress.get(key) is not None:
                gauge.set(progress[key])
        latest = (checkpoint or {}).get("latest")
        if latest:
            self.checkpoint_step.set(latest["step"])

    def close(self) -> None:
        pass


def typed_status(status: dict[str, Any]) -> dict[str, Any]:
    """A status merge patch passed through `api.FineTuneJobStatus`: a key the model does not
    know, or a value of the wrong type, fails here instead of being dropped by the API
    server. Nulls stay (they delete in a merge patch)."""
    return api.to_patch(api.FineTuneJobStatus.model_validate(status), keep_none=True)


def build_reporter(kind: str, *, name: str, namespace: str | None, metrics_port: int | None):
    reporters: list[Any] = []
    if kind == "kubernetes":
        if not namespace:
            log.warning("FTJOB_NAMESPACE is not set: progress is not reported to Kubernetes")
        else:
            reporters.append(KubernetesReporter(name, namespace))
    elif kind == "console":
        reporters.append(ConsoleReporter())
    if metrics_port:
        try:
            reporters.append(PrometheusReporter(metrics_port))
        except Exception:  # noqa: BLE001 - metrics are optional
            log.exception("could not serve Prometheus metrics on port %s", metrics_port)
    if not reporters:
        return NullReporter()
    return reporters[0] if len(reporters) == 1 else FanoutReporter(reporters)
