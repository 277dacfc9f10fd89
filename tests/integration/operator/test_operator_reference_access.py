"""The webhook's reference access check on the real control plane, with real RBAC: a job is
refused when its author may not read a Secret, ConfigMap or claim it references (or may not
create pods), admitted for an author the built-in `edit` role covers, and admitted for anyone
with the check turned off. Authors are users the admin kubeconfig impersonates
(`kubectl --as`), so the API server sends the webhook their user info."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.controlplane.install import apply, kubectl
from tests.integration.operator.helpers import manifest
from tests.integration.operator.test_operator_admission import ready, webhook  # noqa: F401

pytestmark = pytest.mark.cluster

CREATE_ONLY, EDITOR, EDITING = "alice", "bob", "carol"

# One reference each: (spec fields, the field path and the object the refusal names).
REFERENCES = {
    "hf token": ({"model": {"name": "org/private",
                            "hfTokenSecretRef": {"name": "hf", "key": "token"}}},
                 'spec.model.hfTokenSecretRef.name: user "{user}" may not get secrets "hf"'),
    "env secret": ({"env": [{"name": "WANDB_API_KEY",
                             "secretKeyRef": {"name": "wandb", "key": "key"}}]},
                   'spec.env[0].secretKeyRef.name: user "{user}" may not get secrets "wandb"'),
    "env config map": ({"env": [{"name": "TRACKING_URI",
                                 "configMapKeyRef": {"name": "tracking", "key": "uri"}}]},
                       'spec.env[0].configMapKeyRef.name: user "{user}" may not get '
                       'configmaps "tracking"'),
    "envFrom secret": ({"podTemplate": {"envFrom": [{"secretRef": {"name": "creds"},
                                                     "prefix": "WANDB_"}]}},
                       'spec.podTemplate.envFrom[0].secretRef.name: user "{user}" may not get '
                       'secrets "creds"'),
    "envFrom config map": ({"podTemplate": {"envFrom": [{"configMapRef": {"name": "settings"},
                                                         "prefix": "APP_"}]}},
                           'spec.podTemplate.envFrom[0].configMapRef.name: user "{user}" may '
                           'not get configmaps "settings"'),
    "deepspeed config map": ({"deepspeed": {"configMapRef": {"name": "ds", "key": "ds.json"}}},
                             'spec.deepspeed.configMapRef.name: user "{user}" may not get '
                             'configmaps "ds"'),
    "existing claim": ({"storage": {"existingClaim": "shared"}},
                       'spec.storage.existingClaim: user "{user}" may not get '
                       'persistentvolumeclaims "shared"'),
    "volume claim": ({"volumes": [{"name": "models", "claimName": "model-store",
                                   "mountPath": "/models"}]},
                     'spec.volumes[0].claimName: user "{user}" may not get '
                     'persistentvolumeclaims "model-store"'),
}
EVERY_REFERENCE = {
    "model": REFERENCES["hf token"][0]["model"],
    "env": REFERENCES["env secret"][0]["env"] + REFERENCES["env config map"][0]["env"],
    "podTemplate": {"envFrom": REFERENCES["envFrom secret"][0]["podTemplate"]["envFrom"]
                    + REFERENCES["envFrom config map"][0]["podTemplate"]["envFrom"]},
    "deepspeed": REFERENCES["deepspeed config map"][0]["deepspeed"],
    "storage": REFERENCES["existing claim"][0]["storage"],
    "volumes": REFERENCES["volume claim"][0]["volumes"],
}
DENIED = 'admission webhook "validate.finetune.dev" denied the request'


def grant(cluster: Any, user: str, rules: list[dict[str, Any]],
          cluster_role: str | None = None) -> None:
    """A Role with `rules` bound to `user` in the test's namespace; plus the ClusterRole
    `cluster_role` bound there too, when given."""
    ns = cluster.ns
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": user, "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                           "name": user},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                             "name": user}]}
    objects = [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": user, "namespace": ns}, "rules": rules}, binding]
    if cluster_role is not None:
        objects.append({**binding, "metadata": {"name": f"{user}-{cluster_role}",
                                                "namespace": ns},
                        "roleRef": {**binding["roleRef"], "kind": "ClusterRole",
                                    "name": cluster_role}})
    apply(cluster.plane, objects)


def jobs_rule(*verbs: str) -> dict[str, Any]:
    return {"apiGroups": ["finetune.dev"], "resources": ["finetunejobs"], "verbs": list(verbs)}


def create_as(cluster: Any, user: str, doc: dict[str, Any], *args: str):
    """`kubectl create` of `doc` as `user`: only a POST (apply would read first)."""
    return kubectl(cluster.plane, "create", "-n", cluster.ns, "-f", "-", f"--as={user}", *args,
                   input=yaml.safe_dump(doc), check=False)


def job(name: str, **spec: Any) -> dict[str, Any]:
    return manifest(name=name, **{"trainingArguments": {"max_steps": 5}, **spec})


@pytest.fixture
def authors(cluster):
    """alice may only create FineTuneJobs; bob also has the built-in `edit` role."""
    grant(cluster, CREATE_ONLY, [jobs_rule("create")])
    grant(cluster, EDITOR, [jobs_rule("create")], cluster_role="edit")


@pytest.mark.parametrize("reference", REFERENCES)
def test_author_who_may_not_read_a_reference_is_refused_naming_field_and_permission(
        cluster, webhook, run_operator, authors, reference):
    fields, expected = REFERENCES[reference]
    with run_operator(**webhook.env):
        ready(webhook)
        done = create_as(cluster, CREATE_ONLY, job("refused", **fields))
        assert done.returncode != 0 and DENIED in done.stderr, done.stderr
        assert expected.format(user=CREATE_ONLY) + f' in namespace "{cluster.ns}"' in \
            done.stderr, done.stderr
        # Nor may alice create pods, which is what a FineTuneJob amounts to.
        assert f'spec: user "{CREATE_ONLY}" may not create pods' in done.stderr, done.stderr
        # The same job from an author the `edit` role covers is admitted.
        done = create_as(cluster, EDITOR, job("admitted", **fields), "--dry-run=server")
        assert done.returncode == 0, done.stderr


def test_reserved_variable_and_references_allowed_to_an_editor(cluster, webhook, run_operator,
                                                               authors):
    with run_operator(**webhook.env):
        ready(webhook)
        done = create_as(cluster, EDITOR, job("endpoint", env=[
            {"name": "HF_ENDPOINT", "value": "https://hub.example.com"}]))
        assert done.returncode != 0 and DENIED in done.stderr, done.stderr
        assert "spec.env[0].name: HF_ENDPOINT is reserved" in done.stderr, done.stderr
        done = create_as(cluster, CREATE_ONLY, job("endpoint", env=[
            {"name": "HF_ENDPOINT", "value": "https://hub.example.com"}]))
        assert "spec.env[0].name: HF_ENDPOINT is reserved" in done.stderr, done.stderr
        # Every kind of reference at once, and stored: bob may read them all.
        done = create_as(cluster, EDITOR, job("everything", **EVERY_REFERENCE))
        assert done.returncode == 0, done.stderr
        stored = json.loads(kubectl(cluster.plane, "get", "finetunejob", "everything", "-n",
                                    cluster.ns, "-o", "json").stdout)
        assert stored["spec"]["storage"]["existingClaim"] == "shared"


def test_update_is_checked_for_the_objects_it_adds(cluster, webhook, run_operator):
    """carol may read the Secret `hf` (only) and create pods: her job with it is admitted;
    an edit that adds a ConfigMap she may not read is refused naming that one alone, and an
    edit that adds nothing is admitted."""
    grant(cluster, EDITING, [
        jobs_rule("create", "get", "patch"),
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["hf"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}])
    fields, _ = REFERENCES["hf token"]
    with run_operator(**webhook.env):
        ready(webhook)
        done = create_as(cluster, EDITING, job("edited", **fields))
        assert done.returncode == 0, done.stderr

        def patch(spec: dict[str, Any]):
            return kubectl(cluster.plane, "patch", "finetunejob", "edited", "-n", cluster.ns,
                           f"--as={EDITING}", "--type=merge", "-p", json.dumps({"spec": spec}),
                           check=False)

        done = patch(REFERENCES["env config map"][0])
        assert done.returncode != 0 and DENIED in done.stderr, done.stderr
        assert 'spec.env[0].configMapKeyRef.name: user "carol" may not get configmaps ' \
               '"tracking"' in done.stderr, done.stderr
        assert "hfTokenSecretRef" not in done.stderr and "create pods" not in done.stderr
        done = patch({"suspend": True})
        assert done.returncode == 0, done.stderr


def test_check_turned_off_admits_the_author_who_may_only_create_jobs(cluster, webhook,
                                                                     run_operator, authors):
    with run_operator(FTJOB_WEBHOOK_CHECK_REFERENCE_ACCESS="false", **webhook.env):
        ready(webhook)
        done = create_as(cluster, CREATE_ONLY, job("unchecked", **EVERY_REFERENCE))
        assert done.returncode == 0, done.stderr
        # The rest of the webhook still answers.
        done = create_as(cluster, CREATE_ONLY, job("typo", trainingArguments={"max_step": 5}))
        assert done.returncode != 0 and "spec.trainingArguments.max_step" in done.stderr
