# Kueue on the kind cluster: the release (built by scripts/build-kueue.sh from the Go module
# proxy) and its installation from the module's own Helm chart with kind/kueue/values.yaml.
# Source it after scripts/lib/kind-env.sh (push_image, the registry) in a script where
# kubectl and helm are on PATH and KUBECONFIG points at the cluster.
KUEUE_VERSION=v0.17.0
KUEUE_NAMESPACE=kueue-system

install_kueue() {
  local image pushed chart
  image=$(bash scripts/build-kueue.sh)
  push_image "$image"
  pushed=$(registry_name "$image")  # localhost:5001/kueue:v0.17.0
  chart="$(module_dir "sigs.k8s.io/kueue@$KUEUE_VERSION")/charts/kueue"
  # The release's chart: its CRDs are templates, so an upgrade updates them too.
  helm upgrade --install kueue "$chart" --namespace "$KUEUE_NAMESPACE" --create-namespace \
    --values kind/kueue/values.yaml \
    --set "controllerManager.manager.image.repository=${pushed%:*}" \
    --set "controllerManager.manager.image.tag=${pushed##*:}" \
    --wait --timeout 5m >&2
  # Kueue's webhooks refuse queues until its own certificate is in place: a server-side dry
  # run of a ResourceFlavor goes through once they answer.
  local deadline=$(( SECONDS + 300 ))
  until printf 'apiVersion: kueue.x-k8s.io/v1beta2\nkind: ResourceFlavor\nmetadata: {name: kueue-up-probe}\n' \
      | kubectl apply --dry-run=server -f - >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { log "Kueue's webhooks did not answer within 300 s"; return 1; }
    sleep 2
  done
}
