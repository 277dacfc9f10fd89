#!/usr/bin/env bash
# Build a kind node image on this machine from served sources only: nothing is pulled,
# neither here nor at `kind create cluster` time.
#
#   bash scripts/build-kind-node.sh       # prints the node image's name on stdout
#
# 1. The Go parts: kubelet, kubeadm, kube-proxy (build-control-plane.sh, the release the
#    local control plane runs) and kind, containerd, runc, CNI plugins, crictl, CoreDNS,
#    local-path-provisioner, flannel (build-kind-parts.sh).
# 2. The node base image (kind/node/Dockerfile): Debian bookworm from debootstrap plus kind's
#    own base files, with containerd, runc, crictl and the CNI plugins.
# 3. The images kubeadm and kind's manifests name, built from those binaries and tagged as
#    they expect: the control-plane components, kube-proxy, pause (from the Kubernetes
#    source's pause.c), etcd, CoreDNS, local-path-provisioner and its helper, and flannel.
# 4. `kind build node-image --type file` on a server tarball laid out as a Kubernetes release
#    (kubernetes/server/bin). kind "pulls" every image kubeadm lists that is not in the
#    tarball's four image archives; the extra images go into one of those archives, whose
#    `repositories` entry (read first) names them all, so nothing is left to pull.
#
# Cached: the node image is tagged with a hash of everything that goes into it, and this
# script returns at once when that image exists.
# Environment: DOCKER (default /usr/bin/docker), FTJOB_CACHE, FTJOB_EXTRA_CA_DIR (CA
# certificates apt inside the base image build must trust; default: this host's extra ones).
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_PREFIX=build-kind-node
# shellcheck source=scripts/lib/go-build.sh
source scripts/lib/go-build.sh

DOCKER=${DOCKER:-/usr/bin/docker}
KUBERNETES_VERSION=$(sed -n 's/^KUBERNETES_VERSION=//p' scripts/build-control-plane.sh)
# The images kubeadm (cmd/kubeadm/app/constants) and kind v0.33.0 (pkg/build/nodeimage) name.
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2
ETCD_IMAGE=registry.k8s.io/etcd:3.7.0-0
COREDNS_IMAGE=registry.k8s.io/coredns/coredns:v1.14.6   # built from coredns v1.15.0, see below
KIND_TAG=v20260820-69b56db7
LOCAL_PATH_IMAGE=docker.io/kindest/local-path-provisioner:$KIND_TAG
LOCAL_PATH_HELPER_IMAGE=docker.io/kindest/local-path-helper:v20260131-7181c60a
KINDNETD_IMAGE=docker.io/kindest/kindnetd:$KIND_TAG
FLANNEL_IMAGE=ftjob.dev/flannel:v0.28.10

CP_BIN=$(bash scripts/build-control-plane.sh kubelet kubeadm kube-proxy)
PARTS_BIN=$(bash scripts/build-kind-parts.sh)
KIND_MODULE=$(module_dir sigs.k8s.io/kind@v0.33.0)

