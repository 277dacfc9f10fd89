#!/usr/bin/env bash
# `make kind-up`: a local kind cluster (one control plane, two workers) built here from
# source, with ftjob installed by helm as a platform team would. A second run reuses the
# running cluster and only updates what changed (images, chart).
#
#   1. the node image (scripts/build-kind-node.sh: nothing pulled)
#   2. `kind create cluster` (kind/cluster.yaml), flannel (kind/flannel.yaml) and the
#      ReadWriteMany StorageClass ftjob-shared (kind/shared-storage.yaml)
#   3. the operator and trainer images built (scripts/e2e-images.sh), pushed to a local
#      registry (kind/registry.yml) and pulled by the workers
#   4. Kueue (scripts/build-kueue.sh, installed from its release's chart with
#      kind/kueue/values.yaml): quotas and queues for jobs with spec.scheduling.queueName
#   5. the chart's CRD applied (helm never updates crds/), then `helm upgrade --install`
#      of charts/ftjob with its defaults: the admission webhook
#      through its Service with its self-signed CA
#   6. the inputs of examples/kind-demo.yaml (the claim ftjob-examples in `default`)
#
# The cluster's kubeconfig: kind's usual place ($KUBECONFIG or ~/.kube/config, context
# kind-<name>), and a copy printed on the last line.
# Environment: FTJOB_KIND_CLUSTER (default ftjob), FTJOB_OPERATOR_IMAGE, FTJOB_TRAINER_IMAGE,
# FTJOB_CACHE, HELM_SET (more `--set k=v` arguments for the chart, space-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_PREFIX=kind-up
# shellcheck source=scripts/lib/go-build.sh
source scripts/lib/go-build.sh
# shellcheck source=scripts/lib/kind-env.sh
source scripts/lib/kind-env.sh
# shellcheck source=scripts/lib/kueue-env.sh
source scripts/lib/kueue-env.sh

# A new cluster needs about this much: the node image, the registry, the trainer image
# unpacked in each worker, skopeo's staging copy of it while it is pushed.
NEEDED_GB=25

require_docker
started=$SECONDS
timed "operator and trainer images" bash scripts/e2e-images.sh >&2
if ! cluster_exists; then
  ensure_free_space "$NEEDED_GB" "a new kind cluster" || exit 1
fi

NODE_IMAGE=$(timed "node image" bash scripts/build-kind-node.sh)
CP_BIN=$(bash scripts/build-control-plane.sh)
export PATH="$CP_BIN:$PATH"  # kubectl and helm of the pinned release

if cluster_exists; then
  log "cluster $CLUSTER is running: reusing it"
else
  mkdir -p "$SHARED_DIR" "$CERTS_DIR"
  sed -e "s|SHARED_DIR|$SHARED_DIR|" -e "s|CERTS_DIR|$CERTS_DIR|" kind/cluster.yaml > "$STATE_DIR/cluster.yaml"
  timed "kind create cluster $CLUSTER" \
    kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" --config "$STATE_DIR/cluster.yaml"
fi
kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_FILE"
start_registry
point_nodes_at_registry
export KUBECONFIG=$KUBECONFIG_FILE

kubectl apply -f kind/flannel.yaml -f kind/shared-storage.yaml >/dev/null
kubectl annotate --overwrite storageclass standard storageclass.kubernetes.io/is-default-class=false >/dev/null
timed "3 nodes Ready" kubectl wait --for=condition=Ready node --all --timeout=300s >/dev/null
timed "CoreDNS and the storage provisioner" bash -c '
  kubectl -n kube-system rollout status deployment/coredns --timeout=300s &&
  kubectl -n ftjob-shared-storage rollout status deployment/shared-path-provisioner --timeout=300s' >/dev/null

timed "images pushed to $REGISTRY and pulled by the workers" load_images
timed "Kueue $KUEUE_VERSION" install_kueue
timed "helm upgrade --install ftjob" install_chart
install_examples
log "ready in $(( SECONDS - started )) s: kubectl --kubeconfig $KUBECONFIG_FILE get nodes -o wide"
echo "$KUBECONFIG_FILE"
