"""The GPU-worker roles refuse bad input with one line, before any change
(run on this machine, in check mode, so nothing could change anyway)."""

from __future__ import annotations

import hashlib
import json

import pytest

from helpers import ansible_playbook

PLAYBOOK = "tests/project/playbooks/host_preflight.yml"
DEBIAN_12 = ["-e", "fact_distribution=Debian", "-e", "fact_distribution_major_version=12"]
UBUNTU_2204 = ["-e", "fact_distribution=Ubuntu", "-e", "fact_distribution_version=22.04"]
K3S_JOIN = ["-e", "k3s_agent_server_url=https://k3s:6443", "-e", "k3s_agent_token=x"]
VLLM = "docker.io/vllm/vllm-openai:v0.32.0"
# vLLM v0.32.0 is built on CUDA 13.0 (13.0.3; see VLLM_TAG_CUDA in plugins/plugin_utils/_cuda_driver.py for the
# evidence); CUDA 13.0 GA needs 580.65.06 (release notes, Table 3).
TOO_OLD = "cannot run %s (CUDA 13.0.3 needs driver 580.65.06 or later; CUDA forward compatibility does not work on " \
          "GeForce cards); " % VLLM

CASES = {
    "unsupported distribution": (
        "nvidia_driver", ["-e", "fact_distribution=Fedora", "-e", "fact_distribution_version=41",
                          "-e", "fact_distribution_major_version=41"],
        "nvidia_driver: Fedora-41 is not supported; use Debian 12/13 or Ubuntu 22.04/24.04"),
    "branch not in Debian's archive": (
        "nvidia_driver", DEBIAN_12 + ["-e", "nvidia_driver_source=distribution", "-e", "nvidia_driver_branch=550"],
        "nvidia_driver_branch: 550 is not available on Debian-12 from its archive; use one of 535"),
    "the replaced CUDA repository switch": (
        "nvidia_driver", DEBIAN_12 + ["-e", '{"nvidia_driver_cuda_repo": true}'],
        "nvidia_driver_cuda_repo: replaced by nvidia_driver_source (cuda for NVIDIA's CUDA repository"),
    "branch not in the archive nor in the CUDA repository": (
        "nvidia_driver", UBUNTU_2204 + ["-e", "nvidia_driver_source=cuda", "-e", "nvidia_driver_branch=590"],
        "nvidia_driver_branch: 590 is not available on Ubuntu-22.04 from the CUDA repository; use one of 580, 575, "
        "570, 565, 560, 550, 535, 470"),
    # Debian 12's archive has only 535 (535.261.03 in bookworm, 535.309.01 in bookworm-security).
    "Debian's archive cannot run the vLLM image": (
        "nvidia_driver", DEBIAN_12 + ["-e", "nvidia_driver_source=distribution"],
        "nvidia_driver_branch: 535 " + TOO_OLD + "use nvidia_driver_source: cuda with branch 580 (the NVIDIA CUDA "
        "repository)"),
    "a CUDA repository branch too old for the vLLM image": (
        "nvidia_driver", DEBIAN_12 + ["-e", "nvidia_driver_branch=565"],
        "nvidia_driver_branch: 565 " + TOO_OLD + "use nvidia_driver_source: cuda with branch 580"),
    "an Ubuntu branch too old for the vLLM image": (
        "nvidia_driver", UBUNTU_2204 + ["-e", "nvidia_driver_branch=535"],
        "nvidia_driver_branch: 535 " + TOO_OLD + "use branch 580 from the distribution"),
    # 570 ran v0.11.0's CUDA 12.8; CUDA 13.0 needs the 580 branch.
    "an Ubuntu 570 branch too old for CUDA 13.0": (
        "nvidia_driver", UBUNTU_2204 + ["-e", "nvidia_driver_branch=570"],
        "nvidia_driver_branch: 570 " + TOO_OLD + "use branch 580 from the distribution"),
    "a vLLM image whose CUDA is not recorded": (
        "nvidia_driver", DEBIAN_12 + ["-e", "nvidia_driver_vllm_image=docker.io/vllm/vllm-openai:v0.99.0"],
        "nvidia_driver_vllm_image: no CUDA version recorded for docker.io/vllm/vllm-openai:v0.99.0 (known tags: "
        "v0.11.0, v0.32.0); add the tag's ARG CUDA_VERSION"),
    "missing token": (
        "k3s_agent", ["-e", "k3s_agent_server_url=https://k3s:6443"],
        "k3s_agent_server_url must be the server's https URL (got 'https://k3s:6443'), k3s_agent_token must be set"),
    "missing server URL": (
        "k3s_agent", ["-e", "k3s_agent_token=x"],
        "k3s_agent_server_url must be the server's https URL (got '')"),
    # k3s releases amd64, arm64, arm (armhf) and s390x (install.sh setup_verify_arch); a GPU worker is one of the first two.
    "an architecture without a GPU worker k3s": (
        "k3s_agent", K3S_JOIN + ["-e", "fact_architecture=armv7l"],
        "k3s_agent: armv7l is not supported; the GPU worker must be x86_64 (k3s) or aarch64 (k3s-arm64)"),
    "local toolkit without packages": (
        "nvidia_container_toolkit", ["-e", "nvidia_container_toolkit_source=local"],
        "nvidia_container_toolkit_deb_dir: empty, but nvidia_container_toolkit_source is local"),
}


