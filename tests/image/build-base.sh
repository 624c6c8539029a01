#!/usr/bin/env bash
# A local Debian bookworm base image with python3 + venv, for building image/Dockerfile where public base images
# cannot be pulled: debootstrap (minbase) into a folder, tar it under CACHE_DIR, and import the tarball with buildah
# alone (`buildah from scratch`, untar into its mount, commit).
#
#   bash tests/image/build-base.sh [CACHE_DIR] [IMAGE]    # defaults: .cache/image-base localhost/interp-base:bookworm
#
# Reruns are fast: an image already in buildah's storage is reused; otherwise the cached tarball is imported again
# (seconds); only a missing tarball runs debootstrap (a few minutes). Exit status: 0 built or reused, 2 a tool is
# missing (buildah, debootstrap, or root), anything else a failed build.
set -euo pipefail

CACHE_DIR=${1:-.cache/image-base}
IMAGE=${2:-localhost/interp-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,ca-certificates

for tool in buildah debootstrap tar; do
  if ! command -v "$tool" >/dev/null 2>&1; then echo "build-base: $tool not found" >&2; exit 2; fi
done
if [ "$(id -u)" != 0 ]; then echo "build-base: debootstrap and buildah's chroot isolation need root" >&2; exit 2; fi

mkdir -p "$CACHE_DIR"
TARBALL=$CACHE_DIR/$SUITE-minbase.tar
STAMP="$SUITE $MIRROR $PACKAGES"

if buildah inspect --type image "$IMAGE" >/dev/null 2>&1 && [ -f "$TARBALL.stamp" ] \
   && [ "$(cat "$TARBALL.stamp")" = "$STAMP" ]; then
  echo "build-base: reusing $IMAGE"
  exit 0
fi

if [ ! -f "$TARBALL" ] || [ ! -f "$TARBALL.stamp" ] || [ "$(cat "$TARBALL.stamp")" != "$STAMP" ]; then
  rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  echo "build-base: debootstrap $SUITE into $rootfs (a few minutes)"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE_DIR/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  tar -C "$rootfs" --numeric-owner -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
  echo "$STAMP" >"$TARBALL.stamp"
  rm -rf "$rootfs"
  trap - EXIT
fi

echo "build-base: importing $TARBALL as $IMAGE"
container=$(buildah from scratch)
trap 'buildah rm "$container" >/dev/null 2>&1 || true' EXIT
mountpoint=$(buildah mount "$container")
tar -C "$mountpoint" --numeric-owner -xf "$TARBALL"
buildah umount "$container" >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
  --cmd /bin/bash --label org.opencontainers.image.description="Debian $SUITE minbase + $PACKAGES" "$container"
buildah commit -q --rm "$container" "$IMAGE" >/dev/null
trap - EXIT
echo "build-base: built $IMAGE"
