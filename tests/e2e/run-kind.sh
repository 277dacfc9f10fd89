#!/usr/bin/env bash
# `make e2e-kind`: the e2e scenarios on a kind cluster built here (scripts/kind-up.sh: three
# nodes with a real kubelet, containerd, flannel pod network and CoreDNS; the chart installed
# by helm with its defaults), on the `cluster` backend of tests/e2e.
#
# Environment: FTJOB_KIND_CLUSTER (default ftjob-e2e), KEEP_CLUSTER=1 to keep it afterwards
# (a second run then reuses it), PYTEST_ARGS (extra pytest arguments), PYTHON (default
# .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."

export FTJOB_KIND_CLUSTER=${FTJOB_KIND_CLUSTER:-ftjob-e2e}
export FTJOB_OPERATOR_IMAGE=${FTJOB_OPERATOR_IMAGE:-ftjob-operator:dev}
export FTJOB_TRAINER_IMAGE=${FTJOB_TRAINER_IMAGE:-ftjob-trainer:dev}
# The admission webhook `Fail` (a webhook that stops answering fails the scenarios instead of
# being skipped), and not in the namespace the scenarios keep for jobs it never sees
# (tests/e2e/backends.py, UNCHECKED_NAMESPACE).
export HELM_SET='--set webhook.failurePolicy=Fail --set-json webhook.namespaceSelector={"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["ftjob-e2e-unchecked"]}]}'

if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
  trap 'bash scripts/kind-down.sh' EXIT
fi
export KUBECONFIG
KUBECONFIG=$(bash scripts/kind-up.sh | tail -n 1)
export KUBECTL
KUBECTL=$(bash scripts/build-control-plane.sh)/kubectl
# The scenarios' own pods (seeding, probes) use the trainer image as the nodes know it.
FTJOB_TRAINER_IMAGE=localhost:5001/${FTJOB_TRAINER_IMAGE##*/}

# shellcheck disable=SC2086
"${PYTHON:-.venv/bin/python}" -m pytest tests/e2e/test_scenarios.py -m e2e --e2e-backend cluster \
  -p no:cacheprovider -v --durations=0 ${PYTEST_ARGS:-}