def one_failure(result):
    assert result.returncode != 0
    output = result.stdout + result.stderr
    prefix = "[ERROR]: Task failed: Action failed: "
    failures = [line[len(prefix):] for line in output.splitlines() if line.startswith(prefix)]
    assert len(failures) == 1, output[-2500:]
    assert "changed=0" in output
    return failures[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_in_preflight_with_one_line(case):
    role, extra, expected = CASES[case]
    result = ansible_playbook(PLAYBOOK, "--check", "-e", "role=%s" % role, *extra)
    failure = one_failure(result)
    assert failure.startswith(expected), failure


@pytest.mark.parametrize("extra, branch, packages", [
    # Debian's default: NVIDIA's CUDA repository, locked to 580 by its pinning package, then the driver,
    # and what the toolkit's CDI generation needs (libcuda1, libnvidia-ml1, nvidia-smi) and the headers DKMS needs.
    (DEBIAN_12, "580", "nvidia-driver-pinning-580, nvidia-driver=580.*, nvidia-smi=580.*, libcuda1=580.*, "
                       "libnvidia-ml1=580.*, firmware-misc-nonfree, linux-headers-amd64, nvidia-persistenced=580.*"),
    (DEBIAN_12 + ["-e", "nvidia_driver_source=distribution", "-e", "nvidia_driver_vllm_image="], "535",
     "nvidia-driver=535.*, nvidia-smi=535.*, libcuda1=535.*, libnvidia-ml1=535.*, firmware-misc-nonfree, "
     "linux-headers-amd64, nvidia-persistenced=535.*"),
    (DEBIAN_12 + ["-e", '{"nvidia_driver_headless": true}', "-e", "nvidia_driver_kernel_headers=linux-headers-cloud-amd64"],
     "580", "nvidia-driver-pinning-580, nvidia-kernel-dkms=580.*, nvidia-smi=580.*, libcuda1=580.*, "
            "libnvidia-ml1=580.*, firmware-misc-nonfree, linux-headers-cloud-amd64, nvidia-persistenced=580.*"),
])
def test_the_defaults_plan_a_driver_that_runs_the_vllm_image(extra, branch, packages):
    # This machine is a container: its running kernel is the host's, so the plan takes the architecture's headers.
    result = ansible_playbook(PLAYBOOK, "--check", "-e", "role=nvidia_driver", "-e", "fact_architecture=x86_64",
                              "-e", "fact_virtualization_role=guest", "-e", "fact_virtualization_type=podman",
                              *extra)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2500:]
    assert "Install the driver packages (branch %s)" % branch in output
    assert " ".join(output.split()).count("Would install %s once" % packages) == 1, output[-3000:]


