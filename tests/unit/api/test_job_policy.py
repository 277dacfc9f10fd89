"""What a job may ask of its pods: guarded environment names (in `env` and what an `envFrom`
prefix can make), RuntimeClasses and pod annotations, by default and as the operator's
settings widen them (validation.Allowed); and the objects a job references."""

from __future__ import annotations

import pytest

from ftjob_api import api, contract
from ftjob_api.problems import errors
from ftjob_api.references import CLAIMS, CONFIG_MAPS, SECRETS, Reference, references
from ftjob_api.validation import UNCHECKED, Allowed, validate_spec

BASE = {"task": "sequence-classification", "model": {"name": "bert-base-uncased"},
        "dataset": {"name": "glue", "config": "mrpc"}}
PROXIES = Allowed(proxy_env=True)


def problems(allowed: Allowed = Allowed(), **fields):
    return errors(validate_spec({**BASE, **fields}, allowed=allowed))


def env(name: str) -> dict:
    return {"env": [{"name": name, "value": "x"}]}


def env_from(prefix: str | None) -> dict:
    source = {"configMapRef": {"name": "settings"}}
    return {"podTemplate": {"envFrom": [{**source, "prefix": prefix} if prefix else source]}}


# name: (refused by default, refused with proxies allowed)
ENV_NAMES = {
    "HF_ENDPOINT": (True, True),
    "LD_PRELOAD": (True, True),
    "LD_LIBRARY_PATH": (True, True),
    "PYTHONPATH": (True, True),
    "PYTHONSTARTUP": (True, True),
    "NVIDIA_VISIBLE_DEVICES": (True, True),
    "NVIDIA_DRIVER_CAPABILITIES": (True, True),
    "HTTP_PROXY": (True, False),
    "https_proxy": (True, False),
    "ALL_PROXY": (True, False),
    "no_proxy": (True, False),
    "Http_Proxy": (True, False),
    "HF_HUB_OFFLINE": (False, False),
    "WANDB_PROJECT": (False, False),
    "NCCL_DEBUG": (False, False),
    "MY_PYTHONPATH": (False, False),
}


@pytest.mark.parametrize("name", ENV_NAMES)
def test_guarded_env_names(name):
    by_default, with_proxies = ENV_NAMES[name]
    for allowed, refused in ((Allowed(), by_default), (PROXIES, with_proxies)):
        found = problems(allowed, **env(name))
        assert [p.path for p in found] == (["spec.env[0].name"] if refused else []), found
        if refused:
            assert f"{name} is reserved" in found[0].message
    if by_default and not with_proxies:
        assert "jobPolicy.allowProxyEnv" in problems(**env(name))[0].message


# prefix: (a name it can make by default or None, the same with proxies allowed)
PREFIXES = {
    "LD_": ("LD_KEY", "LD_KEY"),
    "L": ("LD_KEY", "LD_KEY"),
    "PYTHON": ("PYTHONKEY", "PYTHONKEY"),
    "PY": ("PYTHONKEY", "PYTHONKEY"),
    "PYTHONX_": ("PYTHONX_KEY", "PYTHONX_KEY"),
    "NVIDIA_": ("NVIDIA_KEY", "NVIDIA_KEY"),
    "HF_": ("HF_ENDPOINT", "HF_ENDPOINT"),
    "H": ("HF_ENDPOINT", "HF_ENDPOINT"),
    "HTTPS_": ("HTTPS_PROXY", None),
    "http": ("http_proxy", None),
    "NO_": ("NO_PROXY", None),
    "A": ("ALL_PROXY", None),
    "WANDB_": (None, None),
    "HF_ENDPOINT": (None, None),  # HF_ENDPOINTKEY is nobody's
    "TRACKING_": (None, None),
}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_env_from_prefixes_that_can_make_a_guarded_name(prefix):
    for allowed, made in zip((Allowed(), PROXIES), PREFIXES[prefix]):
        assert contract.guarded_env_from_prefix(prefix, allowed.proxy_env) == made
        found = problems(allowed, **env_from(prefix))
        if made is None:
            assert found == []
        else:
            assert [p.path for p in found] == ["spec.podTemplate.envFrom[0].prefix"]
            assert f"{prefix} can make {made}, which is reserved" in found[0].message


def test_env_from_without_prefix_is_admitted_with_a_warning():
    found = validate_spec({**BASE, **env_from(None)})
    assert [(p.path, p.severity) for p in found] == [("spec.podTemplate.envFrom[0]", "warning")]
    assert "unchecked" in found[0].message


RUNTIME = "spec.podTemplate.runtimeClassName"


def test_runtime_classes_only_as_the_operator_allows():
    template = {"podTemplate": {"runtimeClassName": "gvisor"}}
    found = problems(**template)
    assert [p.path for p in found] == [RUNTIME]
    assert "'gvisor' is not allowed" in found[0].message
    assert "jobPolicy.allowedRuntimeClasses (FTJOB_ALLOWED_RUNTIME_CLASSES)" in found[0].message
    assert problems(Allowed(runtime_classes=("gvisor", "nvidia")), **template) == []
    assert [p.path for p in problems(Allowed(runtime_classes=("nvidia",)), **template)] == \
        [RUNTIME]


# key: refused by default (ftjob's own and Kueue's reserved keys are refused as reserved)
ANNOTATIONS = {
    "container.apparmor.security.beta.kubernetes.io/trainer": True,
    "seccomp.security.alpha.kubernetes.io/pod": True,
    "container.seccomp.security.alpha.kubernetes.io/trainer": True,
    "sidecar.istio.io/inject": True,
    "example.com/owner": True,
    "owner": True,
    "kueue.x-k8s.io/retriable-in-group": False,
}


