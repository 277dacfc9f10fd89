"""The operator's RBAC is exactly docs/rbac.md, narrows with watchNamespaces, and allows every
API call the operator makes."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from .rbac import Call, allowed, grants, triples
from .rendering import RELEASE, RELEASE_NAMESPACE, ROOT, by_kind, render

RBAC_DOC = ROOT / "docs" / "rbac.md"
RECORDED_CALLS = ROOT / "tests" / "data" / "operator-api-calls.json"
WATCHED = ["team-a", "team-b"]

# (watchNamespaces, replicaCount): all four combinations change the rules; so does the
# admission webhook with a self-signed certificate (WEBHOOK_MODES).
MODES = {
    "all-namespaces": ([], 1),
    "all-namespaces-peering": ([], 3),
    "namespace-list": (WATCHED, 1),
    "namespace-list-peering": (WATCHED, 2),
    "all-namespaces-webhook": ([], 1),
    "namespace-list-webhook": (WATCHED, 1),
}
WEBHOOK_MODES = {"all-namespaces-webhook", "namespace-list-webhook"}


def values_for(mode: str) -> dict:
    namespaces, replicas = MODES[mode]
    return {"watchNamespaces": namespaces, "replicaCount": replicas,
            "webhook": {"enabled": mode in WEBHOOK_MODES}}


@dataclass(frozen=True)
class DocRule:
    where: str  # "cluster", "namespaces" or "release namespace"
    group: str
    resource: str
    verbs: tuple[str, ...]
    when: str

    def applies(self, clusterwide: bool, peering: bool, webhook: bool = False) -> bool:
        conditions = {c.strip() for c in self.when.split(",")}
        known = {"always", "namespace list", "all namespaces", "replicas > 1",
                 "self-signed webhook", "webhook access checks"}
        assert conditions <= known, f"{RBAC_DOC}: unknown When {self.when!r} for {self.resource}"
        return (("namespace list" not in conditions or not clusterwide)
                and ("all namespaces" not in conditions or clusterwide)
                and ("replicas > 1" not in conditions or peering)
                and ("self-signed webhook" not in conditions or webhook)
                # The webhook modes keep webhook.checkReferenceAccess at its default (on).
                and ("webhook access checks" not in conditions or webhook))

    def triples(self) -> set[tuple[str, str, str]]:
        return {(self.group, self.resource, verb) for verb in self.verbs}


def documented_rules() -> list[DocRule]:
    """Rows of the table in docs/rbac.md."""
    rows = []
    for line in RBAC_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] not in ("cluster", "namespaces", "release namespace"):
            continue
        where, group, resource, verbs, when, _why = cells
        rows.append(DocRule(where, "" if group == "core" else group, resource,
                            tuple(v.strip() for v in verbs.split(",")), when))
    assert len(rows) >= 10, f"{RBAC_DOC}: the rules table was not found"
    return rows


def expected(where: str, clusterwide: bool, peering: bool, webhook: bool = False
             ) -> set[tuple[str, str, str]]:
    return set().union(*(r.triples() for r in documented_rules()
                         if r.where == where and r.applies(clusterwide, peering, webhook)))


@pytest.mark.parametrize("mode", MODES)
def test_rendered_rules_are_exactly_the_documented_ones(mode):
    namespaces, replicas = MODES[mode]
    clusterwide, peering, webhook = not namespaces, replicas > 1, mode in WEBHOOK_MODES
    objects = render(values_for(mode))
    cluster_roles = by_kind(objects, "ClusterRole")
    roles = [r for r in by_kind(objects, "Role") if not r["metadata"]["name"].endswith("-leader")]
    leader = [r for r in by_kind(objects, "Role") if r["metadata"]["name"].endswith("-leader")]
    assert [r["metadata"]["namespace"] for r in leader] == ([RELEASE_NAMESPACE] if peering else [])
    want = expected("release namespace", clusterwide, peering)
    assert set().union(*(triples(r["rules"]) for r in leader)) == want
    assert len(cluster_roles) == 1
    granted = triples(cluster_roles[0]["rules"])
    if clusterwide:
        assert roles == []
        want = (expected("cluster", True, peering, webhook)
                | expected("namespaces", True, peering))
        assert granted == want, _diff(granted, want)
    else:
        want = expected("cluster", False, peering, webhook)
        assert granted == want, _diff(granted, want)
        assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(namespaces)
        want = expected("namespaces", False, peering)
        for role in roles:
            assert triples(role["rules"]) == want, _diff(triples(role["rules"]), want)


def _diff(granted: set, want: set) -> str:
    return (f"granted but not in {RBAC_DOC.name}: {sorted(granted - want)}; "
            f"documented but not granted: {sorted(want - granted)}")


@pytest.mark.parametrize("mode", MODES)
def test_no_secrets_wildcards_or_privilege_verbs(mode):
    for role in by_kind(render(values_for(mode)), "ClusterRole") + by_kind(
            render(values_for(mode)), "Role"):
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"], f"{role['kind']} reads Secrets: {rule}"
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key], f"wildcard in {role['kind']}: {rule}"
            assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(
                rule["verbs"]), rule


def sa_grants(objects):
    return grants(objects, RELEASE, RELEASE_NAMESPACE)


def operator_calls(namespaces: list[str], peering: bool) -> list[Call]:
    """The calls the operator makes by design (ftjob_operator.handlers and .k8s, and what kopf
    1.45 itself needs: CRD discovery, namespaces, peering, events)."""
    clusterwide = not namespaces
    targets = namespaces or ["any-team"]
    listing_ns = [None] if clusterwide else namespaces
    calls = [Call("list", "apiextensions.k8s.io", "customresourcedefinitions"),
             Call("watch", "apiextensions.k8s.io", "customresourcedefinitions")]
    if not clusterwide:
        calls += [Call("list", "", "namespaces"), Call("watch", "", "namespaces")]
    for ns in listing_ns:
        calls += [Call(v, "finetune.dev", "finetunejobs", namespace=ns) for v in ("list", "watch")]
        calls += [Call(v, "", r, namespace=ns) for v in ("list", "watch")
                  for r in ("pods", "configmaps")]  # kopf indexes of the children
    if peering and clusterwide:
        calls += [Call(v, "kopf.dev", "clusterkopfpeerings", name="ftjob")
                  for v in ("list", "watch", "patch")]
    if peering:  # leadership.py: the Lease of the peering's name, in its own namespace
        calls += [Call("create", "coordination.k8s.io", "leases", namespace=RELEASE_NAMESPACE)]
        calls += [Call(v, "coordination.k8s.io", "leases", namespace=RELEASE_NAMESPACE,
                       name="ftjob") for v in ("get", "update")]
    for ns in targets:
        calls += [
            Call("patch", "finetune.dev", "finetunejobs", namespace=ns, name="job"),
            Call("patch", "finetune.dev", "finetunejobs", "status", ns, "job"),
            Call("get", "finetune.dev", "finetunejobs", "status", ns, "job"),
            Call("update", "finetune.dev", "finetunejobs", "finalizers", ns, "job"),
            Call("create", "", "events", namespace=ns),
            Call("delete", "", "pods", namespace=ns, name="job-a1-0"),
            Call("delete", "finetune.dev", "finetunejobs", namespace=ns, name="job"),
        ]
        calls += [Call("create", group, resource, namespace=ns) for group, resource in (
            ("", "pods"), ("", "services"), ("", "configmaps"), ("", "persistentvolumeclaims"),
            ("", "serviceaccounts"), ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "rolebindings"))]
        if peering and not clusterwide:
            calls += [Call(v, "kopf.dev", "kopfpeerings", namespace=ns, name="ftjob")
                      for v in ("list", "watch", "patch")]
    return calls


@pytest.mark.parametrize("mode", MODES)
def test_every_designed_call_is_allowed(mode):
    namespaces, replicas = MODES[mode]
    granted = sa_grants(render(values_for(mode)))
    missing = [str(c) for c in operator_calls(namespaces, replicas > 1) if not allowed(granted, c)]
    assert missing == [], "the chart's RBAC does not allow:\n  " + "\n  ".join(missing)


def test_namespace_list_narrows_access():
    granted = sa_grants(render(values_for("namespace-list")))
    denied = [
        Call("create", "", "pods", namespace="kube-system"),
        Call("list", "finetune.dev", "finetunejobs"),  # all namespaces at once
        Call("patch", "finetune.dev", "finetunejobs", "status", "other-team", "job"),
        Call("get", "", "secrets", namespace="team-a", name="hf-token"),
        Call("create", "rbac.authorization.k8s.io", "roles", namespace="default"),
    ]
    wrongly_allowed = [str(c) for c in denied if allowed(granted, c)]
    assert wrongly_allowed == []
    assert allowed(granted, Call("create", "", "pods", namespace="team-b"))


def test_secrets_are_never_readable():
    for mode in MODES:
        granted = sa_grants(render(values_for(mode)))
        for verb in ("get", "list", "watch"):
            assert not allowed(granted, Call(verb, "", "secrets", namespace="team-a")), mode


def test_access_reviews_only_while_the_webhook_checks_access():
    review = Call("create", "authorization.k8s.io", "subjectaccessreviews")
    for mode in WEBHOOK_MODES:
        assert allowed(sa_grants(render(values_for(mode))), review), mode
    values = values_for("all-namespaces-webhook")
    values["webhook"]["checkReferenceAccess"] = False
    assert not allowed(sa_grants(render(values)), review)
    assert not allowed(sa_grants(render(values_for("all-namespaces"))), review)


def test_rbac_can_be_left_to_the_platform_team():
    objects = render({"rbac": {"create": False}})
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & {
        o["kind"] for o in objects}


def recorded_calls() -> list[Call]:
    data = json.loads(RECORDED_CALLS.read_text())
    records = data["calls"] if isinstance(data, dict) else data
    return [Call.from_record(r) for r in records]


def denied_calls(calls: list[Call]) -> list[str]:
    """The calls the chart's RBAC would refuse, rendered in the recording's own mode: a
    cluster-wide list of FineTuneJobs means "all namespaces", otherwise the namespaces the
    calls touched are the watched list; peering calls mean more than one replica; calls on the
    webhook configuration mean the self-signed webhook."""
    clusterwide = any(c.resource == "finetunejobs" and c.namespace is None for c in calls)
    namespaces = [] if clusterwide else sorted({c.namespace for c in calls if c.namespace})
    peering = any(re.fullmatch(r"(cluster)?kopfpeerings", c.resource) for c in calls)
    webhook = any(c.resource == "validatingwebhookconfigurations" for c in calls)
    granted = sa_grants(render({"watchNamespaces": namespaces,
                                "replicaCount": 2 if peering else 1,
                                "webhook": {"enabled": webhook}}))
    return sorted({str(c) for c in calls if not allowed(granted, c)})


def test_recorded_operator_calls_are_allowed():
    """Every call the operator's integration tests saw it make is allowed by the chart."""
    assert RECORDED_CALLS.exists(), (f"{RECORDED_CALLS.relative_to(ROOT)} is missing: run the "
                                     "operator integration tests with FTJOB_UPDATE_API_CALLS=1")
    calls = recorded_calls()
    assert calls, f"{RECORDED_CALLS}: no calls recorded"
    denied = denied_calls(calls)
    assert denied == [], (f"calls recorded in {RECORDED_CALLS.name} that the chart's RBAC "
                          "denies (add a rule in templates/_helpers.tpl and docs/rbac.md):\n  "
                          + "\n  ".join(denied))


