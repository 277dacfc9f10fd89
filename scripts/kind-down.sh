#!/usr/bin/env bash
# `make kind-down`: delete the kind cluster of `make kind-up` and its shared storage folder.
# The node image stays (rebuilding it takes minutes); `docker rmi` it to free the space.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_PREFIX=kind-down
# shellcheck source=scripts/lib/go-build.sh
source scripts/lib/go-build.sh
# shellcheck source=scripts/lib/kind-env.sh
source scripts/lib/kind-env.sh

if cluster_exists; then
  kind delete cluster --name "$CLUSTER" >&2
else
  log "no cluster named $CLUSTER"
fi
rm -rf "$STATE_DIR"
