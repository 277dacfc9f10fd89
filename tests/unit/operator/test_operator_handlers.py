"""The job loop's choice of which copy of a job to decide on (handlers._older): kopf's, unless
it predates the loop's own last status write (kopf's watch lagging after an API outage); what
it keeps of that write (handlers._as_decided); kopf's settings."""

import kopf

from ftjob_operator import handlers
from ftjob_operator.handlers import _as_decided, _older
from ftjob_operator.plan import JobState
from ftjob_operator.settings import Settings


def job(rv: str) -> dict:
    return {"metadata": {"resourceVersion": rv}, "status": {}}


def test_kopfs_copy_older_than_the_loops_own_write_is_not_decided_on():
    assert _older(job("41"), job("57"))


def test_kopfs_copy_as_new_or_newer_is_decided_on():
    assert not _older(job("57"), job("57"))
    assert not _older(job("60"), job("57"))  # e.g. rank 0's progress written since


def test_versions_that_are_not_numbers_leave_kopfs_copy_in_charge():
    assert not _older(job("a1"), job("b2"))
    assert not _older(job("41"), {"metadata": {}})


def test_the_kept_write_holds_what_a_decision_reads_and_not_the_rest():
    written = {"apiVersion": "finetune.dev/v1alpha1", "kind": "FineTuneJob",
               "metadata": {"name": "demo", "namespace": "ns", "uid": "u1", "generation": 3,
                            "resourceVersion": "57", "deletionTimestamp": "2026-01-01T00:00:00Z",
                            "managedFields": [{"manager": "ftjob-operator"}] * 50,
                            "annotations": {"kubectl.kubernetes.io/last-applied": "x" * 4096}},
               "spec": {"task": "text-classification"}, "status": {"phase": "Running"}}
    kept = _as_decided(written)
    assert JobState.from_body(kept) == JobState.from_body(written)
    assert kept["metadata"] == {"name": "demo", "namespace": "ns", "uid": "u1", "generation": 3,
                                "resourceVersion": "57",
                                "deletionTimestamp": "2026-01-01T00:00:00Z"}
    assert not _older(job("57"), kept) and _older(job("41"), kept)


def test_kopf_keeps_no_diff_base_because_no_handler_reads_one():
    settings = kopf.OperatorSettings()
    handlers.configure_kopf(settings, Settings())
    assert isinstance(settings.persistence.diffbase_storage, handlers.NoDiffBase)
    # Only on.create/update/delete/resume/field handlers read kopf's diff base: none may be
    # registered while it keeps none (kopf's registry of "changing" handlers).
    registry = kopf.get_default_registry()
    assert not list(registry._changing.get_all_handlers())
