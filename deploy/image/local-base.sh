#!/usr/bin/env bash
# A local stand-in for the Dockerfile's base image (python:3.11-slim-bookworm), for machines that
# reach Debian's package archive but no container registry: a minimal Debian bookworm made with
# debootstrap, plus Python 3.11 and venv, imported into buildah's image store.
#
#   deploy/image/local-base.sh [IMAGE]        # default localhost/hpsearch-base:bookworm
#   buildah bud --isolation chroot --build-arg PYTHON_IMAGE=localhost/hpsearch-base:bookworm .
#
# Needs root, buildah and debootstrap (apt-get install buildah debootstrap). The root file system
# is cached as a tarball under ${XDG_CACHE_HOME:-~/.cache}/hpsearch/, so a second machine state
# (or a `buildah rmi --all`) costs seconds, not a new debootstrap.
set -euo pipefail

image=${1:-localhost/hpsearch-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/hpsearch
tarball=$cache/bookworm-python3.11-rootfs.tar

if buildah inspect --type image "$image" >/dev/null 2>&1; then
  echo "$image: already in buildah's image store"
  exit 0
fi

if [ ! -s "$tarball" ]; then
  mkdir -p "$cache"
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs" "$tarball.partial"' EXIT
  # minbase: dpkg, apt and the essential packages; python-is-python3 gives `python`, as in the
  # official image; passwd gives useradd; ca-certificates lets pip verify its index.
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates,passwd \
    bookworm "$rootfs" "$mirror"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
fi

container=$(buildah from scratch)
# `buildah add` unpacks a local tar archive at the destination.
buildah add "$container" "$tarball" / >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --cmd python3 "$container"
buildah commit --rm --quiet "$container" "$image" >/dev/null
echo "$image: made from $tarball"
