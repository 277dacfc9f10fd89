"""access: which permissions the webhook asks about for a request, the reviews it sends and
the refusals their answers make; the settings that turn it and the job policy on and off."""

from __future__ import annotations

import pytest
from ftjob_api.validation import Allowed
from ftjob_operator import access, admission
from ftjob_operator.access import Check
from ftjob_operator.settings import SettingsError, from_env

from tests.integration.operator.helpers import manifest


def job(**spec):
    doc = manifest(**spec)
    doc["metadata"].update(namespace="team-a")
    return doc


TOKEN = {"model": {"name": "org/private", "hfTokenSecretRef": {"name": "hf", "key": "token"}}}
CLAIM = {"volumes": [{"name": "models", "claimName": "model-store", "mountPath": "/models"}]}
PODS = Check("spec", "create", "pods", None)
HF = Check("spec.model.hfTokenSecretRef.name", "get", "secrets", "hf")
MODELS = Check("spec.volumes[0].claimName", "get", "persistentvolumeclaims", "model-store")

CASES = {
    # name: (operation, new, old, checks)
    "create without references": ("CREATE", job(), None, [PODS]),
    "create with references": ("CREATE", job(**TOKEN, **CLAIM), None, [HF, MODELS, PODS]),
    "update adding a reference": ("UPDATE", job(**TOKEN, **CLAIM), job(**TOKEN), [MODELS]),
    "update keeping the references": ("UPDATE", job(**TOKEN, suspend=True), job(**TOKEN), []),
    "update moving a reference to another field": (
        "UPDATE", job(env=[{"name": "T", "secretKeyRef": {"name": "hf", "key": "token"}}]),
        job(**TOKEN), []),
    "update naming another object": (
        "UPDATE", job(model={"name": "m", "hfTokenSecretRef": {"name": "hf2", "key": "t"}}),
        job(**TOKEN), [Check("spec.model.hfTokenSecretRef.name", "get", "secrets", "hf2")]),
    "update of an unparseable old spec checks every reference": (
        "UPDATE", job(**TOKEN), {"spec": {"task": 1}}, [HF]),
    "invalid spec: validation refuses it": ("CREATE", {"spec": {"task": "nope"}}, None, []),
    "delete": ("DELETE", job(**TOKEN), job(**TOKEN), []),
}


@pytest.mark.parametrize("case", CASES)
def test_checks(case):
    operation, new, old, expected = CASES[case]
    assert access.checks(operation, new, old) == expected


def test_review_asks_as_the_requesting_user():
    user = {"username": "alice", "uid": "42", "groups": ["team", "system:authenticated"],
            "extra": {"scopes": ["a", "b"]}}
    assert access.access_review(user, "team-a", HF) == {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "alice", "uid": "42", "groups": ["team", "system:authenticated"],
                 "extra": {"scopes": ["a", "b"]},
                 "resourceAttributes": {"namespace": "team-a", "verb": "get", "group": "",
                                        "resource": "secrets", "name": "hf"}}}
    review = access.access_review({"username": "bob", "groups": []}, "team-a", PODS)
    assert review["spec"] == {"user": "bob", "groups": [], "resourceAttributes": {
        "namespace": "team-a", "verb": "create", "group": "", "resource": "pods"}}


def test_refusals_name_the_field_and_the_missing_permission():
    twice = Check("spec.env[0].secretKeyRef.name", "get", "secrets", "hf")
    wanted = [HF, twice, MODELS, PODS]
    assert access.distinct(wanted) == [("get", "secrets", "hf"),
                                       ("get", "persistentvolumeclaims", "model-store"),
                                       ("create", "pods", None)]
    answers = {("get", "secrets", "hf"): False, ("get", "persistentvolumeclaims", "model-store"):
               True, ("create", "pods", None): False}
    assert [str(p) for p in access.refusals(wanted, answers, "alice", "team-a")] == [
        'spec.model.hfTokenSecretRef.name: user "alice" may not get secrets "hf" in '
        'namespace "team-a"',
        'spec.env[0].secretKeyRef.name: user "alice" may not get secrets "hf" in '
        'namespace "team-a"',
        'spec: user "alice" may not create pods in namespace "team-a"',
    ]


class FakeKube:
    def __init__(self, allowed: set[tuple[str, str]], fail: bool = False):
        self.allowed, self.fail, self.asked = allowed, fail, []

    async def may(self, review):
        attributes = review["spec"]["resourceAttributes"]
        self.asked.append(review)
        if self.fail:
            raise RuntimeError("HTTP 403 Forbidden")
        return (attributes["verb"], attributes.get("name", "")) in self.allowed


async def test_check_access_refuses_with_every_missing_permission_in_one_answer():
    import kopf

    kube = FakeKube({("get", "model-store")})
    with pytest.raises(kopf.AdmissionError) as refused:
        await admission.check_access(kube, "CREATE", job(**TOKEN, **CLAIM), None,
                                     {"username": "alice", "groups": []}, "team-a", "job x")
    assert refused.value.code == 403
    text = str(refused.value)
    assert 'spec.model.hfTokenSecretRef.name: user "alice" may not get secrets "hf"' in text
    assert 'spec: user "alice" may not create pods' in text and "model-store" not in text
    assert len(kube.asked) == 3
    allowed = FakeKube({("get", "hf"), ("get", "model-store"), ("create", "")})
    await admission.check_access(allowed, "CREATE", job(**TOKEN, **CLAIM), None,
                                 {"username": "alice"}, "team-a", "job x")


async def test_check_access_refuses_when_it_cannot_ask():
    import kopf

    with pytest.raises(kopf.AdmissionError) as refused:
        await admission.check_access(FakeKube(set(), fail=True), "CREATE", job(), None,
                                     {"username": "alice"}, "team-a", "job x")
    assert refused.value.code == 503 and "cannot check" in str(refused.value)


def test_settings_of_the_webhook_check_and_the_job_policy():
    default = from_env({})
    assert default.check_reference_access and default.allowed == Allowed()
    config = from_env({"FTJOB_WEBHOOK_CHECK_REFERENCE_ACCESS": "false",
                       "FTJOB_ALLOW_PROXY_ENV": "true",
                       "FTJOB_ALLOWED_RUNTIME_CLASSES": "gvisor, nvidia",
                       "FTJOB_ALLOWED_ANNOTATION_PREFIXES": "example.com/,sidecar.istio.io/"})
    assert not config.check_reference_access
    assert config.allowed == Allowed(proxy_env=True, runtime_classes=("gvisor", "nvidia"),
                                     annotation_prefixes=("example.com/", "sidecar.istio.io/"))
    with pytest.raises(SettingsError, match="FTJOB_ALLOW_PROXY_ENV"):
        from_env({"FTJOB_ALLOW_PROXY_ENV": "yes please"})


def test_webhook_review_uses_the_operator_allowances():
    doc = job(podTemplate={"runtimeClassName": "gvisor"})
    refused, _ = admission.review("CREATE", doc, None, None)
    assert [p.path for p in refused] == ["spec.podTemplate.runtimeClassName"]
    assert admission.review("CREATE", doc, None, None, Allowed(runtime_classes=("gvisor",))
                            ) == ([], [])
