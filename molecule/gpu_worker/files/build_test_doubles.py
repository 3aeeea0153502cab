#!/usr/bin/env python3
"""TEST DOUBLES for what cannot be downloaded here, built for the gpu_worker
scenario: NVIDIA's container toolkit packages (NVIDIA's repository is not
reachable) and the k3s binary (GitHub releases are not reachable).

- ``toolkit/<package>_<version>_amd64.deb``: real Debian packages (dpkg-deb)
  with the real names, version and dependencies, whose programs only say they
  are test doubles;
- ``k3s/k3s`` and ``k3s/sha256sum-amd64.txt``: a program that answers
  ``--version`` like k3s and, as ``k3s agent``, tells systemd it is ready and
  stays up; with the checksum file k3s releases carry.

Usage: build_test_doubles.py OUTPUT_DIR [TOOLKIT_VERSION] [K3S_VERSION]
"""

import hashlib
import os
import subprocess
import sys
import tempfile

PACKAGES = [  # name, dependencies, programs
    ("libnvidia-container1", [], []),
    ("libnvidia-container-tools", ["libnvidia-container1 (= {v})"], ["nvidia-container-cli"]),
    ("nvidia-container-toolkit-base", [], ["nvidia-ctk", "nvidia-container-runtime"]),
    ("nvidia-container-toolkit", ["nvidia-container-toolkit-base (= {v})", "libnvidia-container-tools (= {v})"],
     ["nvidia-container-runtime-hook"]),
]

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


def build_deb(out, name, depends, programs, version):
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "DEBIAN"))
        control = ["Package: %s" % name, "Version: %s" % version, "Architecture: amd64",
                   "Maintainer: homelab.inference tests <tests@example.invalid>", "Section: utils", "Priority: optional",
                   "Description: TEST DOUBLE of NVIDIA's %s" % name,
                   " Built by the homelab.inference gpu_worker scenario; it does nothing."]
        if depends:
            control.insert(3, "Depends: " + ", ".join(d.format(v=version) for d in depends))
        with open(os.path.join(root, "DEBIAN", "control"), "w") as handle:
            handle.write("\n".join(control) + "\n")
        # Every Debian package ships at least its copyright file; dpkg treats a
        # package without any file as gone when others unpack in the same run.
        docs = os.path.join(root, "usr", "share", "doc", name)
        os.makedirs(docs)
        with open(os.path.join(docs, "copyright"), "w") as handle:
            handle.write("TEST DOUBLE of NVIDIA's %s, built by the homelab.inference gpu_worker scenario.\n" % name)
        os.makedirs(os.path.join(root, "usr", "bin"))
        for program in programs:
            path = os.path.join(root, "usr", "bin", program)
            with open(path, "w") as handle:
                handle.write("#!/bin/sh\necho '%s %s (test double)'\n" % (program, version))
            os.chmod(path, 0o755)
        target = os.path.join(out, "%s_%s_amd64.deb" % (name, version))
        subprocess.run(["dpkg-deb", "--root-owner-group", "--build", root, target], check=True,
                       stdout=subprocess.DEVNULL)


def main():
    out = sys.argv[1]
    toolkit_version = sys.argv[2] if len(sys.argv) > 2 else "1.18.1-1"
    k3s_version = sys.argv[3] if len(sys.argv) > 3 else "v1.31.4+k3s1"
    os.makedirs(os.path.join(out, "toolkit"), exist_ok=True)
    os.makedirs(os.path.join(out, "k3s"), exist_ok=True)
    for name, depends, programs in PACKAGES:
        build_deb(os.path.join(out, "toolkit"), name, depends, programs, toolkit_version)
    binary = os.path.join(out, "k3s", "k3s")
    with open(binary, "w") as handle:
        handle.write(K3S.replace("{version}", k3s_version))
    os.chmod(binary, 0o755)
    with open(binary, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    with open(os.path.join(out, "k3s", "sha256sum-amd64.txt"), "w") as handle:
        handle.write("%s  k3s\n%s  k3s-airgap-images-amd64.tar.zst\n" % (digest, "0" * 64))


if __name__ == "__main__":
    main()
