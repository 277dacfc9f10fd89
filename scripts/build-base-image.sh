#!/usr/bin/env bash
# Build the offline base image (Debian bookworm + Python 3.11) with debootstrap and
# `docker import`, for machines that cannot pull from a registry. Cached twice: the
# image itself (skipped when present) and the root filesystem tarball (re-imported
# when the image is gone, e.g. after the docker data root was wiped).
#
# Usage: scripts/build-base-image.sh [IMAGE]      (default local/ftjob-base:bookworm)
# Environment: DOCKER, FTJOB_CACHE_DIR (default /var/cache/ftjob), DEBIAN_MIRROR,
# FORCE=1 to rebuild.
set -euo pipefail

IMAGE=${1:-${FTJOB_BASE_IMAGE:-local/ftjob-base:bookworm}}
DOCKER=${DOCKER:-/usr/bin/docker}
CACHE_DIR=${FTJOB_CACHE_DIR:-/var/cache/ftjob}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# What both images need from Debian: Python with venv/pip, CA certificates for pip, and
# passwd for the non-root user. Bump the version suffix when changing this list.
PACKAGES=python3,python3-venv,python3-pip,python3-dev,ca-certificates,passwd,procps
TARBALL="$CACHE_DIR/base-$SUITE-v1.tar"

log() { echo "build-base-image: $*" >&2; }

if [ "${FORCE:-0}" != 1 ] && "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE present, nothing to do"
  exit 0
fi

mkdir -p "$CACHE_DIR"
if [ "${FORCE:-0}" = 1 ] || [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { log "debootstrap missing: run scripts/docker-setup.sh"; exit 1; }
  rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  # debootstrap mounts proc and sys inside the root; unmount before removing anything.
  trap 'umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true; rm -rf --one-file-system "$rootfs"' EXIT
  log "debootstrap $SUITE from $DEBIAN_MIRROR"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$DEBIAN_MIRROR" >/dev/null
  # Leave out what only installing packages needs: apt lists and the package cache.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  # Written to a temporary name first so an interrupted run never leaves a truncated cache.
  tar --numeric-owner --one-file-system -C "$rootfs" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
fi

log "importing $TARBALL as $IMAGE"
"$DOCKER" import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' \
  "$TARBALL" "$IMAGE" >/dev/null
log "built $IMAGE"
