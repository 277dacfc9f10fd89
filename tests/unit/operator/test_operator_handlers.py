"""The job loop's choice of which copy of a job to decide on (handlers._older): kopf's, unless
it predates the loop's own last status write (kopf's watch lagging after an API outage)."""

from ftjob_operator.handlers import _older


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
