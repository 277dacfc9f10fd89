"""`spec.output` (merge, quality gate, OCI push) and `status.output`: the models, the messages
a tired user gets for each slip (with its field path), the CRD's schema and CEL rule, and one
manifest through `ftjob validate`."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from ftjob_api import api, contract, crd
from ftjob_api.problems import errors
from ftjob_api.validation import validate_spec

BASE = {"task": "sequence-classification", "model": {"name": "bert-base-uncased"},
        "dataset": {"files": {"train": "/d/train.jsonl", "validation": "/d/val.jsonl",
                              "test": "/d/test.jsonl"}}}
LORA = {"peft": {"r": 8}}
OCI = {"repository": "registry.example.com:5000/team/sentiment"}


def spec_with(output: dict, **fields) -> dict:
    return {**copy.deepcopy(BASE), **fields, "output": output}


def found(output: dict, **fields) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in errors(validate_spec(spec_with(output, **fields)))]


def warnings(output: dict, **fields) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in validate_spec(spec_with(output, **fields))
            if p.severity == "warning"]


def one(output: dict, path: str, *words: str, **fields) -> None:
    got = found(output, **fields)
    assert [p for p, _ in got] == [path], got
    for word in words:
        assert word in got[0][1], got


# ----------------------------------------------------------------------------- valid

def test_without_output_nothing_changes():
    assert api.parse_spec(BASE).output is None
    assert validate_spec(BASE) == []


def test_the_whole_output_parses_with_its_defaults():
    output = {"mergeAdapter": True, "gate": {"metric": "eval_accuracy", "min": 0.9},
              "oci": {**OCI, "tag": "v1", "pushSecretRef": {"name": "regcred"},
                      "caConfigMapRef": {"name": "registry-ca"}}}
    assert validate_spec(spec_with(output, **LORA)) == []
    parsed = api.parse_spec(spec_with(output, **LORA)).output
    assert parsed.merge_adapter is True
    assert parsed.oci.ca_config_map_ref.key == "ca.crt"
    assert parsed.oci.plain_http is False
    assert parsed.oci.reference("job") == "registry.example.com:5000/team/sentiment:v1"
    dumped = parsed.model_dump(by_alias=True, exclude_none=True)
    assert dumped["oci"]["plainHTTP"] is False and "pushSecretRef" in dumped["oci"]
    assert set(dumped) == {"mergeAdapter", "gate", "oci"}


def test_defaults_of_each_part():
    output = api.OutputSpec.model_validate({"oci": OCI})
    assert output.merge_adapter is False and output.gate is None
    assert output.oci.tag is None and output.oci.push_secret_ref is None
    # The tag defaults to the job's name.
    assert output.oci.reference("sentiment") == f"{OCI['repository']}:sentiment"
    assert api.OciTarget.model_validate({**OCI, "plainHTTP": True}).plain_http is True


def test_a_gate_without_oci_is_allowed():
    assert validate_spec(spec_with({"gate": {"metric": "eval_loss", "max": 0.5}})) == []


@pytest.mark.parametrize("repository", [
    "registry.example.com/team/model",
    "registry.example.com:5000/team/sentiment",
    "localhost:5000/model",
    "localhost/model",
    "10.0.0.7:5000/a/b",
    "[::1]:5000/a/b",
    "registry.svc.cluster.local/a__b/c-d/e.f/g--h",
    "Registry.Example.com/team/model",  # hosts are case-insensitive
    "docker.io/team/model",
])
def test_repositories_of_the_oci_grammar(repository):
    assert found({"oci": {"repository": repository}}) == []


@pytest.mark.parametrize("tag", ["v1", "latest", "_x", "2024.05.01", "A-b_c.D", "x" * 128])
def test_tags_of_the_oci_grammar(tag):
    assert found({"oci": {**OCI, "tag": tag}}) == []


# ----------------------------------------------------------------------------- repository

REPOSITORY = "spec.output.oci.repository"
REPOSITORY_SLIPS = {
    "scheme": ("oci://registry.example.com:5000/team/sentiment",
               ["drop the scheme oci://",
                "write repository: registry.example.com:5000/team/sentiment"]),
    "scheme, capitals and a tag": ("oci://registry.example.com/Team/Sentiment:v1",
                                   ["repository: registry.example.com/team/sentiment and tag: v1"]),
    "https scheme": ("https://registry.example.com/x", ["drop the scheme https://"]),
    "http scheme": ("http://localhost:5000/x", ["drop the scheme", "plainHTTP: true"]),
    "tag inside": ("registry.example.com:5000/team/sentiment:v1",
                   ["'v1' is a tag", "repository: registry.example.com:5000/team/sentiment "
                    "and tag: v1"]),
    "digest": ("registry.example.com/team/x@sha256:" + "a" * 64,
               ["no digest here", "status.output.digest",
                "repository: registry.example.com/team/x"]),
    "uppercase path": ("registry.example.com/Team/Sentiment",
                       ["must be lowercase", "registry.example.com/team/sentiment"]),
    "no host": ("team/sentiment", ["not a registry host", "Docker Hub",
                                   "registry.example.com/team/sentiment"]),
    "a bare name": ("sentiment", ["registry's host first", "registry.example.com/sentiment"]),
    "a bare name with a tag": ("sentiment:v1", ["'v1' is a tag", "tag: v1"]),
    "host only": ("registry.example.com:5000", ["needs a repository path"]),
    "trailing slash": ("registry.example.com/team/x/", ["a '/' too many",
                                                        "registry.example.com/team/x"]),
    "double slash": ("registry.example.com//x", ["a '/' too many"]),
    "trailing colon": ("registry.example.com/x:", ["a ':' too many",
                                                   "repository: registry.example.com/x"]),
    "bad port": ("registry.example.com:70000/x", ["not a port"]),
    "bad host": ("reg_istry.example.com/x", ["not a registry host"]),
    "bad component": ("registry.example.com/team/-x", ["path component '-x'"]),
    "two dots": ("registry.example.com/a..b", ["path component 'a..b'"]),
    "whitespace": ("registry.example.com/team x", ["whitespace"]),
    "empty": ("", ["empty", "registry.example.com/team/model"]),
}


@pytest.mark.parametrize("case", REPOSITORY_SLIPS)
def test_repository_slips_say_what_to_write(case):
    repository, words = REPOSITORY_SLIPS[case]
    one({"oci": {"repository": repository}}, REPOSITORY, *words)


def test_repository_length():
    long = "registry.example.com/" + "a" * 240
    one({"oci": {"repository": long}}, REPOSITORY, "at most 255")


def test_repository_is_required():
    one({"oci": {"tag": "v1"}}, REPOSITORY, "required field is missing")


# ----------------------------------------------------------------------------- tag

TAG = "spec.output.oci.tag"


@pytest.mark.parametrize(("tag", "words"), [
    ("v1+build", ["must be an image tag"]),
    ("-v1", ["must be an image tag"]),
    (".v1", ["must be an image tag"]),
    ("x" * 129, ["at most 128"]),
    ("", ["must be an image tag"]),
    (":v1", ["drop the ':'", "tag: v1"]),
    (1.0, ["quote it", 'tag: "1.0"']),
    (2, ["quote it"]),
])
def test_tag_slips(tag, words):
    one({"oci": {**OCI, "tag": tag}}, TAG, *words)


# ----------------------------------------------------------------------------- references

def test_secret_and_ca_references():
    one({"oci": {**OCI, "caConfigMapRef": {"key": "ca.crt"}}},
        "spec.output.oci.caConfigMapRef.name", "required field is missing")
    one({"oci": {**OCI, "caConfigMapRef": {"name": ""}}},
        "spec.output.oci.caConfigMapRef.name", "at least 1")
    one({"oci": {**OCI, "pushSecretRef": {}}}, "spec.output.oci.pushSecretRef.name",
        "required field is missing")
    one({"oci": {**OCI, "pushSecretRef": {"name": "regcred", "key": ".dockerconfigjson"}}},
        "spec.output.oci.pushSecretRef.key", "unknown field")


def test_plain_http_with_a_ca_is_a_contradiction():
    one({"oci": {**OCI, "plainHTTP": True, "caConfigMapRef": {"name": "registry-ca"}}},
        "spec.output.oci.plainHTTP", "no TLS", "caConfigMapRef")


def test_plain_http_with_credentials_warns():
    output = {"oci": {**OCI, "plainHTTP": True, "pushSecretRef": {"name": "regcred"}}}
    assert found(output) == []
    assert [p for p, _ in warnings(output)] == ["spec.output.oci.plainHTTP"]
    assert warnings({"oci": {**OCI, "plainHTTP": True}}) == []


def test_plain_http_spelling_is_checked():
    one({"oci": {**OCI, "plainHttp": True}}, "spec.output.oci.plainHttp",
        "unknown field; did you mean plainHTTP?")


# ----------------------------------------------------------------------------- merge

def test_merge_adapter_needs_peft():
    one({"mergeAdapter": True}, "spec.output.mergeAdapter", "no spec.peft")
    assert found({"mergeAdapter": True}, **LORA) == []
    assert found({"mergeAdapter": False, "oci": OCI}) == []


# ----------------------------------------------------------------------------- gate

GATE = "spec.output.gate"


def test_gate_bounds_exactly_one():
    one({"gate": {"metric": "eval_accuracy", "min": 0.9, "max": 1.0}}, GATE, "not both")
    one({"gate": {"metric": "eval_accuracy"}}, GATE, "set `min`")
    one({"gate": {"metric": "eval_accuracy", "min": True}}, f"{GATE}.min", "expected a number")
    one({"gate": {"metric": "eval_accuracy", "min": "90%"}}, f"{GATE}.min", "number")


@pytest.mark.parametrize("metric", ["", "  "])
def test_gate_metric_empty(metric):
    one({"gate": {"metric": metric, "min": 0.9}}, f"{GATE}.metric", "empty", "eval_accuracy")


def test_gate_metric_missing_or_with_spaces():
    one({"gate": {"min": 0.9}}, f"{GATE}.metric", "required field is missing")
    one({"gate": {"metric": "eval accuracy", "min": 0.9}}, f"{GATE}.metric", "no spaces")


@pytest.mark.parametrize(("metric", "key"), [
    ("eval_accuracy", "eval_accuracy"), ("accuracy", "eval_accuracy"),
    ("test_f1", "test_f1"), ("loss", "eval_loss"),
    ("rewards/accuracies", "eval_rewards/accuracies"),
])
def test_gate_metric_key_adds_eval_when_no_split_is_named(metric, key):
    assert api.gate_metric_key(metric) == key
    assert api.QualityGate(metric=metric, min=0.5).key == key


def test_gate_metric_must_be_one_the_task_reports():
    one({"gate": {"metric": "eval_acuracy", "min": 0.9}}, f"{GATE}.metric",
        "does not report eval_acuracy; did you mean eval_accuracy?")
    one({"gate": {"metric": "eval_accuracy", "min": 0.9}}, f"{GATE}.metric",
        "task causal-lm does not report eval_accuracy", task="causal-lm")
    assert found({"gate": {"metric": "perplexity", "max": 20}}, task="causal-lm") == []
    assert found({"gate": {"metric": "eval_rewards/accuracies", "min": 0.6}}, task="preference",
                 dataset={"files": {"train": "/d/t.jsonl", "validation": "/d/v.jsonl"}}) == []


def test_gate_metric_needs_the_split_it_reads():
    no_eval = {"dataset": {"files": {"train": "/d/train.jsonl"}}}
    one({"gate": {"metric": "accuracy", "min": 0.9}}, f"{GATE}.metric",
        "no evaluation data", **no_eval)
    one({"gate": {"metric": "test_accuracy", "min": 0.9}}, f"{GATE}.metric",
        "test split", **no_eval)
    assert found({"gate": {"metric": "test_accuracy", "min": 0.9}}) == []


def test_gate_min_above_one_on_a_fraction():
    one({"gate": {"metric": "eval_accuracy", "min": 90}}, f"{GATE}.min",
        "can never be met", "0.9")


def test_gate_bound_the_wrong_way_round_warns():
    assert [p for p, _ in warnings({"gate": {"metric": "eval_loss", "min": 0.3}})] == [GATE]
    assert [p for p, _ in warnings({"gate": {"metric": "eval_f1", "max": 0.8}})] == [GATE]
    assert warnings({"gate": {"metric": "eval_loss", "max": 0.3}}) == []
    assert warnings({"gate": {"metric": "accuracy", "min": 0.8}}) == []


@pytest.mark.parametrize(("gate", "value", "passed"), [
    ({"min": 0.9}, 0.9, True), ({"min": 0.9}, 0.89, False),
    ({"max": 0.5}, 0.5, True), ({"max": 0.5}, 0.51, False),
])
def test_gate_passes_with_bounds_included(gate, value, passed):
    model = api.QualityGate(metric="eval_x", **gate)
    assert model.passes(value) is passed
    assert model.comparison == next(iter(gate)) and model.bound == next(iter(gate.values()))


def test_empty_output_warns():
    assert found({}) == []
    assert [p for p, _ in warnings({})] == ["spec.output"]


def test_unknown_output_field_suggests_the_name():
    one({"mergeAdapters": True}, "spec.output.mergeAdapters",
        "unknown field; did you mean mergeAdapter?")


# ----------------------------------------------------------------------------- status

def test_status_output_round_trips_through_to_patch():
    status = api.FineTuneJobStatus(output=api.OutputStatus(
        phase=api.OutputPhase.PUSHED, reference="registry.example.com/team/x:v1",
        digest="sha256:" + "0" * 64, size=12345, pushed_at="2025-01-01T00:00:00Z", attempts=2,
        gate=api.GateResult(metric="eval_accuracy", value=0.93, bound=0.9, comparison="min",
                            passed=True)))
    patch = api.to_patch(status)
    assert patch == {"output": {
        "phase": "Pushed", "reference": "registry.example.com/team/x:v1",
        "digest": "sha256:" + "0" * 64, "size": 12345, "pushedAt": "2025-01-01T00:00:00Z",
        "attempts": 2, "gate": {"metric": "eval_accuracy", "value": 0.93, "bound": 0.9,
                                "comparison": "min", "passed": True}}}
    assert api.FineTuneJobStatus.model_validate(patch).output.phase == "Pushed"


def test_status_output_phases():
    assert [p.value for p in api.OutputPhase] == [
        "Pending", "Merging", "Pushing", "Pushed", "Ready", "Withheld", "Failed"]
    assert api.OUTPUT_FINISHED_PHASES == {"Pushed", "Ready", "Withheld", "Failed"}
    with pytest.raises(ValidationError):
        api.OutputStatus.model_validate({"phase": "Done"})
    with pytest.raises(ValidationError):
        api.OutputStatus.model_validate({"phaze": "Pushed"})
    # A withheld model: the gate's value may be missing from the final metrics.
    withheld = api.OutputStatus.model_validate({
        "phase": "Withheld", "gate": {"metric": "eval_accuracy", "bound": 0.9,
                                      "comparison": "min", "passed": False}})
    assert withheld.gate.value is None


def test_contract_names_the_export_files():
    assert contract.OUTPUT_RESULT_FILE_NAME == "output.json"
    assert contract.MERGED_DIR_NAME == "merged"


# ----------------------------------------------------------------------------- CRD

@pytest.fixture(scope="module")
def generated() -> dict:
    return crd.build_crd()


def test_crd_output_schema(generated):
    version = generated["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]["properties"]
    oci = root["spec"]["properties"]["output"]["properties"]["oci"]["properties"]
    assert set(oci) == {"repository", "tag", "pushSecretRef", "caConfigMapRef", "plainHTTP"}
    assert oci["caConfigMapRef"]["properties"]["key"]["default"] == "ca.crt"
    assert "pattern" not in oci["repository"]  # checked with words, not a regex
    status = root["status"]["properties"]["output"]["properties"]
    assert status["phase"]["enum"] == [p.value for p in api.OutputPhase]
    assert status["size"]["type"] == "integer"
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Output"]["jsonPath"] == ".status.output.reference"
    assert columns["Output"]["priority"] == 1


@pytest.mark.parametrize(("gate", "ok"), [
    ({"metric": "eval_accuracy", "min": 0.9}, True),
    ({"metric": "eval_loss", "max": 0.4}, True),
    ({"metric": "eval_accuracy", "min": 0.9, "max": 1.0}, False),
    ({"metric": "eval_accuracy"}, False),
])
def test_cel_rule_of_the_gate_agrees_with_the_model(gate, ok):
    import celpy

    env = celpy.Environment()
    results = [bool(env.program(env.compile(rule["rule"])).evaluate(
        {"self": celpy.json_to_cel(gate)})) for rule in crd.CEL_RULES["QualityGate"]]
    assert all(results) is ok
    if ok:
        api.QualityGate.model_validate(gate)
    else:
        with pytest.raises(ValidationError):
            api.QualityGate.model_validate(gate)


# ----------------------------------------------------------------------------- ftjob validate

MANIFEST = textwrap.dedent("""\
    apiVersion: finetune.dev/v1alpha1
    kind: FineTuneJob
    metadata: {name: sentiment}
    spec:
      task: sequence-classification
      model: {name: bert-base-uncased}
      dataset: {files: {train: /d/train.jsonl, validation: /d/val.jsonl}}
      peft: {r: 8}
      output:
        mergeAdapter: true
        gate: {metric: eval_accuracy, min: 0.9}
        oci:
          repository: REPOSITORY
          pushSecretRef: {name: regcred}
          caConfigMapRef: {name: registry-ca}
    """)


def test_ftjob_validate_reads_spec_output(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(MANIFEST.replace("REPOSITORY", "registry.example.com:5000/team/sentiment"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.replace("REPOSITORY", "oci://registry.example.com/team/sentiment"))
    run = [sys.executable, "-m", "ftjob_cli.cli", "validate"]
    ok = subprocess.run([*run, str(good)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = subprocess.run([*run, str(bad)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert refused.stdout.startswith(f"{bad}:13 (sentiment): error: spec.output.oci.repository: "
                                     "drop the scheme oci://"), refused.stdout
