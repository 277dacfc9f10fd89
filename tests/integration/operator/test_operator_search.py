"""A hyperparameter search on the real API server: the CRD keeps the search spec as written
(mixed-type choices included) and fills in the model's defaults, the trainer's status.search patch is stored as sent, and
`kubectl get` shows the trials."""

from __future__ import annotations

from pathlib import Path

import pytest
from ftjob_api import api
from ftjob_api.manifest_reader import read_manifest
from ftjob_trainer.progress_reporters import KubernetesReporter

from tests.controlplane.install import kubectl
from tests.integration.operator.helpers import Real

pytestmark = pytest.mark.cluster

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "search-local.yaml"


def test_search_spec_and_status_round_trip_through_the_api_server(cluster):
    real = Real(cluster)
    body = read_manifest(str(EXAMPLE))[0].body
    created = real.create_job(body)
    name = body["metadata"]["name"]
    # Stored as written, with the same defaults filled in as the API model's (pruner, log).
    stored, written = (api.HyperparameterSearch.model_validate(doc["spec"]["hyperparameterSearch"])
                       for doc in (created, body))
    assert stored == written
    assert created["spec"]["hyperparameterSearch"]["pruner"] == "none"
    assert created["spec"]["hyperparameterSearch"]["space"]["warmup_steps"]["choices"] == [0, 0.1]

    reporter = KubernetesReporter(name, cluster.ns, api_client=cluster.session.api_client)
    first = {"trials": "1/4", "trialsCompleted": 1, "trialsTotal": 4, "bestTrial": 0,
             "bestValue": 0.91, "bestParams": {"learning_rate": 4.1e-05, "warmup_steps": 0}}
    reporter.report_search(first)
    assert real.get_job(name)["status"]["search"] == first
    later = {**first, "trials": "2/4", "trialsCompleted": 2, "bestTrial": 1, "bestValue": 0.95,
             "bestParams": {"learning_rate": 6.2e-05, "warmup_steps": 0.1}}
    reporter.report_search(later)
    assert real.get_job(name)["status"]["search"] == later  # the merge replaced bestParams
    listed = kubectl(cluster.plane, "get", "finetunejobs", "-n", cluster.ns)
    header, row = listed.stdout.splitlines()[:2]
    assert "TRIALS" in header.split() and "2/4" in row.split()