@pytest.mark.parametrize("key", ANNOTATIONS)
def test_pod_annotations_by_default(key):
    found = problems(podTemplate={"annotations": {key: "x"}})
    if ANNOTATIONS[key]:
        assert [p.path for p in found] == [f"spec.podTemplate.annotations[{key}]"], found
        assert "jobPolicy.allowedAnnotationPrefixes (FTJOB_ALLOWED_ANNOTATION_PREFIXES)" in \
            found[0].message
    else:
        assert found == []


def test_annotation_prefixes_the_operator_allows():
    allowed = Allowed(annotation_prefixes=("example.com/", "sidecar.istio.io/inject"))
    ok = {"example.com/owner": "a", "sidecar.istio.io/inject": "false"}
    assert problems(allowed, podTemplate={"annotations": ok}) == []
    refused = problems(allowed, podTemplate={"annotations": {
        "seccomp.security.alpha.kubernetes.io/pod": "unconfined", "finetune.dev/x": "1"}})
    # ftjob's own keys stay reserved whatever the settings say (refused once, as reserved).
    assert [(p.path, "reserved" in p.message) for p in refused] == [
        ("spec.podTemplate.annotations[seccomp.security.alpha.kubernetes.io/pod]", False),
        ("spec.podTemplate.annotations[finetune.dev/x]", True)]


def test_unchecked_skips_the_operator_policy_but_not_the_reserved_names():
    doc = {**env("HTTP_PROXY"), "podTemplate": {
        "runtimeClassName": "gvisor", "annotations": {"example.com/a": "1"},
        "envFrom": [{"secretRef": {"name": "s"}, "prefix": "LD_"}]}}
    assert problems(UNCHECKED, **doc) == []
    assert [p.path for p in problems(UNCHECKED, **env("FTJOB_JOB_FILE"))] == ["spec.env[0].name"]


# ----------------------------------------------------------------------------- references

EVERY_REFERENCE = {
    **BASE,
    "model": {"name": "org/private", "hfTokenSecretRef": {"name": "hf", "key": "token"}},
    "env": [{"name": "A", "value": "1"},
            {"name": "B", "secretKeyRef": {"name": "wandb", "key": "key"}},
            {"name": "C", "configMapKeyRef": {"name": "tracking", "key": "url"}}],
    "podTemplate": {"envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "S_"},
                                {"secretRef": {"name": "creds", "optional": True},
                                 "prefix": "WANDB_"}]},
    "deepspeed": {"configMapRef": {"name": "ds", "key": "ds.json"}},
    "resources": {"gpusPerNode": 1},
    "storage": {"existingClaim": "shared"},
    "volumes": [{"name": "models", "claimName": "model-store", "mountPath": "/models"},
                {"name": "data", "claimName": "corpora", "mountPath": "/data"}],
    "output": {"oci": {"repository": "registry.example.com/team/model",
                       "pushSecretRef": {"name": "regcred"},
                       "caConfigMapRef": {"name": "registry-ca"}}},
}


def test_references_name_every_object_a_pod_reads_with_its_field():
    assert references(api.parse_spec(EVERY_REFERENCE)) == [
        Reference("spec.model.hfTokenSecretRef.name", SECRETS, "hf"),
        Reference("spec.env[1].secretKeyRef.name", SECRETS, "wandb"),
        Reference("spec.env[2].configMapKeyRef.name", CONFIG_MAPS, "tracking"),
        Reference("spec.podTemplate.envFrom[0].configMapRef.name", CONFIG_MAPS, "settings"),
        Reference("spec.podTemplate.envFrom[1].secretRef.name", SECRETS, "creds"),
        Reference("spec.deepspeed.configMapRef.name", CONFIG_MAPS, "ds"),
        Reference("spec.storage.existingClaim", CLAIMS, "shared"),
        Reference("spec.volumes[0].claimName", CLAIMS, "model-store"),
        Reference("spec.volumes[1].claimName", CLAIMS, "corpora"),
        Reference("spec.output.oci.pushSecretRef.name", SECRETS, "regcred"),
        Reference("spec.output.oci.caConfigMapRef.name", CONFIG_MAPS, "registry-ca"),
    ]
    assert references(api.parse_spec(BASE)) == []


REF_MODELS = {"SecretKeyRef", "ConfigMapKeyRef", "SecretEnvSource", "ConfigMapEnvSource",
              "SecretRef", "CABundleRef"}


def _reference_fields(model, path: str) -> set[str]:
    """Paths of the spec's fields that name an object: typed as one of REF_MODELS, or a
    string field described as a PersistentVolumeClaim."""
    import typing

    import pydantic

    found = set()
    for name, info in model.model_fields.items():
        field = f"{path}.{info.alias or name}"
        args = [info.annotation]
        is_list = False
        while args:
            arg = args.pop()
            is_list |= typing.get_origin(arg) is list
            args += list(typing.get_args(arg))
            if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
                where = field + ("[]" if is_list else "")
                if arg.__name__ in REF_MODELS:
                    found.add(where)
                else:
                    found |= _reference_fields(arg, where)
            elif arg is str and "PersistentVolumeClaim" in (info.description or ""):
                found.add(field)
    return found


def test_every_reference_field_of_the_api_is_collected():
    """A new field naming a Secret, ConfigMap or claim fails here until `references` lists it."""
    import re

    collected = {re.sub(r"\[\d+\]", "[]", r.path).removesuffix(".name")
                 for r in references(api.parse_spec(EVERY_REFERENCE))}
    assert _reference_fields(api.FineTuneJobSpec, "spec") == collected
