"""What a ServiceAccount may do, computed from rendered RBAC objects the way the API server's
RBAC authorizer decides (https://kubernetes.io/docs/reference/access-authn-authz/rbac/)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Verbs recorded from HTTP methods that map to exactly one RBAC verb. GET is list, watch or
# get depending on the URL, so a recording must name the verb itself.
HTTP_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class Call:
    """One API request: `namespace` None for cluster-scoped resources and all-namespace lists."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Call:
        verb = str(record["verb"])
        verb = HTTP_VERBS.get(verb.upper(), verb.lower())
        if verb == "get" and str(record["verb"]).isupper():
            raise ValueError(f"ambiguous HTTP verb GET in {record}: record get, list or watch")
        return cls(verb=verb, group=record.get("group") or "", resource=record["resource"],
                   subresource=record.get("subresource") or "",
                   namespace=record.get("namespace") or None, name=record.get("name") or None)

    def __str__(self) -> str:
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        group = self.group or "core"
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {res} ({group}) {where}"


@dataclass(frozen=True)
class Grant:
    """A rule bound to the subject; `namespace` None when a ClusterRoleBinding binds it."""

    rule: dict[str, Any]
    namespace: str | None
    source: str


def grants(objects: list[dict[str, Any]], sa_name: str, sa_namespace: str) -> list[Grant]:
    """The rules bound to the ServiceAccount by the (Cluster)RoleBindings among `objects`."""
    roles = {("ClusterRole", None, o["metadata"]["name"]): o for o in objects
             if o["kind"] == "ClusterRole"}
    roles |= {("Role", o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objects
              if o["kind"] == "Role"}
    out = []
    for binding in objects:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name
                   and s.get("namespace") == sa_namespace for s in binding.get("subjects", [])):
            continue
        ns = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"]))
        assert role is not None, f"{binding['kind']} {binding['metadata']['name']} refers to " \
                                 f"missing {ref['kind']} {ref['name']}"
        for rule in role.get("rules", []):
            out.append(Grant(rule, ns, f"{role['kind']} {role['metadata']['name']}"))
    return out


def rule_matches(rule: dict[str, Any], call: Call) -> bool:
    resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
    names = rule.get("resourceNames")
    return (
        ("*" in rule.get("verbs", []) or call.verb in rule.get("verbs", []))
        and ("*" in rule.get("apiGroups", []) or call.group in rule.get("apiGroups", []))
        and ("*" in rule.get("resources", []) or resource in rule.get("resources", []))
        and (not names or (call.name is not None and call.name in names))
    )


def allowed(granted: list[Grant], call: Call) -> bool:
    # A Role's rules apply only inside its namespace; a ClusterRoleBinding's apply everywhere.
    return any(rule_matches(g.rule, call) for g in granted
               if g.namespace is None or g.namespace == call.namespace)


def triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Flatten rules into (group, resource, verb) for comparing rule sets."""
    return {(group, resource, verb) for r in rules for group in r.get("apiGroups", [])
            for resource in r.get("resources", []) for verb in r.get("verbs", [])}
