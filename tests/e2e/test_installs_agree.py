"""The chart install of `make e2e` (run-kind.sh) and the scenarios agree on the namespace
the admission webhook leaves alone, so the scenario about unchecked jobs means what it says."""

from __future__ import annotations

import json
import re

from .backends import REPO, UNCHECKED_NAMESPACE, WEBHOOK_NAMESPACE_SELECTOR


def test_run_kind_leaves_the_same_namespace_to_the_operator_alone():
    script = (REPO / "tests" / "e2e" / "run-kind.sh").read_text()
    [selector] = re.findall(r"webhook\.namespaceSelector=(\{.*\})'", script)
    assert json.loads(selector) == WEBHOOK_NAMESPACE_SELECTOR
    assert UNCHECKED_NAMESPACE in WEBHOOK_NAMESPACE_SELECTOR["matchExpressions"][0]["values"]
    assert "--set webhook.failurePolicy=Fail" in script
