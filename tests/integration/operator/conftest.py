"""`run_operator` for the operator tests: the operator in the mode the session's RBAC was
rendered for.

The session installs the chart's RBAC with its default values (`watchNamespaces: []`: one
ClusterRole for every namespace), which grants no `list namespaces`: that rule comes only with
a namespace list. An operator started with `--namespace=<ns>` under it asks kopf to list
namespaces anyway, gets 403, and kopf retries with its error backoffs (1+1+2+...+21 = 54 s)
before it falls back to assuming the namespace exists and starts watching: almost a minute of
nothing per start. So here the operator runs as the chart's default install runs it, for
every namespace, and starts only once no other test's FineTuneJob is left to handle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ftjob_operator import api

from tests.conftest import TRAINER_IMAGE
from tests.polling import wait_for


def foreign_jobs(cluster: Any) -> list[str]:
    """FineTuneJobs outside this test's namespace (an earlier test's, its namespace being
    deleted), which an operator watching every namespace would handle too."""
    items = cluster.custom.list_cluster_custom_object(api.GROUP, api.VERSION, api.PLURAL)
    return [f"{j['metadata']['namespace']}/{j['metadata']['name']}" for j in items["items"]
            if j["metadata"]["namespace"] != cluster.ns]


@pytest.fixture
def run_operator(cluster, monkeypatch) -> Callable[..., contextlib.AbstractContextManager]:
    """Context manager factory: the real operator (kopf) in a thread, authenticated as the
    chart's ServiceAccount (a rule missing from the chart's RBAC fails the test), watching
    every namespace."""
    from kopf.testing import KopfRunner

    monkeypatch.setenv("KUBECONFIG", str(cluster.session.operator_kubeconfig))
    monkeypatch.setenv("FTJOB_RESYNC_SECONDS", "2")
    monkeypatch.setenv("FTJOB_TRAINER_IMAGE", TRAINER_IMAGE)

    @contextlib.contextmanager
    def start(**env: str) -> Iterator[KopfRunner]:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        wait_for(lambda: not foreign_jobs(cluster), 120, what="no FineTuneJob elsewhere",
                 describe=lambda: str(foreign_jobs(cluster)))
        args = ["run", "--standalone", "--all-namespaces", "-m", "ftjob_operator.handlers"]
        with KopfRunner(args, timeout=60) as runner:
            yield runner
        assert runner.exception is None, runner.output

    return start