def test_recording_check_names_denied_calls():
    records = [
        {"verb": "list", "group": "finetune.dev", "resource": "finetunejobs", "namespace": None},
        {"verb": "PATCH", "group": "finetune.dev", "resource": "finetunejobs",
         "subresource": "status", "namespace": "team-a"},
        {"verb": "get", "group": "", "resource": "secrets", "subresource": None,
         "namespace": "team-a", "status": 200},
        {"verb": "update", "group": "", "resource": "pods", "namespace": "team-a"},
    ]
    assert denied_calls([Call.from_record(r) for r in records]) == [
        "get secrets (core) in namespace team-a", "update pods (core) in namespace team-a"]
    with pytest.raises(ValueError, match="ambiguous"):
        Call.from_record({"verb": "GET", "group": "", "resource": "pods"})


def test_checker_scopes_roles_to_their_namespace():
    objects = render(values_for("namespace-list"))
    granted = sa_grants(objects)
    assert allowed(granted, Call("create", "", "pods", namespace="team-a"))
    assert not allowed(granted, Call("create", "", "pods", namespace="team-c"))
    assert not allowed(granted, Call("create", "", "pods", "exec", "team-a"))
    # A binding for another ServiceAccount grants this one nothing.
    assert grants(objects, "someone-else", RELEASE_NAMESPACE) == []


def test_webhook_may_patch_only_its_own_configuration():
    granted = sa_grants(render(values_for("namespace-list-webhook")))
    group, resource = "admissionregistration.k8s.io", "validatingwebhookconfigurations"
    assert allowed(granted, Call("patch", group, resource, name=RELEASE))
    assert allowed(granted, Call("get", group, resource, name=RELEASE))
    assert not allowed(granted, Call("patch", group, resource, name="someone-elses"))
    assert not allowed(granted, Call("list", group, resource))
    # cert-manager's cainjector writes the CA: the operator needs no such right.
    cert_manager = {"webhook": {"enabled": True, "certificates": {"source": "cert-manager"}}}
    assert not allowed(sa_grants(render(cert_manager)),
                       Call("patch", group, resource, name=RELEASE))
