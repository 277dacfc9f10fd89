#!/usr/bin/env bash
# Make a Docker daemon available: install Debian's docker.io (and debootstrap, which
# build-base-image.sh needs) when missing, start dockerd when it is not answering, and wait
# until it does. Idempotent: a second run on a ready machine returns at once.
#
# The daemon runs without the default bridge: containers here use host networking only
# (the bridge would put them on private-range addresses, which this network refuses).
#
# Environment: DOCKER (client, default /usr/bin/docker: Debian's CLI has BuildKit built in),
# DOCKERD_LOG (default /var/log/ftjob-dockerd.log), DOCKER_WAIT_SECONDS (default 60).
set -euo pipefail

DOCKER=${DOCKER:-/usr/bin/docker}
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/ftjob-dockerd.log}
DOCKER_WAIT_SECONDS=${DOCKER_WAIT_SECONDS:-60}

log() { echo "docker-setup: $*" >&2; }

need_install=()
[ -x /usr/bin/docker ] && [ -x /usr/sbin/dockerd ] || need_install+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_install+=(debootstrap)
if [ ${#need_install[@]} -gt 0 ]; then
  log "installing ${need_install[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_install[@]}" >/dev/null
fi

if "$DOCKER" info >/dev/null 2>&1; then
  exit 0
fi

if ! pgrep -x dockerd >/dev/null 2>&1; then
  log "starting dockerd (log: $DOCKERD_LOG)"
  # setsid: the daemon must outlive this script and the CI step that ran it.
  setsid /usr/sbin/dockerd --bridge=none >>"$DOCKERD_LOG" 2>&1 < /dev/null &
fi

deadline=$(( $(date +%s) + DOCKER_WAIT_SECONDS ))
until "$DOCKER" info >/dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "dockerd did not answer within ${DOCKER_WAIT_SECONDS}s; last log lines:"
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    exit 1
  fi
  sleep 0.5
done
log "dockerd is ready"