# One hash over every input: binaries, this script and what kind/ has for the image.
pin=$( { (cd "$CP_BIN" && sha256sum kubelet kubeadm kubectl kube-proxy kube-apiserver \
             kube-controller-manager kube-scheduler etcd)
          (cd "$PARTS_BIN" && sha256sum ./*)
          sha256sum < "$0"
          find kind/node kind/images -type f -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -c1-12)
NODE_IMAGE=ftjob.dev/kind-node:$KUBERNETES_VERSION-$pin
BASE_IMAGE=ftjob.dev/kind-base:$pin
if "$DOCKER" image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
  echo "$NODE_IMAGE"
  exit 0
fi

bash scripts/docker-setup.sh
bash scripts/build-base-image.sh
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# --- 2. the node base image -----------------------------------------------------------------
ctx=$WORK/base
mkdir -p "$ctx/bin"
cp -r "$KIND_MODULE/images/base/files" "$ctx/files"
chmod -R u+w "$ctx/files"
# kind's entrypoint stays as it is, renamed; ours runs first (see kind/node/entrypoint).
mv "$ctx/files/usr/local/bin/entrypoint" "$ctx/files/usr/local/bin/kind-entrypoint"
cp kind/node/entrypoint "$ctx/files/usr/local/bin/entrypoint"
chmod 0755 "$ctx"/files/usr/local/bin/* "$ctx"/files/kind/bin/*
# containerd: kind's configuration with kubeadm's pause image, without the rootless
# fuse-overlayfs plugin (not built), and with restrict_oom_score_adj: negative OOM scores
# need CAP_SYS_RESOURCE, which the nodes lack (the same reason containerd's own unit does
# not get OOMScoreAdjust=-999 here).
sed -e "s|sandbox_image = .*|sandbox_image = \"$PAUSE_IMAGE\"|" \
    -e 's|restrict_oom_score_adj = false|restrict_oom_score_adj = true|' \
    -e '/^\[proxy_plugins/,/^$/d' -e '/^# fuse-overlayfs is used for rootless/d' \
    "$KIND_MODULE/images/base/files/etc/containerd/config.toml" > "$ctx/files/etc/containerd/config.toml"
sed -i '/^OOMScoreAdjust=/d' "$ctx/files/etc/systemd/system/containerd.service"
rm -f "$ctx/files/etc/systemd/system/containerd-fuse-overlayfs.service"
cp "$PARTS_BIN"/{containerd,ctr,containerd-shim-runc-v2,crictl,runc,bridge,host-local,loopback,ptp,portmap} "$ctx/bin/"
cp kind/node/Dockerfile "$ctx/"
build_args=()
if [ -z "${FTJOB_EXTRA_CA_DIR+x}" ] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  FTJOB_EXTRA_CA_DIR=/usr/local/share/ca-certificates
fi
if [ -n "${FTJOB_EXTRA_CA_DIR:-}" ]; then
  build_args+=(--build-arg "EXTRA_CA_CERTS=$(cat "$FTJOB_EXTRA_CA_DIR"/*.crt)")
fi
timed "node base image $BASE_IMAGE" \
  "$DOCKER" build --network host -q "${build_args[@]}" -t "$BASE_IMAGE" "$ctx" >/dev/null

# --- 3. the images kubeadm and kind name ----------------------------------------------------
image_from_binary() {  # image_from_binary TAG BINARY_PATH [DOCKERFILE] [ENTRYPOINT]
  local tag=$1 binary=$2 dockerfile=${3:-kind/images/Dockerfile.binary} entrypoint=${4:-} ctx
  ctx=$(mktemp -d "$WORK/img.XXXX")
  cp "$binary" "$ctx/"
  "$DOCKER" build -q --network none -f "$dockerfile" --build-arg "BINARY=$(basename "$binary")" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$tag" "$ctx" >/dev/null
  if [ -n "$entrypoint" ]; then  # for images run without a command (pause, CoreDNS)
    printf 'FROM %s\nENTRYPOINT ["%s"]\n' "$tag" "$entrypoint" \
      | "$DOCKER" build -q --network none -t "$tag" - >/dev/null
  fi
}
server=$WORK/kubernetes/server/bin
mkdir -p "$server"
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  image_from_binary "registry.k8s.io/$cmd:$KUBERNETES_VERSION" "$CP_BIN/$cmd"
done
image_from_binary "registry.k8s.io/kube-proxy:$KUBERNETES_VERSION" "$CP_BIN/kube-proxy" kind/images/Dockerfile.tools
image_from_binary "$ETCD_IMAGE" "$CP_BIN/etcd"
# CoreDNS: kubeadm v1.37 names v1.14.6; the module proxy serves v1.15.0, a compatible
# release (kubeadm's Corefile uses only plugins both have).
image_from_binary "$COREDNS_IMAGE" "$PARTS_BIN/coredns" "" /usr/local/bin/coredns
image_from_binary "$LOCAL_PATH_IMAGE" "$PARTS_BIN/local-path-provisioner"
image_from_binary "$FLANNEL_IMAGE" "$PARTS_BIN/flannel" kind/images/Dockerfile.tools
# pause: the Kubernetes source's own pause.c, linked statically.
pause_src=$(module_dir "k8s.io/kubernetes@$KUBERNETES_VERSION")/build/pause/linux/pause.c
gcc -Os -static -DVERSION="\"${PAUSE_IMAGE##*:}\"" -o "$WORK/pause" "$pause_src"
strip "$WORK/pause"
image_from_binary "$PAUSE_IMAGE" "$WORK/pause" "" /usr/local/bin/pause
# The storage helper pods run a shell script: the node base has one.
"$DOCKER" image tag "$BASE_IMAGE" "$LOCAL_PATH_HELPER_IMAGE"
# kindnetd has no source served here and the cluster turns kind's CNI off
# (disableDefaultCNI): the pause image stands under its name so that the build, which
# pre-loads it, finds it. It never runs.
"$DOCKER" image tag "$PAUSE_IMAGE" "$KINDNETD_IMAGE"

save_images() {  # save_images ARCHIVE IMAGE...: a docker archive with `repositories` first
  local archive=$1 dir
  shift
  dir=$(mktemp -d "$WORK/save.XXXX")
  "$DOCKER" save "$@" | tar -C "$dir" -x
  # Docker writes Docker Hub names short (kindest/kindnetd); kind compares them with the
  # full names kubeadm and its manifests use (docker.io/kindest/kindnetd).
  python3 - "$dir/repositories" <<'PY'
import json, sys
path = sys.argv[1]
repos = json.load(open(path))
def full(name):
    first = name.split("/")[0]
    return name if "." in first or ":" in first or first == "localhost" else "docker.io/" + name
json.dump({full(name): tags for name, tags in repos.items()}, open(path, "w"))
PY
  (cd "$dir" && tar -cf "$archive" repositories manifest.json $(ls | grep -vxE 'repositories|manifest.json'))
}
for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
  save_images "$server/$cmd.tar" "registry.k8s.io/$cmd:$KUBERNETES_VERSION"
  echo "$KUBERNETES_VERSION" > "$server/$cmd.docker_tag"
done
save_images "$server/kube-proxy.tar" "registry.k8s.io/kube-proxy:$KUBERNETES_VERSION" \
  "$PAUSE_IMAGE" "$ETCD_IMAGE" "$COREDNS_IMAGE" "$LOCAL_PATH_IMAGE" "$LOCAL_PATH_HELPER_IMAGE" \
  "$KINDNETD_IMAGE" "$FLANNEL_IMAGE"
echo "$KUBERNETES_VERSION" > "$server/kube-proxy.docker_tag"
for cmd in kubeadm kubelet kubectl; do cp "$CP_BIN/$cmd" "$server/"; done
echo "$KUBERNETES_VERSION" > "$WORK/kubernetes/version"
tar -C "$WORK" -czf "$WORK/kubernetes-server-linux-amd64.tar.gz" kubernetes

# --- 4. the node image ------------------------------------------------------------------------
# TMPDIR: kind extracts the tarball into a temporary folder it leaves behind (1.2 GB).
TMPDIR=$WORK PATH="$PWD/kind/bin:$PATH" timed "kind build node-image $NODE_IMAGE" \
  "$PARTS_BIN/kind" build node-image --type file --base-image "$BASE_IMAGE" --image "$NODE_IMAGE" \
  "$WORK/kubernetes-server-linux-amd64.tar.gz" >&2
# Earlier node images (1.7 GB each) are of no more use: every input of theirs changed.
"$DOCKER" images --format '{{.Repository}}:{{.Tag}}' 'ftjob.dev/kind-*' \
  | grep -vxF -e "$NODE_IMAGE" -e "$BASE_IMAGE" | xargs -r "$DOCKER" rmi >/dev/null 2>&1 || true
echo "$NODE_IMAGE"
