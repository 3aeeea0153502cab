#!/usr/bin/env bash
# System packages the tests run for real (Debian's): redis-server for the
# gateway's shared quota counters; podman, runc and debootstrap for the
# gpu_worker scenario's Debian 12 systemd containers; gnupg to sign its test
# double of NVIDIA's CUDA repository. Installed once, only when missing.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || missing+=(runc)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v gpg >/dev/null || missing+=(gnupg)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Installing ${missing[*]} from Debian (one-time)" >&2
$sudo apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
