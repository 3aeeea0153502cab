"""The GPU-worker roles refuse bad input with one line, before any change
(run on this machine, in check mode, so nothing could change anyway)."""

from __future__ import annotations

import pytest

from helpers import ansible_playbook

CASES = {
    "unsupported distribution": (
        "nvidia_driver", ["-e", "ansible_distribution=Fedora", "-e", "ansible_distribution_version=41",
                          "-e", "ansible_distribution_major_version=41"],
        "nvidia_driver: Fedora-41 is not supported; use Debian 12/13 or Ubuntu 22.04/24.04"),
    "branch not in the archive": (
        "nvidia_driver", ["-e", "ansible_distribution=Debian", "-e", "ansible_distribution_major_version=12",
                          "-e", "nvidia_driver_branch=550"],
        "nvidia_driver_branch: 550 is not available on Debian-12; use one of 535"),
    "CUDA repository on Debian": (
        "nvidia_driver", ["-e", "ansible_distribution=Debian", "-e", "ansible_distribution_major_version=12",
                          "-e", '{"nvidia_driver_cuda_repo": true}'],
        "nvidia_driver_cuda_repo: only for Ubuntu; on Debian-12 the driver comes from Debian's non-free component"),
    "branch not in the archive nor in the CUDA repository": (
        "nvidia_driver", ["-e", "ansible_distribution=Ubuntu", "-e", "ansible_distribution_version=22.04",
                          "-e", '{"nvidia_driver_cuda_repo": true}', "-e", "nvidia_driver_branch=590"],
        "nvidia_driver_branch: 590 is not available on Ubuntu-22.04 with the CUDA repository; use one of 535, 550, "
        "570, 470, 560, 565, 575, 580"),
    "missing token": (
        "k3s_agent", ["-e", "k3s_agent_server_url=https://k3s:6443"],
        "k3s_agent_server_url must be the server's https URL (got 'https://k3s:6443'), k3s_agent_token must be set"),
    "missing server URL": (
        "k3s_agent", ["-e", "k3s_agent_token=x"],
        "k3s_agent_server_url must be the server's https URL (got '')"),
    "local toolkit without packages": (
        "nvidia_container_toolkit", ["-e", "nvidia_container_toolkit_source=local"],
        "nvidia_container_toolkit_deb_dir: empty, but nvidia_container_toolkit_source is local"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_in_preflight_with_one_line(case):
    role, extra, expected = CASES[case]
    result = ansible_playbook("tests/project/playbooks/host_preflight.yml", "--check", "-e", "role=%s" % role,
                              *extra)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    prefix = "[ERROR]: Task failed: Action failed: "
    failures = [line[len(prefix):] for line in output.splitlines() if line.startswith(prefix)]
    assert len(failures) == 1 and failures[0].startswith(expected), output[-2500:]
    assert "changed=0" in output
