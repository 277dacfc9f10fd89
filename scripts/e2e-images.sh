#!/usr/bin/env bash
# Everything `make e2e` needs before its tests, apart from the control plane: Docker, the
# torch wheels, the offline base image and the operator and trainer images. Idempotent and
# quick once done (Docker's layer cache): `.ci/run` starts it in the background while
# `make test` runs, and `make e2e` runs it again to pick up any change.
#
# Environment: FTJOB_WHEELS_DIR (default /opt/wheels when it exists, else a cache of the
# torch wheels under ~/.cache/ftjob/wheels), FTJOB_EXTRA_CA_DIR (default
# /usr/local/share/ca-certificates when it holds *.crt).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/docker-setup.sh
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
# The builds these replaced, untagged now (6 GB for each earlier trainer image): the layer
# cache that makes the next build quick is BuildKit's, not theirs.
"${DOCKER:-/usr/bin/docker}" image prune -f >/dev/null
