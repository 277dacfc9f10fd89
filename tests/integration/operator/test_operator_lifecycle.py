"""The real operator (kopf) against the emulated API: create, run, succeed, restart, fail."""

from __future__ import annotations

from ftjob_operator import naming, render
from ftjob_operator.api import parse_spec
from ftjob_operator.settings import Settings
from tests.conftest import wait_for

from tests.integration.operator.helpers import (NS, wait_event, create_job, manifest, objects, phase_is, pod_names, pods,
                      run_all, status, summary)


def test_create_run_succeed(kube, run_operator):
    with run_operator():
        job = create_job(kube, manifest())
        wait_for(lambda: len(pods(kube)) == 2, what="two pods")
        # Children are exactly what render.py builds for this job.
        ref = render.JobRef("demo", NS, job["metadata"]["uid"])
        spec = parse_spec(job["spec"])
        settings = Settings(trainer_image="ftjob/trainer:test", resync_seconds=2)
        expected = render.render_job_objects(ref, spec, job["spec"], settings)
        for want in expected + render.render_pods(ref, spec, 1, settings):
            plural = {"ServiceAccount": "serviceaccounts", "Role": "roles",
                      "RoleBinding": "rolebindings", "Service": "services",
                      "ConfigMap": "configmaps", "PersistentVolumeClaim": "persistentvolumeclaims",
                      "Pod": "pods"}[want["kind"]]
            group = "rbac.authorization.k8s.io" if want["kind"].startswith("Role") else ""
            got = next(o for o in objects(kube, plural, group)
                       if o["metadata"]["name"] == want["metadata"]["name"])
            for key in want:
                if key == "metadata":
                    for mkey in want["metadata"]:
                        assert got["metadata"][mkey] == want["metadata"][mkey], (want["kind"], mkey)
                else:
                    assert got[key] == want[key], (want["kind"], key)
        assert wait_for(phase_is(kube, "Pending"))["attempt"] == 1

        run_all(kube)
        wait_for(phase_is(kube, "Running"), what="phase Running")

        kube.kubelet.terminate(NS, naming.pod("demo", 1, 1), 0)
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 0), 0, message=summary(
            status="succeeded", globalStep=5, metrics={"eval_accuracy": 0.75, "train_loss": 0.5},
            finalModel="/output/final"))
        final = wait_for(phase_is(kube, "Succeeded"), what="phase Succeeded")
        assert final["metrics"] == {"eval_accuracy": 0.75, "train_loss": 0.5}
        assert final["completionTime"]
        assert final.get("restarts", 0) == 0
        for reason in ("Started", "Running", "Succeeded"):
            wait_event(kube, reason)


def test_retryable_failure_gang_restarts(kube, run_operator):
    with run_operator():
        create_job(kube, manifest())
        wait_for(lambda: len(pods(kube)) == 2)
        run_all(kube)
        wait_for(phase_is(kube, "Running"))
        kube.kubelet.terminate(NS, naming.pod("demo", 1, 1), 137, reason="OOMKilled")
        wait_for(lambda: pod_names(kube) == ["demo-2-0", "demo-2-1"], what="attempt 2 pods")
        st = wait_for(lambda: status(kube) if status(kube).get("attempt") == 2 else None)
        assert st["restarts"] == 1
        assert st.get("preemptions", 0) == 0
        wait_event(kube, "GangRestart")
