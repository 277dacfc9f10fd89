"""Generate the FineTuneJob CustomResourceDefinition from the pydantic models.

The cluster needs a structural schema (a `type` on every node, no `$ref`, no `anyOf` with
types inside); pydantic emits JSON Schema 2020-12. `structural()` converts one into the
other; `trainingArguments` comes from the TrainingArguments catalogue. `ftjob crd` and
`make crds` write the result to `crds/`; a test fails when the committed file drifts.
"""

from __future__ import annotations

import copy
from typing import Any

from . import api, training_args

# One-of rules are cheap `has()` checks. Spec immutability is NOT a CEL transition rule:
# equality over free-form fields (affinity, trainingArguments) has an unbounded estimated
# cost and would make the apiserver reject the whole CRD. The operator reports such edits.
CEL_RULES: dict[str, list[dict[str, str]]] = {
    "ModelSource": [
        {"rule": "has(self.name) != has(self.path)",
         "message": "set exactly one of name (a Hub model id) or path (a directory)"},
    ],
    "DatasetSource": [
        {"rule": "has(self.name) != has(self.files)",
         "message": "set exactly one of name (a Hub dataset id) or files"},
        {"rule": "!(has(self.evalSplit) && has(self.evalFraction))",
         "message": "set either evalSplit or evalFraction, not both"},
    ],
    "DeepSpeedSpec": [
        {"rule": "has(self.zeroStage) != has(self.configMapRef)",
         "message": "set exactly one of zeroStage or configMapRef"},
    ],
    "EnvFromSource": [
        {"rule": "has(self.configMapRef) != has(self.secretRef)",
         "message": "set exactly one of configMapRef or secretRef"},
    ],
    "QualityGate": [
        {"rule": "has(self.min) != has(self.max)",
         "message": "set exactly one of min (a metric to reach) or max (a metric to stay under)"},
    ],
}

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Step", "type": "integer", "jsonPath": ".status.progress.globalStep"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress.percent",
     "description": "Percent of max steps done"},
    {"name": "Trials", "type": "string", "jsonPath": ".status.search.trials",
     "description": "Finished trials of a hyperparameter search, e.g. 2/4"},
    {"name": "Loss", "type": "number", "jsonPath": ".status.progress.loss"},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
    {"name": "Goodput", "type": "number", "jsonPath": ".status.goodput.ratio", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Task", "type": "string", "jsonPath": ".spec.task", "priority": 1},
    {"name": "Nodes", "type": "integer", "jsonPath": ".spec.resources.nodes", "priority": 1},
    {"name": "Checkpoint", "type": "integer", "jsonPath": ".status.checkpoint.latest.step",
     "priority": 1},
    {"name": "Output", "type": "string", "jsonPath": ".status.output.reference",
     "description": "The image the model was pushed to (spec.output.oci)", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]

_DROP_KEYS = {"title", "additionalProperties", "anyOf", "$ref", "$defs", "const",
              "exclusiveMinimum", "exclusiveMaximum", "default"}


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    description = node.get("description")
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        out = structural(defs[name], defs)
        out.update(_cel(name))
        if description:
            out["description"] = description
        return out
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express a union structurally: {node}")
        merged = {**{k: v for k, v in node.items() if k != "anyOf"}, **options[0]}
        if description:
            merged["description"] = description
        return structural(merged, defs)

    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in node.items() if k not in _DROP_KEYS}
    if "const" in node:
        out["enum"] = [node["const"]]
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if node.get("default") is not None and not isinstance(node["default"], (dict, list)):
        out["default"] = node["default"]

    kind = node.get("type")
    if kind == "object":
        if "properties" in node:
            out["properties"] = {k: structural(v, defs) for k, v in node["properties"].items()}
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra, defs)
        elif "properties" not in node:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = structural(node["items"], defs)
    elif kind is None and "enum" not in node:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if kind is None and "enum" in node:
        out["type"] = "string"
    return out


def _cel(model_name: str) -> dict[str, Any]:
    rules = CEL_RULES.get(model_name)
    return {"x-kubernetes-validations": copy.deepcopy(rules)} if rules else {}


def _model_schema(model: type[api.ApiModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation", ref_template="#/$defs/{model}")
    return structural(schema, schema.get("$defs", {}))


def spec_schema() -> dict[str, Any]:
    schema = _model_schema(api.FineTuneJobSpec)
    args = training_args.json_schema()
    args["description"] = (
        api.FineTuneJobSpec.model_fields["training_arguments"].description + " " + args["description"]
    )
    # Known keys are typed (and `kubectl explain` describes them); unknown ones are kept, not
    # pruned: a real API server silently drops undeclared fields from clients that do not ask
    # for strict field validation, and a dropped typo (`lerning_rate`) would train with the
    # default. Kept, it reaches the operator's validation, which fails the job naming it.
    args["x-kubernetes-preserve-unknown-fields"] = True
    schema["properties"]["trainingArguments"] = args
    return schema


def status_schema() -> dict[str, Any]:
    schema = _model_schema(api.FineTuneJobStatus)
    # Conditions are keyed by type so server-side apply can merge them.
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "ftjob"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": list(api.CATEGORIES),
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A fine-tuning run of a Hugging Face model with the "
                            "Trainer, as gang-scheduled torchrun pods that resume from their "
                            "newest complete checkpoint after a failure.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {
                                    "type": "object",
                                    "properties": {
                                        "name": {"type": "string", "maxLength": 40,
                                                 "pattern": r"^[a-z]([-a-z0-9]*[a-z0-9])?$"},
                                    },
                                },
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    from .manifests import dump

    return "# Generated by `ftjob crd` (make crds) from the models in api/ftjob_api/api/. Do not edit.\n" + dump(build_crd())
