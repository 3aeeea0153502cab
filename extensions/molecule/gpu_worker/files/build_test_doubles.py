#!/usr/bin/env python3
"""TEST DOUBLES for what cannot be downloaded here, built for the gpu_worker
scenario: NVIDIA's container toolkit packages and CUDA repository (NVIDIA's
servers are not reachable) and k3s's release files (GitHub is not reachable).

- ``toolkit/<package>_<version>_amd64.deb``: real Debian packages (dpkg-deb)
  with the real names, version and dependencies, whose programs only say they
  are test doubles;
- ``k3s/``: the release's files for amd64, as k3s publishes them: ``k3s`` (a
  program that answers ``--version`` like k3s and, as ``k3s agent``, tells
  systemd it is ready and stays up), ``k3s-airgap-images-amd64.tar.zst`` (a
  real zstd-compressed tar holding a note, not images) and
  ``sha256sum-amd64.txt`` with both checksums (the images' line first, as the
  release workflow appends them);
- ``cuda/debian12/x86_64/``: a flat apt repository laid out like NVIDIA's
  (``.../compute/cuda/repos/debian12/x86_64/``, suite ``/``): driver packages of
  branches 580 and 590 under Debian's names (nvidia-driver, nvidia-kernel-dkms,
  nvidia-smi, libcuda1, libnvidia-ml1, nvidia-persistenced) and
  ``nvidia-driver-pinning-<branch>``, with ``Packages``, ``Release``, an
  ``InRelease`` signed by a key made here (gpg) and that key as
  ``3bf863cc.pub``, where NVIDIA serves its own. The dependencies that matter
  are the real ones: libcuda1 and libnvidia-ml1 are no dependencies of
  nvidia-driver, so a role that does not ask for them does not get them.

Usage: build_test_doubles.py OUTPUT_DIR [TOOLKIT_VERSION] [K3S_VERSION]
"""

import email.utils
import gzip
import hashlib
import io
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile

PACKAGES = [  # name, dependencies, programs
    ("libnvidia-container1", [], []),
    ("libnvidia-container-tools", ["libnvidia-container1 (= {v})"], ["nvidia-container-cli"]),
    ("nvidia-container-toolkit-base", [], ["nvidia-ctk", "nvidia-container-runtime"]),
    ("nvidia-container-toolkit", ["nvidia-container-toolkit-base (= {v})", "libnvidia-container-tools (= {v})"],
     ["nvidia-container-runtime-hook"]),
]

# Driver releases in the CUDA repository double: the role's default branch and a newer one, which
# the pinning package must keep apt from taking.
DRIVER_VERSIONS = ["580.95.05-1", "590.44.01-1"]
# Debian's packaging relations (nvidia-graphics-drivers 535.261.03-1 in bookworm), trimmed to these packages.
DRIVER_PACKAGES = [  # name, depends, recommends, programs
    ("nvidia-driver", ["nvidia-kernel-dkms (= {v})"], ["nvidia-persistenced"], []),
    ("nvidia-kernel-dkms", [], ["nvidia-driver (>= {u}) | libcuda1 (>= {u})"], []),
    ("nvidia-smi", ["libnvidia-ml1 (= {v})"], ["nvidia-kernel-dkms (= {v})"], ["nvidia-smi"]),
    ("libnvidia-ml1", [], [], []),
    ("libcuda1", [], ["nvidia-smi"], []),
    ("nvidia-persistenced", [], [], ["nvidia-persistenced"]),
]
# What nvidia-smi says without a driver loaded (exit code 9), as the real one does in a container.
NVIDIA_SMI = """#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA \
driver is installed and running. (test double {v})"
exit 9
"""
PERSISTENCED = """#!/bin/sh
echo "nvidia-persistenced failed to initialize. Check syslog for more details. (test double {v})" >&2
exit 1
"""
PERSISTENCED_UNIT = """[Unit]
Description=NVIDIA Persistence Daemon (test double)
Wants=syslog.target

[Service]
Type=forking
ExecStart=/usr/bin/nvidia-persistenced --verbose
ExecStopPost=/bin/rm -rf /var/run/nvidia-persistenced

[Install]
WantedBy=multi-user.target
"""
# dh_installsystemd's postinst snippet: systemd learns about the new unit.
POSTINST_RELOAD = """#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
"""

