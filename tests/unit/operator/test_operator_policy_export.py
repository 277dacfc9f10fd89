"""policies/export.py: spec.output's export step after training succeeded: one export pod
per try, its result as status.output and the Exported condition, retries with backoff, and
what a finished export means for ttlSecondsAfterFinished and cleanPodPolicy."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from typing import Any

import pytest
from ftjob_api import api, naming
from ftjob_api.contract import rfc3339

from ftjob_operator.observe import (Observed, PodView, Refusal, export_result, observe,
                                    pod_view)
from ftjob_operator.plan import CreatePods, DeleteJob, DeletePods
from ftjob_operator.policies import export
from ftjob_operator.reconcile import decide
from tests.unit.operator.decide_helpers import (EARLIER, NOW, SPEC, Case, check, job, pod,
                                                running_attempt)

OCI = {"oci": {"repository": "registry.example.com/team/demo",
               "pushSecretRef": {"name": "push-creds"}}}
COMPLETED = rfc3339(NOW - timedelta(seconds=100))
REFERENCE = "registry.example.com/team/demo:demo"
DIGEST = "sha256:" + "ab" * 32
PUSHED = {"phase": "Pushed", "reference": REFERENCE, "digest": DIGEST, "size": 1234,
          "gate": {"metric": "eval_accuracy", "value": 0.93, "bound": 0.9, "comparison": "min",
                   "passed": True},
          "pushedAt": rfc3339(NOW - timedelta(seconds=2)), "message": "pushed 3 of 3 blobs"}
WITHHELD = {"phase": "Withheld",
            "gate": {"metric": "eval_accuracy", "value": 0.71, "bound": 0.9,
                     "comparison": "min", "passed": False},
            "message": "eval_accuracy 0.71 < 0.9: not pushed"}
UNREACHABLE = json.dumps({"message": "registry.example.com: connection refused"})
RETRY_1 = ("try 1 of 5 failed: export pod demo-export-1 failed: ExportRetryable, exit code 23: "
           "registry.example.com: connection refused; next try in 10s")


def spec(output: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"output": copy.deepcopy(OCI if output is None else output), **extra}


def succeeded(output: dict[str, Any] | None = None, exported: dict[str, Any] | None = None,
              **extra: Any) -> dict[str, Any]:
    """A job whose training succeeded (what finish.success wrote), with status.output and
    the Exported condition as given."""
    status: dict[str, Any] = {
        "phase": "Succeeded", "attempt": 1, "startTime": EARLIER, "completionTime": COMPLETED,
        "observedGeneration": 1, "message": "training finished at step 5",
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed",
                        "message": "training finished at step 5",
                        "lastTransitionTime": COMPLETED, "observedGeneration": 1}]}
    if output is not None:
        status["output"] = output
    if exported is not None:
        status["conditions"].append({"lastTransitionTime": rfc3339(NOW - timedelta(seconds=5)),
                                     "observedGeneration": 1, **exported})
    status.update(extra)
    return status


def pushing(attempts: int = 1, message: str | None = None) -> dict[str, Any]:
    text = message or f"export pod demo-export-{attempts} created (try {attempts} of 5)"
    return {"phase": "Pushing", "attempts": attempts, "message": text}


def xpod(try_: int, phase: str = "Running", ended: float | None = None,
         message: dict[str, Any] | str | None = None, **kw: Any) -> PodView:
    """The export pod of a try; `ended`: seconds ago its container terminated."""
    if isinstance(message, dict):
        message = json.dumps(message)
    return PodView(name=naming.export_pod("demo", try_), job="demo", attempt=try_, rank=0,
                   owner_uid=kw.pop("owner_uid", "uid-1"), phase=phase, role="export",
                   created_at=NOW - timedelta(seconds=kw.pop("age", 60)),
                   finished_at=NOW - timedelta(seconds=ended) if ended is not None else None,
                   termination_message=message, **kw)


def condition(status: bool, reason: str, message: str) -> dict[str, Any]:
    return {"type": "Exported", "status": "True" if status else "False", "reason": reason,
            "message": message}


PUSHED_TEXT = (f"pushed {REFERENCE} ({DIGEST}); quality gate met: eval_accuracy 0.93 >= 0.9")
GATE_TEXT = ("quality gate not met: eval_accuracy 0.71 is below the minimum 0.9; the model "
             "was not delivered")
PUSHED_CONDITION = condition(True, "Pushed", PUSHED_TEXT)


CASES: dict[str, Case] = {
    "no spec.output -> a finished job, nothing to export":
        Case(job(succeeded()), case="finished"),
    "failed training -> nothing to export":
        Case(job(succeeded(phase="Failed"), **spec()), case="finished"),
    "succeeded, no export pod -> try 1":
        Case(job(succeeded(), **spec()), case="export, start", actions=[CreatePods],
             created=["demo-export-1"], status={"output": pushing(1)}, writes={"output"},
             events=["ExportStarted"]),
    "no oci, a merge -> phase Merging while it runs":
        Case(job(succeeded(), **spec({"mergeAdapter": True}), peft={"r": 8}),
             case="export, start", actions=[CreatePods], created=["demo-export-1"],
             status={"output": {**pushing(1), "phase": "Merging"}}, writes={"output"},
             events=["ExportStarted"]),
    "export pod running -> wait":
        Case(job(succeeded(pushing(1)), **spec()), exports=[xpod(1)], case="exporting"),
    "export pod Pending -> wait, until pendingTimeoutSeconds":
        Case(job(succeeded(pushing(1)), **spec()), exports=[xpod(1, "Pending")],
             case="exporting", requeue=1740.0),
    "export pod Pending too long -> ExportFailed, the pod deleted":
        Case(job(succeeded(pushing(1)), **spec()),
             exports=[xpod(1, "Pending", age=1801, pod_message="0/3 nodes are available")],
             case="export failed", actions=[DeletePods], writes={"output", "conditions"},
             status={"output": {"phase": "Failed", "attempts": 1, "message": (
                 "export pod demo-export-1 stayed Pending longer than pendingTimeoutSeconds "
                 "(1800s): 0/3 nodes are available")}},
             events=["ExportFailed"]),
    "pushed -> status.output as the pod says, Exported True, one Event":
        Case(job(succeeded(pushing(1)), **spec()),
             exports=[xpod(1, "Succeeded", ended=1, message=PUSHED, exit_code=0)],
             case="exported", status={"output": {**PUSHED, "attempts": 1}},
             writes={"output", "conditions"}, events=["Exported"]),
    "pushed, decided again -> nothing more":
        Case(job(succeeded({**PUSHED, "attempts": 1}, PUSHED_CONDITION), **spec()),
             exports=[xpod(1, "Succeeded", ended=1, message=PUSHED, exit_code=0)],
             case="finished"),
    "ready without oci -> Exported True, reason Delivered":
        Case(job(succeeded({**pushing(1), "phase": "Merging"}),
                 **spec({"mergeAdapter": True}), peft={"r": 8}),
             exports=[xpod(1, "Succeeded", ended=1, exit_code=0,
                           message={"phase": "Ready", "message": "model in /output/merged"})],
             case="exported", writes={"output", "conditions"}, events=["Exported"],
             status={"output": {"phase": "Ready", "attempts": 1,
                                "message": "model in /output/merged"}}),
    "withheld -> Exported False, QualityGateNotMet":
        Case(job(succeeded(pushing(1)), **spec()),
             exports=[xpod(1, "Succeeded", ended=1, message=WITHHELD, exit_code=0)],
             case="export withheld", status={"output": {**WITHHELD, "attempts": 1}},
             writes={"output", "conditions"}, events=["QualityGateNotMet"]),
    "exit 23 -> ExportRetrying, try 2 after 10s":
        Case(job(succeeded(pushing(1)), **spec()),
             exports=[xpod(1, "Failed", ended=3, exit_code=23, message=UNREACHABLE)],
             case="export, backing off", requeue=8.0, writes={"output"},
             status={"output": {**pushing(1), "message": RETRY_1}}, events=["ExportRetrying"]),
    "backing off, already said -> nothing new":
        Case(job(succeeded(pushing(1, RETRY_1)), **spec()),
             exports=[xpod(1, "Failed", ended=6, exit_code=23, message=UNREACHABLE)],
             case="export, backing off", requeue=5.0),
    "backoff over -> try 2":
        Case(job(succeeded(pushing(1, RETRY_1)), **spec()),
             exports=[xpod(1, "Failed", ended=11, exit_code=23, message=UNREACHABLE)],
             case="export, retry", actions=[CreatePods], created=["demo-export-2"],
             writes={"output"}, events=["ExportStarted"],
             status={"output": pushing(2, (
                 "export pod demo-export-2 created (try 2 of 5); try 1 failed: export pod "
                 "demo-export-1 failed: ExportRetryable, exit code 23: registry.example.com: "
                 "connection refused"))}),
    "backoff over while the operator was away -> both Events, try 2":
        Case(job(succeeded(pushing(1)), **spec()),
             exports=[xpod(1, "Failed", ended=60, exit_code=23, message=UNREACHABLE)],
             case="export, retry", actions=[CreatePods], created=["demo-export-2"],
             writes={"output"}, events=["ExportRetrying", "ExportStarted"]),
    "the third failure waits 40s":
        Case(job(succeeded(pushing(3)), **spec()),
             exports=[xpod(t, "Failed", ended=1, exit_code=23) for t in (1, 2, 3)],
             case="export, backing off", requeue=40.0, writes={"output"},
             events=["ExportRetrying"]),
    "exit 0 without a result -> retried like a failure":
        Case(job(succeeded(pushing(1)), **spec()),
             exports=[xpod(1, "Succeeded", ended=1, exit_code=0, message="done")],
             case="export, backing off", requeue=10.0, writes={"output"},
             events=["ExportRetrying"]),
    "evicted -> retried":
        Case(job(succeeded(pushing(1)), **spec()),
             exports=[xpod(1, "Failed", ended=1, pod_reason="Evicted", pod_message="disk")],
             case="export, backing off", requeue=10.0, writes={"output"},
             events=["ExportRetrying"]),
    "exit 14 -> ExportFailed at once":
        Case(job(succeeded(pushing(1)), **spec()),
             exports=[xpod(1, "Failed", ended=1, exit_code=14,
                           message={"message": "registry refused the credentials: 401"})],
             case="export failed", writes={"output", "conditions"}, events=["ExportFailed"],
             status={"output": {"phase": "Failed", "attempts": 1, "message": (
                 "export pod demo-export-1 failed: ExportRefused, exit code 14: registry "
                 "refused the credentials: 401")}}),
    "try 5 failed -> ExportFailed, tries spent":
        Case(job(succeeded(pushing(5)), **spec()),
             exports=[xpod(t, "Failed", ended=1, exit_code=23, message=UNREACHABLE)
                      for t in range(1, 6)],
             case="export failed", writes={"output", "conditions"}, events=["ExportFailed"]),
    "the status counts a try whose pod is not there -> created again, quietly":
        Case(job(succeeded(pushing(1)), **spec()), case="export, start", actions=[CreatePods],
             created=["demo-export-1"]),
    "its create refused for too long -> ExportFailed":
        Case(job(succeeded(pushing(1)), **spec()),
             refusal=Refusal(NOW - timedelta(seconds=1801), "exceeded quota: pods"),
             case="export failed", writes={"output", "conditions"}, events=["ExportFailed"]),
    "its create refused for a while -> created again":
        Case(job(succeeded(pushing(1)), **spec()),
             refusal=Refusal(NOW - timedelta(seconds=60), "exceeded quota: pods"),
             case="export, start", actions=[CreatePods], created=["demo-export-1"],
             requeue=1740.0),
    "a pod newer than the status (written, then lost) is adopted":
        Case(job(succeeded(), **spec()), exports=[xpod(1)], case="exporting",
             writes={"output"}, status={"output": {"phase": "Pushing", "attempts": 1}}),
    "another job's export pod of the same name is not this job's":
        Case(job(succeeded(), **spec()), exports=[xpod(1, owner_uid="uid-0")],
             case="export, start", actions=[CreatePods], created=["demo-export-1"],
             writes={"output"}, events=["ExportStarted"]),
    # cleanPodPolicy: the export pods once the export finished (the ranks went at success)
    "finished with cleanPodPolicy All -> every export pod deleted":
        Case(job(succeeded(pushing(2)), **spec(), cleanPodPolicy="All"),
             exports=[xpod(1, "Failed", ended=30, exit_code=23),
                      xpod(2, "Succeeded", ended=1, message=PUSHED, exit_code=0)],
             case="exported", actions=[DeletePods], writes={"output", "conditions"},
             events=["Exported"]),
    "finished with cleanPodPolicy Running -> the finished pods stay":
        Case(job(succeeded(pushing(2)), **spec()),
             exports=[xpod(1, "Failed", ended=30, exit_code=23),
                      xpod(2, "Succeeded", ended=1, message=PUSHED, exit_code=0)],
             case="exported", writes={"output", "conditions"}, events=["Exported"]),
    # ttlSecondsAfterFinished: not before the export finished, then counted from it
    "TTL over since training, the export still running -> the job stays":
        Case(job(succeeded(pushing(1)), **spec(), ttlSecondsAfterFinished=10),
             exports=[xpod(1)], case="exporting"),
    "TTL counts from when the export finished":
        Case(job(succeeded({**PUSHED, "attempts": 1}, PUSHED_CONDITION), **spec(),
                 ttlSecondsAfterFinished=10),
             exports=[xpod(1, "Succeeded", ended=6, exit_code=0)], case="finished",
             requeue=5.0),
    "TTL over since the export finished -> the job deleted":
        Case(job(succeeded({**PUSHED, "attempts": 1}, PUSHED_CONDITION), **spec(),
                 ttlSecondsAfterFinished=4),
             exports=[xpod(1, "Succeeded", ended=6, exit_code=0)],
             case="finished, ttl expired", actions=[DeleteJob], events=["Deleted"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    check(CASES[name])


def _decide(status: dict[str, Any], exports: list[PodView], **job_spec: Any):
    return decide(job(status, **{**spec(), **job_spec}), Observed(exports=tuple(exports)), NOW)


def test_conditions_say_what_was_delivered_or_withheld():
    pushed = _decide(succeeded(pushing(1)), [xpod(1, "Succeeded", 1, PUSHED, exit_code=0)])
    (cond,) = [c for c in pushed.status["conditions"] if c["type"] == "Exported"]
    assert {k: cond[k] for k in ("status", "reason", "message")} == {
        "status": "True", "reason": "Pushed", "message": PUSHED_TEXT}
    assert pushed.events[0].message == PUSHED_TEXT and pushed.events[0].type == "Normal"
    withheld = _decide(succeeded(pushing(1)), [xpod(1, "Succeeded", 1, WITHHELD, exit_code=0)])
    (cond,) = [c for c in withheld.status["conditions"] if c["type"] == "Exported"]
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "False", "QualityGateNotMet", GATE_TEXT)
    assert withheld.events[0].type == "Warning" and withheld.events[0].message == GATE_TEXT
    # The job stays Succeeded: training did.
    assert "phase" not in withheld.status and "completionTime" not in withheld.status


def test_retrying_says_the_pods_message_and_failing_says_why():
    retry = _decide(succeeded(pushing(1)),
                    [xpod(1, "Failed", ended=1, exit_code=23, message=UNREACHABLE)])
    assert retry.events[0].reason == "ExportRetrying" and retry.events[0].message == RETRY_1
    spent = _decide(succeeded(pushing(5)),
                    [xpod(t, "Failed", ended=1, exit_code=23, message=UNREACHABLE)
                     for t in range(1, 6)])
    (cond,) = [c for c in spent.status["conditions"] if c["type"] == "Exported"]
    assert (cond["status"], cond["reason"]) == ("False", "ExportFailed")
    assert cond["message"].startswith("gave up after 5 tries; the last: export pod "
                                      "demo-export-5 failed: ExportRetryable, exit code 23")
    assert spent.status["output"]["message"] == cond["message"]


def test_the_retry_delays_double_from_10s():
    assert [export.retry_delay(t) for t in range(1, export.MAX_TRIES)] == [10, 20, 40, 80]


@pytest.mark.parametrize("output, phase", [
    (OCI, "Pushing"), ({"mergeAdapter": True, **OCI}, "Pushing"),
    ({"mergeAdapter": True}, "Merging"), ({"gate": {"metric": "accuracy", "min": 0.5}}, "Pending"),
])
def test_the_phase_while_a_try_runs(output, phase):
    assert export.in_flight_phase(api.OutputSpec.model_validate(output)).value == phase


def test_each_status_patch_of_the_export_validates_and_round_trips():
    patches = [
        _decide(succeeded(), []).status,
        _decide(succeeded(pushing(1)), [xpod(1, "Failed", 1, UNREACHABLE, exit_code=23)]).status,
        _decide(succeeded(pushing(1)), [xpod(1, "Succeeded", 1, PUSHED, exit_code=0)]).status,
    ]
    for patch in patches:
        assert patch
        assert api.to_patch(api.FineTuneJobStatus.model_validate(patch)) == patch


def test_the_export_pod_carries_the_jobs_output_settings():
    plan = _decide(succeeded(), [], output={"oci": {**OCI["oci"], "caConfigMapRef": {
        "name": "registry-ca"}}})
    (create,) = plan.actions
    (manifest,) = create.pods
    env = {e["name"]: e.get("value") for e in manifest["spec"]["containers"][0]["env"]}
    assert env["FTJOB_PUSH_CONFIG"] == "/etc/ftjob-push/.dockerconfigjson"
    assert env["FTJOB_REGISTRY_CA"] == "/etc/ftjob-registry-ca/ca.crt"
    assert env["FTJOB_JOB_DIGEST"].startswith("sha256:")
    resources = manifest["spec"]["containers"][0].get("resources", {})
    assert "nvidia.com/gpu" not in json.dumps(resources)
    assert not env["FTJOB_GOODPUT"]  # none recorded: set, empty


def test_the_export_pod_carries_the_goodput_training_ended_with_for_the_model_card():
    goodput = {"productiveSeconds": 90.0, "wallSeconds": 120.0, "ratio": 0.75, "stepsLost": 3}
    (create,) = _decide(succeeded(goodput=goodput), [], output=OCI).actions
    env = {e["name"]: e.get("value") for e in create.pods[0]["spec"]["containers"][0]["env"]}
    assert json.loads(env["FTJOB_GOODPUT"]) == goodput


# --------------------------------------------------------------------------- the export pod is no rank


def _export_body(try_: int = 1, phase: str = "Failed", exit_code: int = 23) -> dict[str, Any]:
    return {"metadata": {"name": naming.export_pod("demo", try_), "namespace": "ns",
                         "labels": naming.export_pod_labels("demo", try_),
                         "ownerReferences": [{"uid": "uid-1", "controller": True}],
                         "creationTimestamp": "2026-01-01T11:59:00Z"},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "trainer", "state": {"terminated": {
                    "exitCode": exit_code, "message": UNREACHABLE,
                    "finishedAt": "2026-01-01T11:59:30Z"}}}]}}


def test_an_export_pod_is_read_as_one_and_never_among_the_ranks():
    view = pod_view(_export_body(3))
    assert view is not None and view.role == "export" and view.attempt == 3 and view.rank == 0
    assert view.exit_code == 23 and view.finished_at == NOW - timedelta(seconds=30)
    rank = pod_view({"metadata": {"name": "demo-1-0", "labels": naming.pod_labels("demo", 1, 0)}})
    assert rank is not None and rank.role == "rank"
    odd = {"metadata": {"name": "x", "labels": {**naming.common_labels("demo"),
                                                 naming.LABEL_ROLE: "sidecar"}}}
    assert pod_view(odd) is None
    index = {("ns", "demo"): (rank, view)}
    seen = observe(job(), index, {})
    assert seen.pods == (rank,) and seen.exports == (view,)


def test_a_failed_export_pod_never_restarts_a_running_gang():
    """An export pod of the job beside a running attempt (say, made by hand): not a rank,
    so no restart, no deletion, no success."""
    pods = (pod(0), pod(1))
    plan = decide(job(running_attempt(), **spec()),
                  Observed(pods=pods, started_spec=copy.deepcopy({**SPEC, **spec()}),
                           exports=(xpod(1, "Failed", ended=1, exit_code=23),)), NOW)
    assert plan.case == "running" and plan.actions == [] and plan.events == []


def test_export_results_keep_only_what_the_status_can_hold():
    def result(message: Any) -> dict[str, Any]:
        view = xpod(1, "Succeeded", ended=1, exit_code=0,
                    message=message if isinstance(message, str) else json.dumps(message))
        return api.to_patch(export_result(view))

    assert result(PUSHED) == PUSHED
    assert result("not json") == {}
    assert result({**PUSHED, "attempts": 9, "extra": 1}) == PUSHED  # the operator counts
    assert result({"phase": "Done", "size": 2 ** 70, "message": 5}) == {}
    nan = '{"phase": "Withheld", "gate": {"metric": "m", "value": NaN, "bound": 1, ' \
          '"comparison": "min", "passed": false}}'
    assert result(nan) == {"phase": "Withheld"}
    assert len(result({"message": "x" * 5000})["message"]) == 1024
