"""Trust boundaries in the trainer: the job file must be this pod's job's, and the output folder
must hold this job's uid (or be adopted knowingly)."""

from __future__ import annotations

import json

import pytest

from ftjob_api import contract
from ftjob_api.contract import ExitCode
from ftjob_trainer import job, local, output_owner
from ftjob_trainer.exits import JobFileReplaced, OutputOwnedByOtherJob, classify_exception
from ftjob_trainer.progress import build_checkpoint

SPEC = {"task": "causal-lm", "model": {"name": "gpt2"}, "dataset": {"name": "x"}}


def write_job(tmp_path, uid: str | None, spec=SPEC):
    meta = {"name": "foo", "namespace": "ns", **({"uid": uid} if uid else {})}
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"metadata": meta, "spec": spec}))
    return path


# --------------------------------------------------------------------------- the job file


@pytest.mark.parametrize("file_uid,env_uid,expected", [
    ("uid-a", "uid-a", "uid-a"),
    ("uid-a", None, "uid-a"),  # a local run: the file says
    (None, None, None),  # a trainer run by hand: no identity, nothing claimed
], ids=["same", "no env", "none"])
def test_job_file_of_this_job_is_read(tmp_path, file_uid, env_uid, expected):
    env = {contract.ENV_JOB_FILE: str(write_job(tmp_path, file_uid)),
           **({contract.ENV_JOB_UID: env_uid} if env_uid else {})}
    assert job.load_context(env).uid == expected


@pytest.mark.parametrize("file_uid", ["uid-old", None], ids=["other uid", "no uid"])
def test_job_file_of_another_job_is_refused_retryably(tmp_path, file_uid):
    env = {contract.ENV_JOB_FILE: str(write_job(tmp_path, file_uid)),
           contract.ENV_JOB_UID: "uid-new"}
    with pytest.raises(JobFileReplaced) as caught:
        job.load_context(env)
    failure = classify_exception(caught.value)
    assert failure.exit_code == ExitCode.JOB_FILE_REPLACED
    assert not contract.is_permanent(failure.exit_code)
    assert failure.reason == "JobFileReplaced"
    assert f"{file_uid or '(none)'}" in failure.message and "uid-new" in failure.message


def test_job_file_uid_is_checked_before_the_spec(tmp_path):
    """Another job's file is refused as such, even when its spec is one this image rejects."""
    env = {contract.ENV_JOB_FILE: str(write_job(tmp_path, "uid-old", spec={"task": "x"})),
           contract.ENV_JOB_UID: "uid-new"}
    with pytest.raises(JobFileReplaced):
        job.load_context(env)


def test_job_file_must_match_the_digest_the_pod_was_created_with(tmp_path):
    """Someone with ConfigMap rights changed the job file: the pod's FTJOB_JOB_DIGEST (set by
    the operator, in the pod spec nobody can edit) no longer matches. Retryable: the operator
    puts the ConfigMap back. The fields that take effect after the start are left out."""
    path = write_job(tmp_path, "uid-a")
    document = json.loads(path.read_text())
    env = {contract.ENV_JOB_FILE: str(path), contract.ENV_JOB_UID: "uid-a",
           contract.ENV_JOB_DIGEST: contract.job_digest(document)}
    assert job.load_context(env).uid == "uid-a"
    path.write_text(json.dumps({**document, "spec": {**SPEC, "suspend": True}}))
    assert job.load_context(env).uid == "uid-a"  # a mutable field: the same started spec
    path.write_text(json.dumps({**document, "spec": {**SPEC, "model": {"name": "other"}}}))
    with pytest.raises(JobFileReplaced, match="not the spec this pod was created for"):
        job.load_context(env)


# --------------------------------------------------------------------------- the output folder


def owner_doc(folder) -> dict:
    return json.loads((folder / contract.OUTPUT_OWNER_FILE_NAME).read_text())


def test_a_fresh_folder_is_claimed_by_rank_zero_only(tmp_path):
    out = tmp_path / "out"
    owner = output_owner.claim(out, "uid-a", "foo", adopt=False, is_zero=False)
    assert owner.uid == "uid-a" and not out.exists()  # other ranks never write it
    owner = output_owner.claim(out, "uid-a", "foo", adopt=False, is_zero=True)
    assert owner_doc(out) == {"uid": "uid-a", "name": "foo"}
    assert owner.adopted_from_job_uid is None


def test_the_same_job_resumes_from_its_own_folder(tmp_path):
    output_owner.claim(tmp_path, "uid-a", "foo", adopt=False, is_zero=True)
    assert output_owner.claim(tmp_path, "uid-a", "foo", adopt=False, is_zero=True).uid == "uid-a"
    assert owner_doc(tmp_path)["uid"] == "uid-a"


