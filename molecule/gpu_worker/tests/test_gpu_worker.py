"""The GPU worker after converge: testinfra against the Debian 12 systemd container."""

import yaml


def test_driver_packages_at_the_pinned_branch(host):
    driver = host.package("nvidia-driver")
    assert driver.is_installed and driver.version.startswith("535.")
    assert host.package("nvidia-smi").version.startswith("535.")
    assert host.package("firmware-misc-nonfree").is_installed


def test_debian_nonfree_components_as_a_deb822_source(host):
    source = host.file("/etc/apt/sources.list.d/debian-nvidia.sources")
    assert source.exists
    assert "Components: contrib non-free non-free-firmware" in source.content_string
    assert "Suites: bookworm bookworm-updates" in source.content_string


def test_nouveau_blacklisted_and_modeset(host):
    blacklist = host.file("/etc/modprobe.d/blacklist-nouveau.conf")
    assert blacklist.mode == 0o644 and blacklist.user == "root"
    assert "blacklist nouveau" in blacklist.content_string
    assert "options nouveau modeset=0" in blacklist.content_string
    assert "options nvidia-drm modeset=1" in host.file("/etc/modprobe.d/nvidia-drm.conf").content_string


def test_persistence_daemon_enabled_but_not_started_without_a_gpu(host):
    service = host.service("nvidia-persistenced")
    assert service.is_enabled
    assert not service.is_running, "no GPU here: the role must not start it"


def test_container_toolkit_from_the_local_packages(host):
    for name in ("libnvidia-container1", "libnvidia-container-tools", "nvidia-container-toolkit-base",
                 "nvidia-container-toolkit"):
        package = host.package(name)
        assert package.is_installed and package.version == "1.18.1-1", name
    assert host.file("/usr/bin/nvidia-container-runtime").mode == 0o755


def test_no_containerd_config_written_by_nvidia_ctk(host):
    # k3s writes the runtime itself; the role only sets the default runtime through a drop-in.
    assert not host.file("/var/lib/rancher/k3s/agent/etc/containerd/config.toml").exists
    drop_in = host.file("/etc/rancher/k3s/config.yaml.d/90-nvidia-runtime.yaml")
    assert yaml.safe_load(drop_in.content_string) == {"default-runtime": "nvidia"}


def test_k3s_binary_at_the_pinned_version(host):
    binary = host.file("/usr/local/bin/k3s")
    assert binary.mode == 0o755 and binary.user == "root"
    assert "k3s version v1.31.4+k3s1" in host.check_output("/usr/local/bin/k3s --version")


def test_k3s_config(host):
    config = yaml.safe_load(host.file("/etc/rancher/k3s/config.yaml").content_string)
    assert config["node-label"] == ["nvidia.com/gpu=true", "gpu-type=rtx3060"]
    assert config["node-taint"] == ["gpu=true:NoSchedule"]
    assert config["node-ip"] == "100.64.0.30" and config["flannel-iface"] == "tailscale0"
    assert config["node-name"] == "gpu-worker"


def test_token_file_is_private(host):
    env = host.file("/etc/systemd/system/k3s-agent.service.env")
    assert env.mode == 0o600 and env.user == "root"
    assert "K3S_URL=https://k3s-master.test:6443" in env.content_string
    assert "K3S_TOKEN=K10-test-token-for-the-scenario" in env.content_string


def test_unit_and_service(host):
    unit = host.file("/etc/systemd/system/k3s-agent.service")
    assert "ExecStart=/usr/local/bin/k3s agent" in unit.content_string
    assert "EnvironmentFile=/etc/systemd/system/k3s-agent.service.env" in unit.content_string
    service = host.service("k3s-agent")
    assert service.is_enabled and service.is_running
