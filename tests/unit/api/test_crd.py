"""The CRD is generated from the models, structural, in sync, and agrees with the models."""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from ftjob_api import api, crd
from ftjob_api.training_args import MANAGED_KEYS

from .conftest import ROOT, example_documents

CRD_FILE = ROOT / "crds" / "finetune.dev_finetunejobs.yaml"


@pytest.fixture(scope="module")
def generated() -> dict:
    return crd.build_crd()


def openapi_schema(c: dict) -> dict:
    return c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_is_in_sync():
    assert CRD_FILE.read_text() == crd.render_crd_yaml(), (
        "crds/ is stale: run `make crds` and commit the result"
    )


def test_names_scope_and_subresources(generated):
    spec = generated["spec"]
    assert generated["metadata"]["name"] == "finetunejobs.finetune.dev"
    assert spec["group"] == "finetune.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "FineTuneJob"
    assert spec["names"]["plural"] == "finetunejobs"
    assert spec["names"]["shortNames"] == ["ftj"]
    assert "ml" in spec["names"]["categories"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns(generated):
    columns = generated["spec"]["versions"][0]["additionalPrinterColumns"]
    default = [c["name"] for c in columns if not c.get("priority")]
    assert default == ["Phase", "Step", "Progress", "Trials", "Loss", "Restarts", "Age"]
    by_name = {c["name"]: c for c in columns}
    assert by_name["Step"]["jsonPath"] == ".status.progress.globalStep"
    assert by_name["Restarts"]["jsonPath"] == ".status.restarts"
    assert by_name["Trials"]["jsonPath"] == ".status.search.trials"


def walk(node: dict, path: str = ""):
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural(generated):
    """Every node has a type (or preserves unknown fields); no $ref, anyOf or
    additionalProperties: false; additionalProperties never next to properties."""
    for path, node in walk(openapi_schema(generated)):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "title", "const"):
            assert forbidden not in node, f"{path} has {forbidden}"
        assert node.get("additionalProperties", True) is not False, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if "default" in node:
            assert node["default"] is not None, path


def test_every_user_field_has_a_description(generated):
    spec = openapi_schema(generated)["properties"]["spec"]
    missing = [path for path, node in walk(spec) if path and not node.get("description")
               and not path.endswith("[]") and not path.endswith("{}")]
    assert missing == []


def test_training_arguments_are_typed_from_transformers(generated):
    args = openapi_schema(generated)["properties"]["spec"]["properties"]["trainingArguments"]
    props = args["properties"]
    assert props["learning_rate"]["type"] == "number"
    assert props["per_device_train_batch_size"] == {
        **props["per_device_train_batch_size"], "type": "integer", "minimum": 1}
    assert "cosine" in props["lr_scheduler_type"]["enum"]
    assert props["eval_strategy"]["enum"] == ["no", "steps", "epoch"]
    assert props["fp16"]["type"] == "boolean"
    assert "seq2seq only" in props["predict_with_generate"]["description"]
    assert not set(MANAGED_KEYS) & set(props), "managed keys must not be offered"


def test_cel_one_of_rules(generated):
    spec = openapi_schema(generated)["properties"]["spec"]["properties"]
    rules = {r["rule"] for r in spec["model"]["x-kubernetes-validations"]}
    assert "has(self.name) != has(self.path)" in rules
    rules = {r["rule"] for r in spec["dataset"]["x-kubernetes-validations"]}
    assert "has(self.name) != has(self.files)" in rules


def _strip_k8s_extensions(node):
    """OpenAPI v3 as the apiserver reads it is close to JSON Schema draft 4."""
    if isinstance(node, dict):
        return {k: _strip_k8s_extensions(v) for k, v in node.items()
                if not k.startswith("x-kubernetes") and k != "nullable"}
    if isinstance(node, list):
        return [_strip_k8s_extensions(v) for v in node]
    return node


@pytest.fixture(scope="module")
def crd_validator(generated):
    return jsonschema.Draft4Validator(_strip_k8s_extensions(openapi_schema(generated)))


@pytest.mark.parametrize("doc", list(example_documents()))
def test_examples_pass_the_crd_schema(crd_validator, doc):
    errors = [e.message for e in crd_validator.iter_errors(doc.body)]
    assert errors == []


@pytest.mark.parametrize(
    ("patch", "where"),
    [
        ({"resources": {"nodes": 0}}, "nodes"),
        ({"task": "classification"}, "task"),
        ({"trainingArguments": {"learning_rate": "fast"}}, "learning_rate"),
        ({"trainingArguments": {"eval_strategy": "sometimes"}}, "eval_strategy"),
        ({"storage": {"reclaimPolicy": "Keep"}}, "reclaimPolicy"),
    ],
)
def test_crd_schema_rejects_what_the_models_reject(crd_validator, valid_job, patch, where):
    for key, value in patch.items():
        if isinstance(value, dict):
            valid_job["spec"].setdefault(key, {}).update(value)
        else:
            valid_job["spec"][key] = value
    errors = list(crd_validator.iter_errors(valid_job))
    assert any(where in "/".join(map(str, e.absolute_path)) for e in errors), errors


def test_crd_file_is_loadable_yaml():
    loaded = yaml.safe_load(CRD_FILE.read_text())
    assert loaded["kind"] == "CustomResourceDefinition"
    assert loaded["spec"]["names"]["kind"] == api.KIND


# --- CEL rules, evaluated with a CEL interpreter on the objects they guard

CEL_TARGETS = {"ModelSource": "model", "DatasetSource": "dataset", "DeepSpeedSpec": "deepspeed"}


def _cel_results(model_name: str, obj: dict) -> list[bool]:
    import celpy

    env = celpy.Environment()
    return [bool(env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(obj)}))
            for rule in crd.CEL_RULES[model_name]]


@pytest.mark.parametrize("doc", list(example_documents()))
def test_cel_rules_accept_the_examples(doc):
    for model_name, field in CEL_TARGETS.items():
        if field in doc.body["spec"]:
            assert all(_cel_results(model_name, doc.body["spec"][field])), (model_name, field)
    for source in (doc.body["spec"].get("podTemplate") or {}).get("envFrom") or []:
        assert all(_cel_results("EnvFromSource", source)), source


@pytest.mark.parametrize(
    ("model_name", "obj"),
    [
        ("ModelSource", {"name": "bert-base-uncased", "path": "/models/bert"}),
        ("ModelSource", {"revision": "main"}),
        ("DatasetSource", {"name": "klue", "files": {"train": "/t.csv"}}),
        ("DatasetSource", {"name": "klue", "evalSplit": "validation", "evalFraction": 0.1}),
        ("DeepSpeedSpec", {"zeroStage": 2, "configMapRef": {"name": "ds", "key": "k"}}),
        ("DeepSpeedSpec", {"offloadOptimizer": True}),
        ("EnvFromSource", {"configMapRef": {"name": "a"}, "secretRef": {"name": "b"}}),
        ("EnvFromSource", {"prefix": "X_"}),
    ],
)
def test_cel_rules_reject_what_the_models_reject(model_name, obj):
    from pydantic import ValidationError

    assert not all(_cel_results(model_name, obj))
    with pytest.raises(ValidationError):
        getattr(api, model_name).model_validate(obj)
