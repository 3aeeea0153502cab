#!/usr/bin/env bash
# Build (once) the Debian 12 image with systemd that the gpu_worker scenario runs:
# no registry is reachable, so the root filesystem comes from debootstrap and
# Debian's mirror, imported into Podman as localhost/debian12-systemd.
set -euo pipefail
image=${IMAGE:-localhost/debian12-systemd:latest}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/molecule/gpu_worker/containers.conf}
if podman image exists "$image"; then
  exit 0
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "Building $image with debootstrap (one-time, about a minute)" >&2
debootstrap --variant=minbase --include=python3,python3-apt,systemd,systemd-sysv,ca-certificates,sudo,gpg,kmod \
  bookworm "$rootfs" "$mirror" >&2
# Keep downloaded packages: the scenario mounts a host cache over /var/cache/apt/archives.
echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > "$rootfs/etc/apt/apt.conf.d/10keep-packages"
tar -C "$rootfs" -c . | podman import --change 'CMD ["/lib/systemd/systemd"]' - "$image" >&2
