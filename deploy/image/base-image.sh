#!/usr/bin/env bash
# Make the Dockerfile's base image locally, for machines that reach the Debian and PyPI mirrors
# but no container registry (podman as root). The Dockerfile says
#   FROM docker.io/library/python:3.11-slim-bookworm
# which Docker pulls on a machine with registry access. Here that exact name is given to a
# Debian bookworm root file system made by debootstrap (minbase) with Debian's Python 3.11, so
# `podman build --pull=never` finds it.
#
# The root file system is kept as a tarball, reused when present (fastest first):
#   1. the image already in podman's storage: nothing to do;
#   2. $BASE_IMAGE_CACHE (default /var/cache/classifier-build), kept between CI runs on one
#      machine, or var/ of this checkout;
#   3. neither: debootstrap builds it (about two minutes), and it is saved to both.
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE="${BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-venv,ca-certificates"
# Bump when PACKAGES or the steps below change: a cached tarball of another recipe is not used.
RECIPE=1
NAME="base-bookworm-python3.11-r${RECIPE}.tar"
MACHINE_CACHE="${BASE_IMAGE_CACHE:-/var/cache/classifier-build}"
CHECKOUT_CACHE="var/image-cache"

if [ "${1:-}" != "--rebuild" ] && podman image exists "$IMAGE" &&
  [ "$(podman image inspect --format '{{index .Labels "classifier.base-recipe"}}' "$IMAGE" 2>/dev/null)" = "$RECIPE" ]; then
  echo "Base image $IMAGE is present (recipe $RECIPE)."
  exit 0
fi

tarball=""
for dir in "$MACHINE_CACHE" "$CHECKOUT_CACHE"; do
  if [ "${1:-}" != "--rebuild" ] && [ -s "$dir/$NAME" ]; then tarball="$dir/$NAME"; break; fi
done

if [ -z "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap is needed: apt-get install debootstrap" >&2; exit 1; }
  root="$(mktemp -d /var/tmp/classifier-rootfs.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  echo "Building the base root file system with debootstrap (minbase bookworm + $PACKAGES) ..."
  start=$SECONDS
  debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" >/dev/null
  # Smaller and reproducible enough: no package lists, caches, docs or man pages.
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/tmp/* "$root"/var/tmp/*
  # The official python image answers to 'python'; so does this one.
  ln -sf python3 "$root/usr/bin/python"
  mkdir -p "$CHECKOUT_CACHE"
  tarball="$CHECKOUT_CACHE/$NAME"
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  if mkdir -p "$MACHINE_CACHE" 2>/dev/null && [ -w "$MACHINE_CACHE" ]; then
    cp "$tarball" "$MACHINE_CACHE/$NAME.tmp" && mv "$MACHINE_CACHE/$NAME.tmp" "$MACHINE_CACHE/$NAME"
  fi
  echo "debootstrap took $((SECONDS - start)) s; root file system cached as $tarball"
fi

podman import \
  --change 'CMD ["python3"]' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL classifier.base-recipe=$RECIPE" \
  "$tarball" "$IMAGE" >/dev/null
echo "Imported $tarball as $IMAGE ($(podman image inspect --format '{{.Size}}' "$IMAGE") bytes)."
