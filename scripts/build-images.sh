#!/usr/bin/env bash
# Build the operator and trainer images (`make images`).
#
#   scripts/build-images.sh [operator] [trainer]        (default: both)
#
# Environment:
#   FTJOB_OPERATOR_IMAGE, FTJOB_TRAINER_IMAGE  tags (default ftjob-operator:dev, ftjob-trainer:dev)
#   BASE_IMAGE            base of both images; default: each Dockerfile's own (pulled)
#   FTJOB_OFFLINE_BASE=1  build scripts/build-base-image.sh's Debian base and use it
#                         (for machines that cannot pull from a registry)
#   FTJOB_WHEELS_DIR      a folder of wheels pip may use (e.g. a CPU torch wheel); served
#                         to the build over http://127.0.0.1 because a build sees only
#                         its context
#   FTJOB_WHEELS_PORT     port of that server on 127.0.0.1 (default 38117)
#   FTJOB_EXTRA_CA_DIR    a folder of *.crt certificates pip must trust (TLS-inspecting
#                         proxy); real builds need none
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL  passed on to pip
#   DOCKER                client (default /usr/bin/docker: Debian's 20.10 has BuildKit built in)
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-/usr/bin/docker}
OPERATOR_IMAGE=${FTJOB_OPERATOR_IMAGE:-ftjob-operator:dev}
TRAINER_IMAGE=${FTJOB_TRAINER_IMAGE:-ftjob-trainer:dev}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(operator trainer)

log() { echo "build-images: $*" >&2; }

build_args=(--build-arg "PIP_INDEX_URL=${PIP_INDEX_URL:-}"
            --build-arg "PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL:-}")

if [ "${FTJOB_OFFLINE_BASE:-0}" = 1 ]; then
  BASE_IMAGE=${BASE_IMAGE:-local/ftjob-base:bookworm}
  bash scripts/build-base-image.sh "$BASE_IMAGE"
fi
[ -z "${BASE_IMAGE:-}" ] || build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")

if [ -n "${FTJOB_EXTRA_CA_DIR:-}" ]; then
  shopt -s nullglob
  certs=("$FTJOB_EXTRA_CA_DIR"/*.crt)
  shopt -u nullglob
  [ ${#certs[@]} -gt 0 ] || { log "FTJOB_EXTRA_CA_DIR=$FTJOB_EXTRA_CA_DIR holds no *.crt"; exit 1; }
  build_args+=(--build-arg "EXTRA_CA_CERTS=$(cat "${certs[@]}")")
fi

server_pid=
cleanup() { [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true; }
trap cleanup EXIT
find_links=
if [ -n "${FTJOB_WHEELS_DIR:-}" ]; then
  [ -d "$FTJOB_WHEELS_DIR" ] || { log "FTJOB_WHEELS_DIR=$FTJOB_WHEELS_DIR is not a folder"; exit 1; }
  # A fixed port: the URL is a build argument, and a changed argument misses the layer cache.
  port=${FTJOB_WHEELS_PORT:-38117}
  python3 -m http.server --bind 127.0.0.1 --directory "$FTJOB_WHEELS_DIR" "$port" >/dev/null 2>&1 &
  server_pid=$!
  sleep 0.3
  kill -0 "$server_pid" 2>/dev/null || { log "cannot serve wheels on 127.0.0.1:$port (port taken? set FTJOB_WHEELS_PORT)"; exit 1; }
  find_links="http://127.0.0.1:$port/"
  deadline=$(( $(date +%s) + 10 ))
  until python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$find_links" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "wheel server on $find_links did not start"; exit 1; }
    sleep 0.2
  done
fi
build_args+=(--build-arg "PIP_FIND_LINKS=$find_links")

build() {  # name dockerfile tag
  local started=$SECONDS
  log "building $3 from $2"
  # Host network: the daemon runs without a bridge here, and the wheel server is on loopback.
  DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain \
    -f "$2" -t "$3" "${build_args[@]}" . > "${TMPDIR:-/tmp}/ftjob-build-$1.log" 2>&1 \
    || { tail -n 40 "${TMPDIR:-/tmp}/ftjob-build-$1.log" >&2; log "building $3 failed (full log: ${TMPDIR:-/tmp}/ftjob-build-$1.log)"; return 1; }
  log "built $3 in $(( SECONDS - started )) s ($("$DOCKER" image inspect -f '{{.Size}}' "$3" | awk '{printf "%.0f MB", $1/1e6}'))"
}

for target in "${targets[@]}"; do
  case "$target" in
    operator) build operator operator/Dockerfile "$OPERATOR_IMAGE" ;;
    trainer) build trainer trainer_image/Dockerfile "$TRAINER_IMAGE" ;;
    *) log "unknown image '$target' (expected operator or trainer)"; exit 2 ;;
  esac
done
