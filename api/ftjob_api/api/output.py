"""`spec.output`: what happens to the model once training has succeeded: check a quality
gate on the final metrics, merge a LoRA adapter into its base model, and push the model to
an OCI registry as a KServe modelcar (`storageUri: oci://REPOSITORY:TAG`).

The models check what one field can check (the repository's and the tag's grammar, one
bound of a gate); `check_spec` the rules that need the rest of the spec (LoRA for the merge,
evaluation data and the task's metrics for the gate, the registry's TLS settings), for
`validation`.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from .. import preference_args
from ..problems import Problem
from .base import ApiModel, SecretRef

if TYPE_CHECKING:
    from .spec import FineTuneJobSpec

OUTPUT = "spec.output"
DEFAULT_CA_KEY = "ca.crt"
# Prefixes of the final metrics (`status.metrics`) a gate can read: the evaluation split's
# and the test split's. A metric named without one is the evaluation split's.
EVAL_PREFIX, TEST_PREFIX = "eval_", "test_"
# What the final evaluation of each task reports (without the split's prefix): a gate on
# anything else would never find its metric.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "sequence-classification": ("loss", "accuracy", "f1"),
    "causal-lm": ("loss", "perplexity"),
    "seq2seq": ("loss",),
    "preference": preference_args.EVAL_METRICS,
}
# Metrics that are better smaller, and those that are better larger: a gate with the other
# bound is most likely a slip (a warning).
_SMALLER_IS_BETTER = ("loss", "perplexity")
_LARGER_IS_BETTER = ("accuracy", "accuracies", "f1", "margins")
# Metrics that are fractions (0-1): a `min` above 1 can never be met.
_FRACTIONS = ("accuracy", "accuracies", "f1")


def gate_metric_key(metric: str) -> str:
    """The key of the final metrics a gate reads: `eval_`/`test_` names as they are, any
    other name with `eval_` in front (as Trainer reads `metric_for_best_model`)."""
    return metric if metric.startswith((EVAL_PREFIX, TEST_PREFIX)) else EVAL_PREFIX + metric


class QualityGate(ApiModel):
    """The model is pushed only when a final metric reaches a bound: exactly one of `min`
    (e.g. an accuracy, met when value >= min) or `max` (e.g. a loss, met when value <= max).
    A job whose gate is not met still succeeds; its model stays on the output volume and
    `status.output.phase` is `Withheld`."""

    metric: str = Field(
        description="A metric of the final evaluation, as in `status.metrics`: `eval_accuracy`, "
        "`eval_loss`, `test_f1`, ... A name without `eval_` or `test_` is the evaluation "
        "split's (`accuracy` reads `eval_accuracy`), as for `metric_for_best_model`.",
        json_schema_extra={"minLength": 1},
    )
    min: float | None = Field(
        default=None, description="Met when the metric is at least this (accuracy, F1)."
    )
    max: float | None = Field(
        default=None, description="Met when the metric is at most this (a loss, perplexity)."
    )

    @field_validator("metric")
    @classmethod
    def _metric_named(cls, metric: str) -> str:
        if not metric.strip():
            raise ValueError("empty: name a metric of the final evaluation, e.g. eval_accuracy "
                             "or eval_loss")
        if any(c.isspace() for c in metric):
            raise ValueError("a metric name has no spaces, e.g. eval_accuracy")
        return metric

    @field_validator("min", "max", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a number, e.g. 0.9")
        return value

    @model_validator(mode="after")
    def _one_bound(self) -> QualityGate:
        if self.min is not None and self.max is not None:
            raise ValueError("set exactly one of `min` (a metric to reach, e.g. an accuracy) or "
                             "`max` (a metric to stay under, e.g. a loss), not both")
        if self.min is None and self.max is None:
            raise ValueError("set `min` (a metric to reach, e.g. an accuracy) or `max` (a "
                             "metric to stay under, e.g. a loss)")
        return self

    @property
    def key(self) -> str:
        """The key of `status.metrics` this gate reads (`gate_metric_key`)."""
        return gate_metric_key(self.metric)

    @property
    def comparison(self) -> Literal["min", "max"]:
        return "min" if self.min is not None else "max"

    @property
    def bound(self) -> float:
        return self.min if self.min is not None else self.max  # type: ignore[return-value]

    def passes(self, value: float) -> bool:
        """Whether a metric value meets the gate (bounds included)."""
        return value >= self.bound if self.comparison == "min" else value <= self.bound


class CABundleRef(ApiModel):
    """A ConfigMap key holding the PEM certificates (CA bundle) a private registry's TLS
    certificate is checked against."""

    name: str = Field(min_length=1, description="Name of a ConfigMap in the job's namespace.")
    key: str = Field(
        default=DEFAULT_CA_KEY, min_length=1,
        description=f"Key inside the ConfigMap holding the PEM bundle; `{DEFAULT_CA_KEY}` by "
        "default.",
    )


# The OCI distribution grammar: a registry host (a DNS name or an IP address, optional
# :port) and a path of lowercase components joined by '/'; a tag.
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = re.compile(rf"(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::([0-9]+))?")
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
EXAMPLE_REPOSITORY = "registry.example.com/team/model"


def _is_host(part: str) -> bool:
    """Whether the first component of a reference names a registry (as container runtimes
    decide: a '.', a ':port', `localhost` or an IPv6 address); else it is a Docker Hub
    namespace."""
    return "." in part or ":" in part or part == "localhost" or part.startswith("[")


def _cleaned(value: str) -> tuple[str, str | None]:
    """A best guess at what was meant: the repository without scheme, digest, tag, empty
    components and capitals, and the tag that was in it (None when there was none)."""
    rest = _SCHEME.sub("", value).partition("@")[0]
    host, slash, path = rest.partition("/")
    tag = None
    if slash and ":" in path:
        path, _, tag = path.rpartition(":")
    elif not slash and ":" in host and not host.rpartition(":")[2].isdigit():
        host, _, tag = host.rpartition(":")
    parts = [c for c in path.lower().split("/") if c]
    return "/".join([host, *parts]), tag or None


def _write(value: str) -> str:
    repository, tag = _cleaned(value)
    return f"repository: {repository}" + (f" and tag: {tag}" if tag else "")


def repository_problem(value: str) -> str | None:
    """What is wrong with an OCI repository (`host[:port]/path`, no scheme, tag or digest),
    in words that say what to write instead; None when it is fine."""
    if not value.strip():
        return f"empty: write the registry's host and the repository, e.g. {EXAMPLE_REPOSITORY}"
    if any(c.isspace() for c in value):
        return "contains whitespace"
    scheme = _SCHEME.match(value)
    if scheme:
        tls = ("; a registry without TLS takes plainHTTP: true"
               if scheme.group(1).lower() == "http" else "")
        return (f"drop the scheme {scheme.group(0)} (a KServe storageUri is oci:// followed by "
                f"status.output.reference): write {_write(value)}{tls}")
    if "@" in value:
        return f"no digest here, the push makes one (status.output.digest): write {_write(value)}"
    host, slash, path = value.partition("/")
    if not slash:
        name, colon, after = value.partition(":")
        if colon and not after.isdigit():
            return (f"needs the registry's host first, and {after!r} is a tag: write e.g. "
                    f"repository: registry.example.com/{name.lower()} and tag: {after}")
        if _is_host(value):
            return f"needs a repository path after the registry's host, e.g. {value}/team/model"
        return f"needs the registry's host first, e.g. registry.example.com/{value.lower()}"
    if ":" in path:
        tag = path.rpartition(":")[2]
        what = f"{tag!r} is a tag" if tag else "a ':' too many"
        return f"{what}: write {_write(value)}"
    if not _is_host(host):
        return (f"{host!r} is not a registry host (no '.', ':port' or localhost): a container "
                f"runtime would read it as a Docker Hub namespace; write the host first, e.g. "
                f"registry.example.com/{value.lower()} (docker.io/{value.lower()} for Docker Hub)")
    host_match = _HOST.fullmatch(host)
    if host_match is None:
        return (f"{host!r} is not a registry host: a DNS name or an IP address with an optional "
                ":port, e.g. registry.example.com:5000")
    if host_match.group(1) is not None and not 1 <= int(host_match.group(1)) <= 65535:
        return f"port {host_match.group(1)} of {host!r} is not a port (1-65535)"
    if "" in path.split("/"):
        return f"has an empty path component (a '/' too many): write {_write(value)}"
    if path != path.lower():
        return f"the repository path must be lowercase (OCI): write {_write(value)}"
    bad = next((c for c in path.split("/") if not _PATH_COMPONENT.fullmatch(c)), None)
    if bad is not None:
        return (f"path component {bad!r}: lowercase letters and digits, joined by '.', '_', "
                "'__' or '-' (not at its start or end)")
    return None


class OciTarget(ApiModel):
    """Push the final model to an OCI registry as a KServe modelcar image (the model files
    under /models); serve it with `storageUri: oci://REPOSITORY:TAG`."""

    # No pattern in the CRD: the API server would answer with the bare regular expression,
    # while the webhook, `ftjob validate` and the operator say what to write instead.
    repository: str = Field(
        max_length=255,
        description="Registry host (optional :port) and repository path, without a scheme, "
        "tag or digest, e.g. `registry.example.com:5000/team/sentiment`. The path is "
        "lowercase, as the OCI distribution spec requires.",
    )
    tag: str | None = Field(
        default=None,
        pattern=TAG_PATTERN,
        description="Tag of the pushed image: letters, digits, `_`, `.` and `-`, at most 128 "
        "characters. Defaults to the job's name.",
    )
    push_secret_ref: SecretRef | None = Field(
        default=None,
        description="A `kubernetes.io/dockerconfigjson` Secret with the credentials to push "
        "with (as `kubectl create secret docker-registry` makes one). Without it the push is "
        "anonymous.",
    )
    ca_config_map_ref: CABundleRef | None = Field(
        default=None,
        description="A ConfigMap key with the CA bundle a private registry's certificate is "
        "checked against (besides the system's CAs).",
    )
    plain_http: bool = Field(
        default=False,
        alias="plainHTTP",
        description="Talk to the registry over plain HTTP, without TLS (test and development "
        "registries only: credentials and the model travel unencrypted).",
    )

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        problem = repository_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("tag", mode="before")
    @classmethod
    def _tag_text(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"quote it (tag: \"{value}\"): YAML reads an unquoted {value!r} "
                             "as a number")
        if isinstance(value, str) and value.startswith(":") and len(value) > 1:
            raise ValueError(f"drop the ':': tag: {value[1:]}")
        return value

    def resolved_tag(self, job_name: str) -> str:
        """The tag pushed: `tag`, or the job's name (a valid tag by the name's rules)."""
        return self.tag if self.tag is not None else job_name

    def reference(self, job_name: str) -> str:
        """`REPOSITORY:TAG`, as `status.output.reference` reports it."""
        return f"{self.repository}:{self.resolved_tag(job_name)}"


class OutputSpec(ApiModel):
    """What is done with the model once training has succeeded, in this order: check the
    gate on the final metrics (a model that does not meet it is neither merged nor pushed),
    merge the LoRA adapter, push to the registry. Each part is optional."""

    merge_adapter: bool = Field(
        default=False,
        description="Merge the trained LoRA adapter into the base model's weights, so the "
        "result (and what is pushed) is a plain model. Needs `spec.peft`. Without it, a LoRA "
        "job delivers the adapter alone.",
    )
    gate: QualityGate | None = Field(
        default=None,
        description="Deliver the model only when a final metric reaches a bound; without "
        "`oci` the result is only reported (`status.output.gate`).",
    )
    oci: OciTarget | None = Field(
        default=None, description="Push the model to an OCI registry as a KServe modelcar."
    )


def check_spec(spec: FineTuneJobSpec) -> list[Problem]:
    """The rules of `spec.output` that need the rest of the spec."""
    output = spec.output
    if output is None:
        return []
    problems: list[Problem] = []
    if output.merge_adapter and spec.peft is None:
        problems.append(Problem(f"{OUTPUT}.mergeAdapter", "merges a LoRA adapter, and this job "
                                "trains none (no spec.peft): remove mergeAdapter (the whole "
                                "model is delivered as trained) or set spec.peft"))
    if output.gate is not None:
        problems.extend(_check_gate(spec, output.gate))
    if output.oci is not None:
        problems.extend(_check_oci(output.oci))
    if not output.merge_adapter and output.gate is None and output.oci is None:
        problems.append(Problem(OUTPUT, "nothing to do: set mergeAdapter, gate or oci (or "
                                "remove spec.output)", "warning"))
    return problems


def _check_gate(spec: FineTuneJobSpec, gate: QualityGate) -> list[Problem]:
    path = f"{OUTPUT}.gate.metric"
    key = gate.key
    ds = spec.dataset
    if key.startswith(TEST_PREFIX) and ds.resolved_test_split is None:
        return [Problem(path, f"{key} is the test split's, and this job has none: set "
                        "spec.dataset.testSplit or files.test, or gate on an eval_ metric")]
    if key.startswith(EVAL_PREFIX) and not ds.has_eval_data:
        return [Problem(path, f"{key} comes from the final evaluation, and this job has no "
                        "evaluation data: set spec.dataset.evalSplit, files.validation or "
                        "evalFraction (or gate on a test_ metric with a test split)")]
    prefix = TEST_PREFIX if key.startswith(TEST_PREFIX) else EVAL_PREFIX
    name = key.removeprefix(prefix)
    known = TASK_METRICS.get(spec.task)
    if known is not None and name not in known:
        choices = [prefix + m for m in known]
        close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else f": one of {', '.join(choices[:5])}"
        return [Problem(path, f"task {spec.task} does not report {key}{hint}")]
    problems = []
    if gate.min is not None and name.endswith(_SMALLER_IS_BETTER):
        problems.append(Problem(f"{OUTPUT}.gate", f"{key} is better smaller, and min asks it to "
                                f"be at least {gate.min:g}: did you mean max?", "warning"))
    elif gate.max is not None and name.endswith(_LARGER_IS_BETTER):
        problems.append(Problem(f"{OUTPUT}.gate", f"{key} is better larger, and max asks it to "
                                f"be at most {gate.max:g}: did you mean min?", "warning"))
    if gate.min is not None and gate.min > 1 and name.endswith(_FRACTIONS):
        problems.append(Problem(f"{OUTPUT}.gate.min", f"{key} is a fraction from 0 to 1, so "
                                f"{gate.min:g} can never be met (write {gate.min / 100:g} for "
                                f"{gate.min:g}%)"))
    return problems


def _check_oci(oci: OciTarget) -> list[Problem]:
    root = f"{OUTPUT}.oci"
    problems = []
    if oci.plain_http and oci.ca_config_map_ref is not None:
        problems.append(Problem(f"{root}.plainHTTP", "plain HTTP has no TLS, so no certificate "
                                "to check against caConfigMapRef: remove one of them (a "
                                "registry with a private CA takes caConfigMapRef alone)"))
    elif oci.plain_http and oci.push_secret_ref is not None:
        problems.append(Problem(f"{root}.plainHTTP", "the push credentials of pushSecretRef "
                                "travel unencrypted over plain HTTP", "warning"))
    return problems
