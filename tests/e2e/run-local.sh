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
# Environment: FTJOB_WHEELS_DIR (default /opt/wheels when it exists, else a cache of the
# torch wheels under ~/.cache/ftjob/wheels),
# FTJOB_EXTRA_CA_DIR (default /usr/local/share/ca-certificates when it holds *.crt),
# PYTEST_ARGS (extra pytest arguments, e.g. "-k sigkill").
set -euo pipefail
cd "$(dirname "$0")/../.."

started=$SECONDS
bash scripts/docker-setup.sh
FTJOB_CONTROL_PLANE_BIN=$(bash scripts/build-control-plane.sh)
export FTJOB_CONTROL_PLANE_BIN
echo "e2e: control plane binaries ready in $(( SECONDS - started )) s"

if [ -z "${FTJOB_WHEELS_DIR+x}" ]; then
  if [ -d /opt/wheels ]; then
    export FTJOB_WHEELS_DIR=/opt/wheels
  else
    # torch and its CUDA runtime wheels (about 2.6 GB), kept outside the repository: the
    # trainer image installs them from here instead of downloading them at every build.
    export FTJOB_WHEELS_DIR=${FTJOB_CACHE:-$HOME/.cache/ftjob}/wheels
    torch_version=$(sed -n 's/^ARG TORCH_VERSION=//p' trainer_image/Dockerfile)
    if ! compgen -G "$FTJOB_WHEELS_DIR/torch-$torch_version-*.whl" >/dev/null; then
      mkdir -p "$FTJOB_WHEELS_DIR"
      .venv/bin/pip download -q "torch==$torch_version" -d "$FTJOB_WHEELS_DIR"
    fi
  fi
fi
if [ -z "${FTJOB_EXTRA_CA_DIR+x}" ] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  export FTJOB_EXTRA_CA_DIR=/usr/local/share/ca-certificates
fi
FTJOB_OFFLINE_BASE=1 bash scripts/build-images.sh operator trainer
echo "e2e: docker and images ready in $(( SECONDS - started )) s"

export HF_HUB_OFFLINE=1 FTJOB_E2E_BACKEND=local
# shellcheck disable=SC2086
.venv/bin/python -m pytest tests/e2e -m e2e -p no:cacheprovider -v --durations=0 --timeout=900 \
  ${PYTEST_ARGS:-}
echo "e2e: done in $(( SECONDS - started )) s"
