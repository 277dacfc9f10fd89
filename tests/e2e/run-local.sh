#!/usr/bin/env bash
# `make e2e`: the e2e suite on a real control plane on this machine (etcd, kube-apiserver,
# controller-manager, scheduler built from upstream; the chart installed with helm; the
# Docker pod runner as the Node), from a machine with nothing but this repository and its
# virtualenv.
#
#   1. Docker: install Debian's docker.io and start dockerd when needed
#   2. the control plane, helm and kubectl binaries (cached outside the repository)
#   3. images: the offline Debian base (cached), then the operator and trainer images
#      (layer cache: a second run rebuilds only what changed)
#   4. pytest -m e2e on the local backend
#
# Environment: see scripts/e2e-images.sh; PYTEST_ARGS (extra pytest arguments, e.g.
# "-k sigkill").
set -euo pipefail
cd "$(dirname "$0")/../.."

started=$SECONDS
FTJOB_CONTROL_PLANE_BIN=$(bash scripts/build-control-plane.sh)
export FTJOB_CONTROL_PLANE_BIN
echo "e2e: control plane binaries ready in $(( SECONDS - started )) s"
bash scripts/e2e-images.sh
echo "e2e: docker and images ready in $(( SECONDS - started )) s"

export HF_HUB_OFFLINE=1 FTJOB_E2E_BACKEND=local
# shellcheck disable=SC2086
.venv/bin/python -m pytest tests/e2e -m e2e -p no:cacheprovider -v --durations=0 --timeout=900 \
  ${PYTEST_ARGS:-}
echo "e2e: done in $(( SECONDS - started )) s"
