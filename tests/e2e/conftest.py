"""e2e fixtures: the cluster the scenarios run on.

`make e2e` (tests/e2e/run-kind.sh) brings up the kind cluster of `make kind-up` and points
KUBECONFIG at it; any cluster with the operator installed the same way works.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def backend():
    from . import jobs
    from .backends import ClusterBackend, wait_admission, wait_ready

    chosen = ClusterBackend()
    try:
        wait_ready(chosen)
        wait_admission(chosen, jobs.misspelt_job("e2e-admission-probe"))
        yield chosen
    finally:
        chosen.close()