def test_initramfs_is_rebuilt_before_the_reboot(tmp_path):
    """The nouveau blacklist notifies the initramfs rebuild; the reboot must boot an initramfs that has it.

    A made-up PCI tree with an NVIDIA display device and no working nvidia-smi lead the role to its reboot,
    which ansible refuses over a local connection ("would reboot the control node"), so nothing reboots here."""
    device = tmp_path / "0000:01:00.0"
    device.mkdir()
    (device / "vendor").write_text("0x10de\n")
    (device / "class").write_text("0x030000\n")
    result = ansible_playbook(PLAYBOOK, "--check", "-e", "role=nvidia_driver", *DEBIAN_12,
                              "-e", "_nvidia_driver_pci_devices=%s" % tmp_path, "-e", '{"nvidia_driver_reboot": true}',
                              "-e", "fact_virtualization_role=host", "-e", "fact_virtualization_type=kvm")
    output = result.stdout + result.stderr
    events = [line.split("]")[0] + "]" for line in output.splitlines() if line.startswith(("TASK [", "RUNNING HANDLER ["))]
    rebuild = "RUNNING HANDLER [homelab.inference.nvidia_driver : Rebuild the initramfs]"
    reboot = "TASK [homelab.inference.nvidia_driver : Reboot into the new driver]"
    assert reboot in events, output[-3000:]
    assert "would reboot the control node" in output
    assert rebuild in events and events.index(rebuild) < events.index(reboot), "\n".join(events)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def airgap_dir(path, arch, names):
    """A k3s release's air-gap files for one architecture (TEST DOUBLES: their content is not k3s's)."""
    path.mkdir(exist_ok=True)
    lines = []
    for name in names:
        (path / name).write_bytes(("TEST DOUBLE of %s\n" % name).encode())
        lines.append("%s  %s" % (sha256(path / name), name))
    (path / ("sha256sum-%s.txt" % arch)).write_text("\n".join(lines) + "\n")
    return path


def k3s_check(directory, arch, *extra):
    return ansible_playbook(PLAYBOOK, "--check", "-e", "role=k3s_agent", *K3S_JOIN, "-e", "fact_architecture=%s" % arch,
                            "-e", "k3s_agent_airgap_dir=%s" % directory, *extra)


def test_arm64_air_gap_install_takes_the_arm64_release_files(tmp_path):
    directory = airgap_dir(tmp_path / "k3s", "arm64", ["k3s-arm64", "k3s-airgap-images-arm64.tar.zst"])
    result = k3s_check(directory, "aarch64", "--diff")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-2500:]
    # the diffs of the copies name their sources; the images go to the agent's images directory
    assert "+++ after: %s/k3s-arm64\n" % directory in output
    assert "+++ after: %s/k3s-airgap-images-arm64.tar.zst\n" % directory in output
    assert "path: /var/lib/rancher/k3s/agent/images\n" in output


@pytest.mark.parametrize("arch, sums, names, tamper, expected", [
    # an amd64 directory on an arm64 worker: the arm64 files and their checksum file are missing
    ("aarch64", "amd64", ["k3s", "k3s-airgap-images-amd64.tar.zst"], False,
     "k3s_agent_airgap_dir: k3s-arm64, k3s-airgap-images-arm64.tar.zst in {dir} not checkable: sha256sum-arm64.txt is "
     "missing; put the v1.31.4+k3s1 release's k3s-arm64, k3s-airgap-images-arm64.tar.zst and sha256sum-arm64.txt there"),
    ("x86_64", "amd64", ["k3s"], False,
     "k3s_agent_airgap_dir: k3s-airgap-images-amd64.tar.zst in {dir} missing or not listed with its checksum in "
     "sha256sum-amd64.txt; put the v1.31.4+k3s1 release's k3s, k3s-airgap-images-amd64.tar.zst and sha256sum-amd64.txt "
     "there (or set k3s_agent_airgap_images: false when a private registry serves the images)"),
    ("x86_64", "amd64", ["k3s", "k3s-airgap-images-amd64.tar.zst"], True,
     "k3s_agent_airgap_dir: k3s-airgap-images-amd64.tar.zst in {dir} missing or not listed with its checksum in "
     "sha256sum-amd64.txt"),
])
def test_air_gap_files_are_checked_before_any_change(tmp_path, arch, sums, names, tamper, expected):
    directory = airgap_dir(tmp_path / "k3s", sums, names)
    if tamper:
        (directory / "k3s-airgap-images-amd64.tar.zst").write_bytes(b"not the release's archive\n")
    failure = one_failure(k3s_check(directory, arch))
    assert failure.startswith(expected.format(dir=directory)), failure


def test_air_gap_without_images_when_a_registry_serves_them(tmp_path):
    directory = airgap_dir(tmp_path / "k3s", "amd64", ["k3s"])
    result = k3s_check(directory, "x86_64", "-e", json.dumps({"k3s_agent_airgap_images": False}))
    assert result.returncode == 0, (result.stdout + result.stderr)[-2500:]
    assert "k3s-airgap-images" not in result.stdout
