#!/usr/bin/env bash
# `make e2e-kind`: the e2e scenarios on a real cluster.
#
# Creates a kind cluster (or reuses it), builds both images from their Dockerfiles (the
# default bases are pulled from Docker Hub), loads them into the cluster, installs the
# chart, and runs tests/e2e on the `cluster` backend. Needs docker, kind, kubectl, helm.
#
# Environment: FTJOB_KIND_CLUSTER (default ftjob-e2e), KEEP_CLUSTER=1 to keep it afterwards,
# PYTEST_ARGS (extra pytest arguments), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=${FTJOB_KIND_CLUSTER:-ftjob-e2e}
TAG=e2e
export FTJOB_OPERATOR_IMAGE=ftjob-operator:$TAG FTJOB_TRAINER_IMAGE=ftjob-trainer:$TAG

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "run-kind: $tool is required" >&2; exit 1; }
done

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 180s
fi
if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
  trap 'kind delete cluster --name "$CLUSTER"' EXIT
fi
export KUBECONFIG
KUBECONFIG=$(mktemp)
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"

# The docker on PATH (the scripts default to Debian's /usr/bin/docker, see docs/e2e.md).
export DOCKER
DOCKER=$(command -v docker)
bash scripts/build-images.sh operator trainer
kind load docker-image --name "$CLUSTER" "$FTJOB_OPERATOR_IMAGE" "$FTJOB_TRAINER_IMAGE"

# The admission webhook as the chart's default (through its Service), but `Fail`, and not in
# the namespace the scenarios keep for jobs it never sees: the same as the local backend
# (tests/e2e/backends.py, UNCHECKED_NAMESPACE).
helm upgrade --install ftjob charts/ftjob --namespace ftjob-system --create-namespace \
  --set image.repository=ftjob-operator --set image.tag=$TAG --set image.pullPolicy=Never \
  --set trainer.image.repository=ftjob-trainer --set trainer.image.tag=$TAG \
  --set trainer.image.pullPolicy=Never --set webhook.failurePolicy=Fail \
  --set-json 'webhook.namespaceSelector={"matchExpressions":[{"key":"kubernetes.io/metadata.name","operator":"NotIn","values":["ftjob-e2e-unchecked"]}]}' \
  --wait --timeout 5m

# The pod runner tests need the emulator; the scenarios are what runs on a real cluster.
# shellcheck disable=SC2086
"${PYTHON:-.venv/bin/python}" -m pytest tests/e2e/test_scenarios.py -m e2e --e2e-backend cluster -p no:cacheprovider \
  -v --durations=0 ${PYTEST_ARGS:-}
