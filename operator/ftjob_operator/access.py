"""Reference access at admission: may the author of a FineTuneJob read what its pods will?

The operator creates the pods, so without this check anyone who may create a FineTuneJob
could have a Secret, ConfigMap or claim of the namespace mounted into a pod that runs
their code. The webhook asks the API server (SubjectAccessReviews, as the requesting user)
whether the author may `get` every object the spec names (`ftjob_api.references`) and
`create` pods in the namespace, and refuses the request naming the field and the missing
permission. Pure: the reviews to ask for and the problems their answers make; `admission`
sends them.

When: on CREATE every reference and the pods; on UPDATE only the objects the edit adds (an
object the old spec named was checked when it was added), so suspending, resuming or
editing a job never needs permissions its author was not asked for before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import pydantic

from ftjob_api import api
from ftjob_api.problems import Problem
from ftjob_api.references import references

POD_CREATION_PATH = "spec"  # the job as a whole: its pods run what the spec asks


class Check(NamedTuple):
    path: str  # the field the refusal names
    verb: str
    resource: str  # core API group
    name: str | None  # None: any object of the resource (create)


def _parsed(doc: Mapping[str, Any] | None) -> api.FineTuneJobSpec | None:
    spec = (doc or {}).get("spec")
    try:
        return api.parse_spec(spec) if isinstance(spec, dict) else None
    except pydantic.ValidationError:
        return None


def checks(operation: str, new: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[Check]:
    """The access the author needs for this request: see the module's docstring. A spec
    that does not parse needs none (validation refuses it)."""
    spec = _parsed(new)
    if spec is None or operation not in ("CREATE", "UPDATE"):
        return []
    wanted = [Check(r.path, "get", r.resource, r.name) for r in references(spec)]
    if operation == "CREATE":
        return [*wanted, Check(POD_CREATION_PATH, "create", "pods", None)]
    before = _parsed(old)
    known = {(r.resource, r.name) for r in references(before)} if before is not None else set()
    return [c for c in wanted if (c.resource, c.name) not in known]


def access_review(userinfo: Mapping[str, Any], namespace: str, check: Check) -> dict[str, Any]:
    """The SubjectAccessReview asking whether the requesting user may do `check`."""
    attributes: dict[str, Any] = {"namespace": namespace, "verb": check.verb, "group": "",
                                  "resource": check.resource}
    if check.name is not None:
        attributes["name"] = check.name
    spec: dict[str, Any] = {"user": userinfo.get("username") or "",
                            "groups": list(userinfo.get("groups") or []),
                            "resourceAttributes": attributes}
    if userinfo.get("uid"):
        spec["uid"] = userinfo["uid"]
    extra = userinfo.get("extra")
    if extra:
        spec["extra"] = {k: list(v) for k, v in extra.items()}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": spec}


def distinct(wanted: Sequence[Check]) -> list[tuple[str, str, str | None]]:
    """Each (verb, resource, name) once: one review answers every field naming it."""
    return list(dict.fromkeys((c.verb, c.resource, c.name) for c in wanted))


def refusals(wanted: Sequence[Check], allowed: Mapping[tuple[str, str, str | None], bool],
             user: str, namespace: str) -> list[Problem]:
    """A problem for each check the API server did not allow, in the spec's order."""
    problems = []
    for check in wanted:
        if allowed.get((check.verb, check.resource, check.name)):
            continue
        what = check.resource if check.name is None else f'{check.resource} "{check.name}"'
        problems.append(Problem(check.path, f'user "{user}" may not {check.verb} {what} in '
                                f'namespace "{namespace}"'))
    return problems


def refusal(kind_name: str, problems: Sequence[Problem]) -> str:
    lines = "\n".join(f"  {p}" for p in problems)
    return (f"{kind_name} is refused: its pods would read or do what its author may not "
            f"(docs/rbac.md):\n{lines}")