K3S = '''#!/usr/bin/python3
"""TEST DOUBLE of the k3s binary (k3s releases are not reachable here)."""
import os, socket, sys, time
if len(sys.argv) > 1 and sys.argv[1] in ("--version", "-v"):
    print("k3s version %s (test-double)" % "{version}")
    print("go version go1.22.9")
    sys.exit(0)
if len(sys.argv) > 1 and sys.argv[1] == "agent":
    address = os.environ.get("NOTIFY_SOCKET")
    if address:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect("\\0" + address[1:] if address.startswith("@") else address)
        sock.sendall(b"READY=1")
    while True:
        time.sleep(3600)
print("k3s (test double): unsupported command %s" % sys.argv[1:], file=sys.stderr)
sys.exit(1)
'''


def build_deb(out, name, version, arch="amd64", depends=(), recommends=(), files=None, scripts=None, about=None):
    """A real .deb (dpkg-deb) whose payload only says it is a test double."""
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "DEBIAN"))
        control = ["Package: %s" % name, "Version: %s" % version, "Architecture: %s" % arch,
                   "Maintainer: homelab.inference tests <tests@example.invalid>", "Section: utils", "Priority: optional"]
        if depends:
            control.append("Depends: " + ", ".join(depends))
        if recommends:
            control.append("Recommends: " + ", ".join(recommends))
        control += ["Description: TEST DOUBLE of NVIDIA's %s" % name,
                    " Built by the homelab.inference gpu_worker scenario; %s." % (about or "it does nothing")]
        with open(os.path.join(root, "DEBIAN", "control"), "w") as handle:
            handle.write("\n".join(control) + "\n")
        for script, text in (scripts or {}).items():
            path = os.path.join(root, "DEBIAN", script)
            with open(path, "w") as handle:
                handle.write(text)
            os.chmod(path, 0o755)
        # Every Debian package ships at least its copyright file; dpkg treats a
        # package without any file as gone when others unpack in the same run.
        files = dict(files or {})
        files["usr/share/doc/%s/copyright" % name] = (
            "TEST DOUBLE of NVIDIA's %s, built by the homelab.inference gpu_worker scenario.\n" % name, 0o644)
        for relative, (text, mode) in files.items():
            path = os.path.join(root, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as handle:
                handle.write(text)
            os.chmod(path, mode)
        target = os.path.join(out, "%s_%s_%s.deb" % (name, version, arch))
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", root, target], check=True,
                       stdout=subprocess.DEVNULL)
        return target


def build_toolkit(out, version):
    for name, depends, programs in PACKAGES:
        build_deb(out, name, version, depends=[d.format(v=version) for d in depends],
                  files={"usr/bin/%s" % p: ("#!/bin/sh\necho '%s %s (test double)'\n" % (p, version), 0o755)
                         for p in programs})


RAW_BLOCK = 0


def zstd_frame(data):
    """``data`` as one zstd frame of raw (stored) blocks: a valid .zst (RFC 8878), with no zstd library."""
    # Frame header: magic, descriptor 0xA0 (single segment, 4-byte content size, no checksum), content size.
    frame = struct.pack("<IBI", 0xFD2FB528, 0xA0, len(data))
    chunks = [data[i:i + 128 * 1024] for i in range(0, len(data), 128 * 1024)] or [b""]
    for index, chunk in enumerate(chunks):
        last = 1 if index == len(chunks) - 1 else 0
        # Block header (3 bytes, little endian): last-block bit, block type 0 (raw), size.
        frame += struct.pack("<I", last | (RAW_BLOCK << 1) | (len(chunk) << 3))[:3] + chunk
    return frame


