"""Suspend/resume, spec edits, deletion and reclaim policy, TTL."""

from __future__ import annotations

import pytest

from ftjob_operator import naming
from tests.conftest import wait_for
from tests.integration.operator.helpers import (NS, bring_up, wait_event, condition, create_job, delete_job,
                                                get_job, manifest, objects, patch_spec,
                                                phase_is, pods, run_all, status, summary)


def test_suspend_then_resume_starts_a_new_attempt(kube, run_operator):
    with run_operator():
        create_job(kube, manifest())
        bring_up(kube)
        patch_spec(kube, {"suspend": True})
        wait_for(phase_is(kube, "Suspended"), what="Suspended")
        wait_for(lambda: not pods(kube), what="pods deleted")
        patch_spec(kube, {"suspend": False})
        bring_up(kube, attempt=2)
        st = status(kube)
        assert st.get("restarts", 0) == 0 and st.get("preemptions", 0) == 0
        wait_event(kube, "Suspended")
        wait_event(kube, "Resumed")


def test_spec_edit_is_reported_not_applied(kube, run_operator):
    with run_operator():
        create_job(kube, manifest())
        bring_up(kube)
        patch_spec(kube, {"trainingArguments": {"max_steps": 500}})
        cond = wait_for(lambda: condition(status(kube), "SpecChangeIgnored"),
                        what="SpecChangeIgnored")
        assert cond["status"] == "True" and "trainingArguments" in cond["message"]
        assert cond["observedGeneration"] == 2
        # The pods and the ConfigMap still carry the spec the job started with.
        cm = next(o for o in objects(kube, "configmaps"))
        assert '"max_steps": 5' in cm["data"]["job.json"]
        assert status(kube)["phase"] == "Running"


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_delete_cleans_up_and_claim_follows_policy(kube, run_operator, policy):
    with run_operator():
        create_job(kube, manifest(storage={"accessModes": ["ReadWriteMany"],
                                           "reclaimPolicy": policy}))
        bring_up(kube)
        delete_job(kube)
        wait_for(lambda: get_job(kube) is None, what="job gone (finalizer released)")
        wait_for(lambda: not pods(kube), what="pods collected")
        for plural, group in (("services", ""), ("configmaps", ""), ("serviceaccounts", ""),
                              ("roles", "rbac.authorization.k8s.io"),
                              ("rolebindings", "rbac.authorization.k8s.io")):
            assert not objects(kube, plural, group), plural
        claims = [c["metadata"]["name"] for c in objects(kube, "persistentvolumeclaims")]
        assert claims == (["demo-output"] if policy == "Retain" else [])


def test_ttl_deletes_finished_job(kube, run_operator):
    with run_operator():
        create_job(kube, manifest(ttlSecondsAfterFinished=1, resources={"nodes": 1}))
        wait_for(lambda: len(pods(kube)) == 1)
        run_all(kube)
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 0), 0,
                               message=summary(status="succeeded", globalStep=5, metrics={}))
        wait_for(phase_is(kube, "Succeeded"))
        wait_for(lambda: get_job(kube) is None, timeout=15, what="job deleted by TTL")
