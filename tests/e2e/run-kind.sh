#!/usr/bin/env bash
# `make e2e`: the e2e scenarios on the kind cluster of `make kind-up` (scripts/kind-up.sh:
# three nodes with a real kubelet, containerd, flannel pod network and CoreDNS, built here
# from source; the chart installed by helm), through the `cluster` backend of tests/e2e.
# From a machine with nothing but this repository and its virtualenv:
#
#   1. Docker, the Go parts and the node image (cached outside the repository), the cluster
#      (a running one is reused), the operator and trainer images, the chart
#   2. pytest -m e2e
#
# The cluster stays up afterwards (a second run reuses it; `make kind-down` removes it).
# Environment: FTJOB_KIND_CLUSTER (default ftjob), FTJOB_OPERATOR_IMAGE, FTJOB_TRAINER_IMAGE,
# PYTEST_ARGS (extra pytest arguments, e.g. "-k drain"), PYTHON (default .venv/bin/python);
# see also scripts/e2e-images.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS

export FTJOB_OPERATOR_IMAGE=${FTJOB_OPERATOR_IMAGE:-ftjob-operator:dev}
export FTJOB_TRAINER_IMAGE=${FTJOB_TRAINER_IMAGE:-ftjob-trainer:dev}
# The admission webhook `Fail` (a webhook that stops answering fails the scenarios instead of
# being skipped), and not in the namespace the scenarios keep for jobs it never sees
# (tests/e2e/backends.py, UNCHECKED_NAMESPACE).
export HELM_SET='--set webhook.failurePolicy=Fail --set-json webhook.namespaceSelector={"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["ftjob-e2e-unchecked"]}]}'

export KUBECONFIG
KUBECONFIG=$(bash scripts/kind-up.sh | tail -n 1)
echo "e2e: cluster ready in $(( SECONDS - started )) s"
export KUBECTL
KUBECTL=$(bash scripts/build-control-plane.sh)/kubectl
# The scenarios' own pods (seeding, probes) use the trainer image as the nodes know it.
FTJOB_TRAINER_IMAGE=localhost:5001/${FTJOB_TRAINER_IMAGE##*/}
# The kind cluster's image registry (on this host, port 5001, plain HTTP) as pods reach it,
# through the kind network's gateway: where the delivery scenario pushes a model to.
export FTJOB_E2E_REGISTRY
FTJOB_E2E_REGISTRY="$(docker network inspect kind \
  -f '{{range .IPAM.Config}}{{println .Gateway}}{{end}}' | grep -m1 -F .):5001"

# shellcheck disable=SC2086
"${PYTHON:-.venv/bin/python}" -m pytest tests/e2e -m e2e -p no:cacheprovider -v --durations=0 \
  --timeout=900 ${PYTEST_ARGS:-}
echo "e2e: done in $(( SECONDS - started )) s"
