"""The real operator on the real control plane: create, run, succeed, restart, and the gang
restart that waits for every old pod to be gone."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ftjob_api import contract, naming
from ftjob_api.api import parse_spec
from ftjob_operator import render
from ftjob_operator.settings import Settings

from tests.conftest import TRAINER_IMAGE
from tests.integration.operator.helpers import (TIMEOUT, PodCreations, Real, bring_up,
                                                describe, objects, phase_is, pod_names, pods,
                                                run_all, status, summary, wait_event, manifest)
from tests.polling import never, wait_for

pytestmark = pytest.mark.cluster

PLURALS = {"ServiceAccount": ("serviceaccounts", ""), "Role": ("roles", "rbac.authorization.k8s.io"),
           "RoleBinding": ("rolebindings", "rbac.authorization.k8s.io"),
           "Service": ("services", ""), "ConfigMap": ("configmaps", ""),
           "PersistentVolumeClaim": ("persistentvolumeclaims", ""), "Pod": ("pods", "")}


@pytest.fixture
def h(cluster) -> Real:
    return Real(cluster)


def stored_as_rendered(got: Any, want: Any, where: str = "") -> list[str]:
    """Where the stored object differs from what the operator rendered. The API server adds
    defaults (dnsPolicy, schedulerName, clusterIPs, volumeMode, ...) and the ServiceAccount
    admission plugin adds the token volume and its mount: extra keys and extra list items
    are fine; every rendered value must be stored unchanged and in order."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{where}: {got!r} is not a mapping"]
        return [d for key, value in want.items()
                for d in (stored_as_rendered(got[key], value, f"{where}.{key}") if key in got
                          else [f"{where}.{key}: missing"])]
    if isinstance(want, list):
        if not isinstance(got, list):
            return [f"{where}: {got!r} is not a list"]
        remaining = list(got)
        for i, item in enumerate(want):
            match = next((j for j, candidate in enumerate(remaining)
                          if not stored_as_rendered(candidate, item)), None)
            if match is None:
                return [f"{where}[{i}]: {item!r} not stored (stored: {got!r})"]
            remaining = remaining[match + 1:]
        return []
    return [] if got == want else [f"{where}: stored {got!r}, rendered {want!r}"]


def test_create_run_succeed(h, run_operator):
    with run_operator():
        job = h.create_job(manifest())
        wait_for(lambda: len(pods(h)) == 2, TIMEOUT, what="two pods",
                 describe=lambda: describe(h))
        # Children are what render.py builds for this job, stored without changes.
        ref = render.JobRef("demo", h.ns, job["metadata"]["uid"])
        spec = parse_spec(job["spec"])
        settings = Settings(trainer_image=TRAINER_IMAGE, resync_seconds=2)
        expected = render.render_job_objects(ref, spec, job["spec"], settings)
        digest = contract.job_digest(json.loads(render.job_file(ref, job["spec"])))
        for want in expected + render.render_pods(ref, spec, 1, settings, digest):
            plural, group = PLURALS[want["kind"]]
            got = next(o for o in objects(h, plural, group)
                       if o["metadata"]["name"] == want["metadata"]["name"])
            # Items of a list carry no apiVersion/kind on a real server.
            rendered = {k: v for k, v in want.items() if k not in ("apiVersion", "kind")}
            assert stored_as_rendered(got, rendered) == [], want["kind"]
        assert wait_for(phase_is(h, "Pending"), TIMEOUT)["attempt"] == 1

        run_all(h)
        wait_for(phase_is(h, "Running"), TIMEOUT, what="phase Running")

        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 1), 0)
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 0), 0, message=summary(
            status="succeeded", globalStep=5, metrics={"eval_accuracy": 0.75, "train_loss": 0.5},
            finalModel="/output/final"))
        final = wait_for(phase_is(h, "Succeeded"), TIMEOUT, what="phase Succeeded")
        assert final["metrics"] == {"eval_accuracy": 0.75, "train_loss": 0.5}
        assert final["completionTime"]
        assert final.get("restarts", 0) == 0
        for reason in ("Started", "Running", "Succeeded"):
            wait_event(h, reason)


def test_retryable_failure_gang_restarts(h, run_operator):
    with run_operator():
        h.create_job(manifest())
        bring_up(h)
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 1), 137, reason="OOMKilled")
        wait_for(lambda: pod_names(h) == ["demo-2-0", "demo-2-1"], TIMEOUT,
                 what="attempt 2 pods", describe=lambda: describe(h))
        st = wait_for(lambda: (s := status(h)).get("attempt") == 2 and s, TIMEOUT)
        assert st["restarts"] == 1
        assert st.get("preemptions", 0) == 0
        wait_event(h, "GangRestart")


def test_next_attempt_waits_until_every_old_pod_is_gone(h, run_operator):
    """Gang restart: terminating pods still hold the rendezvous names and the GPUs. The
    kubelet keeps both deleted pods (a slow graceful shutdown) until the test removes them."""
    created = PodCreations(h)
    try:
        with run_operator():
            h.create_job(manifest())
            bring_up(h)
            for rank in (0, 1):
                h.kubelet.hold(h.ns, naming.pod("demo", 1, rank))
            h.kubelet.terminate(h.ns, naming.pod("demo", 1, 1), 1)
            wait_for(lambda: all(p["metadata"].get("deletionTimestamp") for p in pods(h)),
                     TIMEOUT, what="attempt 1 pods terminating", describe=lambda: describe(h))
            # The surviving rank checkpoints and exits; every event is a chance to act early.
            h.kubelet.terminate(h.ns, naming.pod("demo", 1, 0), contract.ExitCode.PREEMPTED)
            h.kubelet.remove(h.ns, naming.pod("demo", 1, 1))
            never(lambda: pods(h, attempt=2), seconds=3.0,
                  what="attempt 2 before rank 0 is gone")
            h.kubelet.remove(h.ns, naming.pod("demo", 1, 0))
            bring_up(h, attempt=2)
        # The watch thread sees the API's changes in order, some time after them (bring_up
        # listed the new pods; the watch may not have shown them yet): wait for all three.
        wait_for(lambda: "demo-1-0" in created.deleted_at
                 and all(n in created.created_at for n in ("demo-2-0", "demo-2-1")),
                 TIMEOUT, what="the pod watch to see rank 0 gone and attempt 2 created",
                 describe=lambda: f"created {created.created_at}, deleted {created.deleted_at}")
        assert min(created.created_at["demo-2-0"],
                   created.created_at["demo-2-1"]) > created.deleted_at["demo-1-0"]
        assert status(h)["restarts"] == 1 and status(h).get("preemptions", 0) == 0
    finally:
        created.stop()