def sha256_file(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def build_k3s(out, version):
    binary = os.path.join(out, "k3s")
    with open(binary, "w") as handle:
        handle.write(K3S.replace("{version}", version))
    os.chmod(binary, 0o755)
    note = ("TEST DOUBLE of k3s's air-gap images archive for %s (amd64): it holds this note, not the images.\n"
            % version).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("TEST-DOUBLE.txt")
        info.size, info.mtime, info.mode = len(note), 0, 0o644
        tar.addfile(info, io.BytesIO(note))
    images = os.path.join(out, "k3s-airgap-images-amd64.tar.zst")
    with open(images, "wb") as handle:
        handle.write(zstd_frame(buffer.getvalue()))
    # The release's sha256sum-<arch>.txt: the images archives' sums, then the binary's ("<sha256>  <file>").
    with open(os.path.join(out, "sha256sum-amd64.txt"), "w") as handle:
        handle.write("%s  k3s-airgap-images-amd64.tar.zst\n%s  k3s\n" % (sha256_file(images), sha256_file(binary)))


def build_cuda_repository(out):
    os.makedirs(out, exist_ok=True)
    debs = []
    for version in DRIVER_VERSIONS:
        upstream = version.split("-")[0]
        branch = upstream.split(".")[0]
        for name, depends, recommends, programs in DRIVER_PACKAGES:
            files, scripts = {}, {}
            if "nvidia-smi" in programs:
                files["usr/bin/nvidia-smi"] = (NVIDIA_SMI.format(v=version), 0o755)
            if "nvidia-persistenced" in programs:
                files["usr/bin/nvidia-persistenced"] = (PERSISTENCED.format(v=version), 0o755)
                files["lib/systemd/system/nvidia-persistenced.service"] = (PERSISTENCED_UNIT, 0o644)
                scripts["postinst"] = POSTINST_RELOAD
            debs.append(build_deb(out, name, version, depends=[d.format(v=version, u=upstream) for d in depends],
                                  recommends=[r.format(v=version, u=upstream) for r in recommends],
                                  files=files, scripts=scripts))
        # NVIDIA's way to follow a branch on Debian (driver installation guide, version locking): apt preferences.
        preferences = ("# TEST DOUBLE of NVIDIA's nvidia-driver-pinning-%s: the driver's packages stay on branch %s.\n"
                       "Package: nvidia-driver nvidia-kernel-dkms nvidia-smi libcuda1 libnvidia-ml1 "
                       "nvidia-persistenced\nPin: version %s.*\nPin-Priority: 1000\n" % (branch, branch, branch))
        debs.append(build_deb(out, "nvidia-driver-pinning-%s" % branch, "%s-1" % branch, arch="all",
                              files={"etc/apt/preferences.d/nvidia-driver-pinning-%s" % branch: (preferences, 0o644)},
                              about="it locks apt to driver branch %s" % branch))
    paragraphs = []
    for deb in sorted(debs):
        fields = subprocess.run(["dpkg-deb", "--field", deb], check=True, capture_output=True, text=True).stdout
        with open(deb, "rb") as handle:
            data = handle.read()
        paragraphs.append(fields.rstrip("\n") + "\nFilename: ./%s\nSize: %d\nMD5sum: %s\nSHA256: %s\n" % (
            os.path.basename(deb), len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()))
    packages = "\n".join(paragraphs).encode()
    with open(os.path.join(out, "Packages"), "wb") as handle:
        handle.write(packages)
    with open(os.path.join(out, "Packages.gz"), "wb") as handle:
        handle.write(gzip.compress(packages, mtime=0))
    release = ["Origin: NVIDIA (test double)", "Label: NVIDIA CUDA (test double)", "Architectures: amd64 all",
               "Date: %s" % email.utils.formatdate(usegmt=True)]
    for field, digest in (("MD5Sum", hashlib.md5), ("SHA256", hashlib.sha256)):
        release.append("%s:" % field)
        for name in ("Packages", "Packages.gz"):
            with open(os.path.join(out, name), "rb") as handle:
                data = handle.read()
            release.append(" %s %d %s" % (digest(data).hexdigest(), len(data), name))
    with open(os.path.join(out, "Release"), "w") as handle:
        handle.write("\n".join(release) + "\n")
    sign(out)


def sign(out):
    """InRelease and Release.gpg with a key made for this run; the key where NVIDIA serves its own (3bf863cc.pub)."""
    if not shutil.which("gpg"):
        sys.exit("build_test_doubles: gpg is missing (Debian package gnupg); it signs the CUDA repository double")
    with tempfile.TemporaryDirectory() as home:
        gpg = ["gpg", "--homedir", home, "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run(gpg + ["--quick-gen-key", "homelab.inference test mirror <tests@example.invalid>", "rsa3072",
                              "sign", "never"], check=True)
        subprocess.run(gpg + ["--clearsign", "--output", os.path.join(out, "InRelease"),
                              os.path.join(out, "Release")], check=True)
        subprocess.run(gpg + ["--armor", "--detach-sign", "--output", os.path.join(out, "Release.gpg"),
                              os.path.join(out, "Release")], check=True)
        with open(os.path.join(out, "3bf863cc.pub"), "wb") as handle:
            handle.write(subprocess.run(gpg + ["--armor", "--export"], check=True, capture_output=True).stdout)
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)


def main():
    out = sys.argv[1]
    toolkit_version = sys.argv[2] if len(sys.argv) > 2 else "1.18.1-1"
    k3s_version = sys.argv[3] if len(sys.argv) > 3 else "v1.31.4+k3s1"
    for part in ("toolkit", "k3s"):
        os.makedirs(os.path.join(out, part), exist_ok=True)
    build_toolkit(os.path.join(out, "toolkit"), toolkit_version)
    build_k3s(os.path.join(out, "k3s"), k3s_version)
    build_cuda_repository(os.path.join(out, "cuda", "debian12", "x86_64"))


if __name__ == "__main__":
    main()
