"""Suspend/resume, spec edits, deletion and reclaim policy, TTL, on the real control plane."""

from __future__ import annotations

import pytest
from ftjob_api import naming

from tests.integration.operator.helpers import (TIMEOUT, Real, bring_up, condition, describe,
                                                get_job, manifest, objects, phase_is, pods,
                                                run_all, status, summary, wait_event)
from tests.polling import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def h(cluster) -> Real:
    return Real(cluster)


def test_suspend_then_resume_starts_a_new_attempt(h, run_operator):
    with run_operator():
        h.create_job(manifest())
        bring_up(h)
        h.patch_spec({"suspend": True})
        wait_for(phase_is(h, "Suspended"), TIMEOUT, what="Suspended")
        wait_for(lambda: not pods(h), TIMEOUT, what="pods deleted", describe=lambda: describe(h))
        h.patch_spec({"suspend": False})
        st = bring_up(h, attempt=2)
        assert st.get("restarts", 0) == 0 and st.get("preemptions", 0) == 0
        wait_event(h, "Suspended")
        wait_event(h, "Resumed")


def test_spec_edit_is_reported_not_applied(h, run_operator):
    with run_operator():
        h.create_job(manifest())
        bring_up(h)
        h.patch_spec({"trainingArguments": {"max_steps": 500}})
        cond = wait_for(lambda: condition(status(h), "SpecChangeIgnored"), TIMEOUT,
                        what="SpecChangeIgnored")
        assert cond["status"] == "True" and "trainingArguments" in cond["message"]
        assert cond["observedGeneration"] == 2
        # The pods and the ConfigMap still carry the spec the job started with.
        cm = next(o for o in objects(h, "configmaps"))
        assert '"max_steps": 5' in cm["data"]["job.json"]
        assert status(h)["phase"] == "Running"


def test_a_job_holding_the_old_operators_finalizer_is_let_go_when_deleted(h, run_operator):
    """Operators that ran each job's loop as a kopf daemon put a finalizer on every job; this
    one needs none. Such a job, deleted, goes away once the operator sees it: it takes its
    own old finalizer off and leaves any other one alone."""
    from ftjob_operator.job_loops import LEGACY_FINALIZER

    doc = manifest()
    doc["metadata"]["finalizers"] = [LEGACY_FINALIZER, "example.com/keep"]
    h.create_job(doc)
    h.delete_job()
    assert (get_job(h) or {}).get("metadata", {}).get("deletionTimestamp")  # held
    with run_operator():
        wait_for(lambda: (get_job(h) or {}).get("metadata", {}).get("finalizers")
                 == ["example.com/keep"], TIMEOUT, what="the old finalizer taken off",
                 describe=lambda: str((get_job(h) or {}).get("metadata")))
        h.custom.patch_namespaced_custom_object(*h._args(), "demo",
                                                {"metadata": {"finalizers": None}})
        wait_for(lambda: get_job(h) is None, TIMEOUT, what="job gone")
    assert not pods(h)  # a job being deleted gets no pods


def test_a_new_job_gets_no_finalizer(h, run_operator):
    """Deleting a job never waits for the operator (nothing to clean up that ownerReferences
    do not): a job stays free of finalizers while it runs."""
    with run_operator():
        h.create_job(manifest())
        bring_up(h)
        assert not (get_job(h) or {})["metadata"].get("finalizers")


CHILDREN = (("services", ""), ("configmaps", ""), ("serviceaccounts", ""),
            ("roles", "rbac.authorization.k8s.io"), ("rolebindings", "rbac.authorization.k8s.io"))


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_delete_cleans_up_and_claim_follows_policy(h, run_operator, policy):
    with run_operator():
        h.create_job(manifest(storage={"accessModes": ["ReadWriteMany"],
                                       "reclaimPolicy": policy}))
        bring_up(h)
        h.delete_job()
        wait_for(lambda: get_job(h) is None, TIMEOUT, what="job gone",
                 describe=lambda: describe(h))
    # The controller-manager's garbage collector removes what the job owned, in its own time.
    wait_for(lambda: not pods(h), TIMEOUT, what="pods collected", describe=lambda: describe(h))
    for plural, group in CHILDREN:
        wait_for(lambda: not objects(h, plural, group), TIMEOUT, what=f"{plural} collected")

    def claims() -> list[str]:
        return [c["metadata"]["name"] for c in objects(h, "persistentvolumeclaims")
                if not c["metadata"].get("deletionTimestamp")]

    want = ["demo-output"] if policy == "Retain" else []
    wait_for(lambda: claims() == want, TIMEOUT, what=f"claims {want}",
             describe=lambda: str(claims()))
    if policy == "Retain":  # ... and it stays: nothing owns it
        claim = objects(h, "persistentvolumeclaims")[0]
        assert not claim["metadata"].get("ownerReferences")


def test_ttl_deletes_finished_job(h, run_operator):
    with run_operator():
        h.create_job(manifest(ttlSecondsAfterFinished=1, resources={"nodes": 1}))
        wait_for(lambda: len(pods(h)) == 1, TIMEOUT, what="one pod")
        run_all(h)
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 0), 0,
                            message=summary(status="succeeded", globalStep=5, metrics={}))
        # A second after Succeeded the job may be gone already: wait for that, then check
        # from its Events that it did succeed first.
        wait_for(lambda: get_job(h) is None, TIMEOUT, what="job deleted by TTL",
                 describe=lambda: describe(h))
        wait_event(h, "Succeeded")

