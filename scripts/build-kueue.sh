#!/usr/bin/env bash
# Kueue, built here from its release's module (the Go module proxy serves sigs.k8s.io/kueue;
# no registry is needed): the manager binary, as its Makefile builds it, and its image
# (kind/kueue/Dockerfile). The chart and CRDs come from the same module (scripts/kueue-up.sh).
#
#   bash scripts/build-kueue.sh          # prints the image's name on stdout
#
# Cached: the binary under FTJOB_CACHE (keyed by the version), the image by its tag.
# Environment: DOCKER (default /usr/bin/docker), FTJOB_CACHE (default ~/.cache/ftjob), GO.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_PREFIX=build-kueue
# shellcheck source=scripts/lib/go-build.sh
source scripts/lib/go-build.sh

KUEUE_VERSION=$(sed -n 's/^KUEUE_VERSION=//p' scripts/lib/kueue-env.sh)
DOCKER=${DOCKER:-/usr/bin/docker}
CACHE=${FTJOB_CACHE:-$HOME/.cache/ftjob}
BIN_DIR="$CACHE/kueue/$KUEUE_VERSION"
IMAGE=ftjob.dev/kueue:$KUEUE_VERSION

if [ ! -x "$BIN_DIR/manager" ]; then
  GO=$(find_go)
  dir=$(module_dir "sigs.k8s.io/kueue@$KUEUE_VERSION")
  [ -n "$dir" ] || { log "sigs.k8s.io/kueue@$KUEUE_VERSION: not served by the module proxy"; exit 1; }
  src="$BIN_DIR/src"
  rm -rf "$src" && mkdir -p "$BIN_DIR" && cp -r "$dir" "$src" && chmod -R u+w "$src"
  (
    cd "$src"
    # The release's flags (Makefile: LD_FLAGS), without the git commit a module zip lacks.
    CGO_ENABLED=0 timed "go build kueue manager $KUEUE_VERSION" \
      "$GO" build -mod=mod -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" \
      -o "$BIN_DIR/manager.tmp" ./cmd/kueue
  )
  mv "$BIN_DIR/manager.tmp" "$BIN_DIR/manager"
  rm -rf "$src"
fi

# The image is tagged with the version: a new version is a new image.
if ! "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  bash scripts/docker-setup.sh
  ctx=$(mktemp -d)
  cp "$BIN_DIR/manager" kind/kueue/Dockerfile "$ctx/"
  "$DOCKER" build -q --network none -t "$IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
  log "built $IMAGE"
fi
echo "$IMAGE"
