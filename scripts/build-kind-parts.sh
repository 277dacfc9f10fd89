#!/usr/bin/env bash
# Build, from upstream sources through the Go module proxy, what a kind node needs besides
# the Kubernetes commands (those come from build-control-plane.sh, same release): kind
# itself, containerd, runc, the CNI plugins, crictl, CoreDNS, local-path-provisioner and
# flannel. Each is built in a copy of its own module, so its go.mod and go.sum (and replace
# directives) decide its dependencies exactly as its release does. The binaries land in a
# cache outside the repository, keyed by the pins.
#
#   bash scripts/build-kind-parts.sh     # prints the bin folder on stdout
#
# Needs gcc and libseccomp-dev (runc links Debian's libseccomp, flannel uses cgo).
# Environment: FTJOB_CACHE (default ~/.cache/ftjob), GO (a go binary to use).
set -euo pipefail
cd "$(dirname "$0")/.."

# name module version cgo tags packages...  (packages relative to the module root)
PARTS=(
  "kind sigs.k8s.io/kind v0.33.0 0 - ."
  "containerd github.com/containerd/containerd/v2 v2.4.2 0 urfave_cli_no_docs ./cmd/containerd ./cmd/containerd-shim-runc-v2 ./cmd/ctr"
  "runc github.com/opencontainers/runc v1.5.3 1 seccomp,urfave_cli_no_docs ."
  "cni-plugins github.com/containernetworking/plugins v1.10.0 0 - ./plugins/main/bridge ./plugins/main/loopback ./plugins/main/ptp ./plugins/ipam/host-local ./plugins/meta/portmap"
  "crictl sigs.k8s.io/cri-tools v1.37.0 0 - ./cmd/crictl"
  "coredns github.com/coredns/coredns v1.15.0 0 - ."
  "local-path-provisioner github.com/rancher/local-path-provisioner v0.0.30 0 - ."
  "flannel github.com/flannel-io/flannel v0.28.10 1 - ."
)

CACHE=${FTJOB_CACHE:-$HOME/.cache/ftjob}
PIN=$(printf '%s\n' "${PARTS[@]}" | sha256sum | cut -c1-12)
BIN_DIR="$CACHE/kind-parts/$PIN/bin"
WORK="$CACHE/kind-parts/$PIN/src"

LOG_PREFIX=build-kind-parts
# shellcheck source=scripts/lib/go-build.sh
source scripts/lib/go-build.sh

# Changes to a copied module before its build, each for a reason:
patch_source() {  # patch_source NAME DIR
  case "$1" in
    # flannel links every backend; the Tencent Cloud VPC one needs an SDK the module proxy
    # does not serve. The cluster uses host-gw.
    flannel) sed -i '\|flannel/pkg/backend/tencentvpc"|d' "$2/main.go" ;;
  esac
}

binary_name() {  # binary_name PART PACKAGE: what `go build` of PACKAGE is called here
  local part=$1 package=$2
  if [ "$package" = . ]; then echo "$part"; else basename "$package"; fi
}

part_built() {  # part_built NAME _ _ _ _ PACKAGES...
  local name=$1 package
  shift 5
  for package in "$@"; do [ -x "$BIN_DIR/$(binary_name "$name" "$package")" ] || return 1; done
}

build_part() {  # build_part NAME MODULE VERSION CGO TAGS PACKAGES...
  local name=$1 module=$2 version=$3 cgo=$4 tags=$5 src="$WORK/$1" dir package
  shift 5
  dir=$(module_dir "$module@$version")
  [ -n "$dir" ] || { log "$module@$version: not served by the module proxy"; return 1; }
  rm -rf "$src" && mkdir -p "$(dirname "$src")" && cp -r "$dir" "$src" && chmod -R u+w "$src"
  patch_source "$name" "$src"
  [ "$tags" = - ] && tags=""
  for package in "$@"; do
    local out
    out=$(binary_name "$name" "$package")
    (
      cd "$src"
      # -mod=mod: a module's zip carries no vendor folder that its go.mod could trust.
      CGO_ENABLED=$cgo timed "go build $out ($module $version)" \
        "$GO" build -mod=mod -trimpath -tags "$tags" -ldflags "-s -w" -o "$BIN_DIR/$out.tmp" "$package"
    )
    mv "$BIN_DIR/$out.tmp" "$BIN_DIR/$out"
  done
}

mkdir -p "$BIN_DIR" "$WORK"
GO=$(find_go)
if [ ! -e /usr/include/seccomp.h ] || ! command -v gcc >/dev/null; then
  log "installing gcc and libseccomp-dev (runc links libseccomp; flannel and pause need a C compiler)"
  apt_install gcc libc6-dev libseccomp-dev
fi
started=$SECONDS built=0
for part in "${PARTS[@]}"; do
  # shellcheck disable=SC2086  # one word per field
  part_built $part && continue
  # shellcheck disable=SC2086
  build_part $part
  built=$(( built + 1 ))
done
[ "$built" -eq 0 ] || log "built $built parts into $BIN_DIR in $(( SECONDS - started )) s"
echo "$BIN_DIR"
