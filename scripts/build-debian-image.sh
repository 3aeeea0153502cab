#!/usr/bin/env bash
# Build (once) the Debian 12 image with systemd that the gpu_worker scenario runs:
# no registry is reachable, so the root filesystem comes from debootstrap and
# Debian's mirror, imported into Podman as localhost/debian12-systemd.
# The image is labelled with a hash of this script: an image built by another
# version of it is built again.
set -euo pipefail
image=${IMAGE:-localhost/debian12-systemd:latest}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/extensions/molecule/gpu_worker/containers.conf}
key=$(sha256sum "$here/scripts/build-debian-image.sh" | cut -c1-16)
if podman image exists "$image" &&
   [ "$(podman image inspect --format '{{ index .Labels "homelab.inference.image-key" }}' "$image")" = "$key" ]; then
  exit 0
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "Building $image with debootstrap (one-time, about a minute)" >&2
debootstrap --variant=minbase --include=python3,python3-apt,systemd,systemd-sysv,ca-certificates,sudo,gpg,kmod,ccache \
  bookworm "$rootfs" "$mirror" >&2
# Keep downloaded packages: the scenario mounts a host cache over /var/cache/apt/archives.
echo 'Binary::apt::APT::Keep-Downloaded-Packages "true";' > "$rootfs/etc/apt/apt.conf.d/10keep-packages"
# Kernel modules built by DKMS go through ccache (Debian's kernel headers prefix their compiler
# with it when DEBIAN_KERNEL_USE_CCACHE is set), into /var/cache/ccache, which the scenario
# mounts from the host: the NVIDIA module is compiled once per machine, not once per run.
# The roles install packages with become, so sudo sets the variable for the commands it runs.
printf 'cache_dir = /var/cache/ccache\nmax_size = 2G\n' > "$rootfs/etc/ccache.conf"
echo 'DEBIAN_KERNEL_USE_CCACHE=1' > "$rootfs/etc/kernel-ccache.env"
echo 'Defaults env_file=/etc/kernel-ccache.env' > "$rootfs/etc/sudoers.d/kernel-ccache"
chmod 0440 "$rootfs/etc/sudoers.d/kernel-ccache"
tar -C "$rootfs" -c . | podman import --change 'CMD ["/lib/systemd/systemd"]' \
  --change "LABEL homelab.inference.image-key=$key" - "$image" >&2
