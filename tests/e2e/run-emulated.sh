#!/usr/bin/env bash
# `make e2e`: the e2e suite on the emulated cluster (API emulator + operator image + pod
# runner), from a machine with nothing but this repository and its virtualenv.
#
#   1. Docker: install Debian's docker.io and start dockerd when needed
#   2. images: the offline Debian base (cached), then the operator and trainer images
#      (layer cache: a second run rebuilds only what changed)
#   3. pytest -m e2e on the emulated backend
#
# Environment: FTJOB_WHEELS_DIR (default /opt/wheels when it exists: the CPU torch wheel),
# FTJOB_EXTRA_CA_DIR (default /usr/local/share/ca-certificates when it holds *.crt),
# PYTEST_ARGS (extra pytest arguments, e.g. "-k sigkill").
set -euo pipefail
cd "$(dirname "$0")/../.."

started=$SECONDS
bash scripts/docker-setup.sh

if [ -z "${FTJOB_WHEELS_DIR+x}" ] && [ -d /opt/wheels ]; then
  export FTJOB_WHEELS_DIR=/opt/wheels
fi
if [ -z "${FTJOB_EXTRA_CA_DIR+x}" ] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  export FTJOB_EXTRA_CA_DIR=/usr/local/share/ca-certificates
fi
FTJOB_OFFLINE_BASE=1 bash scripts/build-images.sh operator trainer
echo "e2e: docker and images ready in $(( SECONDS - started )) s"

export HF_HUB_OFFLINE=1 FTJOB_E2E_BACKEND=emulated
# shellcheck disable=SC2086
.venv/bin/python -m pytest tests/e2e -m e2e -p no:cacheprovider -v --durations=0 --timeout=900 \
  ${PYTEST_ARGS:-}
echo "e2e: done in $(( SECONDS - started )) s"