@pytest.mark.parametrize("is_zero", [True, False])
def test_another_jobs_folder_is_refused_and_left_alone(tmp_path, is_zero):
    output_owner.claim(tmp_path, "uid-old", "foo", adopt=False, is_zero=True)
    (tmp_path / "checkpoint-20").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputOwnedByOtherJob) as caught:
        output_owner.claim(tmp_path, "uid-new", "foo", adopt=False, is_zero=is_zero)
    failure = classify_exception(caught.value)
    assert failure.exit_code == ExitCode.OUTPUT_OWNED_BY_OTHER_JOB
    assert contract.is_permanent(failure.exit_code)
    assert failure.reason == "OutputOwnedByOtherJob"
    assert "uid uid-old" in failure.message and "adoptPreviousOutput" in failure.message
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert owner_doc(tmp_path)["uid"] == "uid-old"


def test_an_unreadable_owner_file_is_another_jobs(tmp_path):
    (tmp_path / contract.OUTPUT_OWNER_FILE_NAME).write_text("{not json")
    with pytest.raises(OutputOwnedByOtherJob, match="unreadable owner file"):
        output_owner.claim(tmp_path, "uid-new", "foo", adopt=False, is_zero=True)


def test_adopting_takes_the_folder_over_and_remembers_the_previous_owner(tmp_path):
    output_owner.claim(tmp_path, "uid-old", "foo", adopt=False, is_zero=True)
    other_rank = output_owner.claim(tmp_path, "uid-new", "foo", adopt=True, is_zero=False)
    assert owner_doc(tmp_path)["uid"] == "uid-old"  # only rank 0 writes
    owner = output_owner.claim(tmp_path, "uid-new", "foo", adopt=True, is_zero=True)
    assert owner.adopted_from_job_uid == other_rank.adopted_from_job_uid == "uid-old"
    assert owner_doc(tmp_path) == {"uid": "uid-new", "name": "foo",
                                   "adoptedFromJobUid": "uid-old"}
    # The next attempt of the adopting job reads its own uid and still reports the adoption.
    again = output_owner.claim(tmp_path, "uid-new", "foo", adopt=True, is_zero=True)
    assert again.adopted_from_job_uid == "uid-old"


def test_claim_output_sets_the_adoption_on_the_context(tmp_path):
    output_owner.claim(tmp_path, "uid-old", "foo", adopt=False, is_zero=True)
    spec = {**SPEC, "storage": {"adoptPreviousOutput": True}}
    (tmp_path / "etc").mkdir()
    env = {contract.ENV_JOB_FILE: str(write_job(tmp_path / "etc", "uid-new", spec)),
           contract.ENV_JOB_UID: "uid-new", contract.ENV_OUTPUT_DIR: str(tmp_path)}
    ctx = output_owner.claim_output(job.load_context(env), is_zero=True)
    assert ctx.adopted_from_job_uid == "uid-old"
    assert build_checkpoint(None, 0, ctx.adopted_from_job_uid) == {
        "resumedFromStep": 0, "adoptedFromJobUid": "uid-old"}
    assert "adoptedFromJobUid" not in build_checkpoint(None, 0)


def test_a_context_without_uid_claims_nothing(tmp_path):
    env = {contract.ENV_JOB_FILE: str(write_job(tmp_path, None)),
           contract.ENV_OUTPUT_DIR: str(tmp_path / "out")}
    ctx = job.load_context(env)
    assert output_owner.claim_output(ctx, is_zero=True) is ctx
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- ftjob run --local


def test_local_identity_is_the_manifest_and_the_name(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert local.local_uid(str(a), "foo") == local.local_uid(str(a), "foo")
    assert local.local_uid(str(a), "foo") != local.local_uid(str(b), "foo")
    assert local.local_uid(str(a), "foo") != local.local_uid(str(a), "bar")


def test_local_run_into_another_runs_folder_fails_before_writing(tmp_path, capsys):
    out = tmp_path / "out"
    output_owner.claim(out, local.local_uid(str(tmp_path / "a.yaml"), "foo"), "foo",
                       adopt=False, is_zero=True)
    mine = local.local_uid(str(tmp_path / "b.yaml"), "foo")
    assert local._foreign_output(out, mine, "foo", SPEC) == ExitCode.OUTPUT_OWNED_BY_OTHER_JOB
    assert "failed: OutputOwnedByOtherJob (exit 13)" in capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == [contract.OUTPUT_OWNER_FILE_NAME]
    adopting = {**SPEC, "storage": {"adoptPreviousOutput": True}}
    assert local._foreign_output(out, mine, "foo", adopting) is None
