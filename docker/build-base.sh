#!/usr/bin/env bash
# Build the offline base image (Debian bookworm + python3) from Debian's packages alone:
# debootstrap a minimal root, then `docker import` it. No container registry is involved.
# Cached: when the image already exists, nothing is done (FORCE=1 rebuilds it).
#
#   docker/build-base.sh [IMAGE]        default IMAGE: minibroker-base:bookworm
#
# Needs root (debootstrap) and debootstrap itself (apt-get install debootstrap).
# MIRROR=http://... picks another Debian mirror.
set -euo pipefail

IMAGE="${1:-minibroker-base:bookworm}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-}"

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE exists; skipping (FORCE=1 rebuilds it)"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    echo "error: debootstrap is missing: apt-get install debootstrap" >&2
    exit 1
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "error: debootstrap needs root to build $IMAGE" >&2
    exit 1
fi

ROOTFS="$(mktemp -d "${TMPDIR:-/var/tmp}/minibroker-rootfs.XXXXXX")"
trap 'rm -rf "$ROOTFS"' EXIT

echo "debootstrap $SUITE into $ROOTFS (about a minute)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS" ${MIRROR:+"$MIRROR"} >"$ROOTFS.log" 2>&1 || {
    tail -n 30 "$ROOTFS.log" >&2
    rm -f "$ROOTFS.log"
    exit 1
}
rm -f "$ROOTFS.log"

# What a container never needs: package caches and lists, docs, man pages.
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*

tar --numeric-owner -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$IMAGE" >/dev/null
echo "built $IMAGE"
