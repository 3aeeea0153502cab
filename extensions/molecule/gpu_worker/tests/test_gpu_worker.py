"""The GPU workers after converge: testinfra against the Debian 12 systemd containers.

gpu-worker takes the default driver source (NVIDIA's CUDA repository, a TEST
DOUBLE served in the container, branch 580); gpu-worker-debian takes Debian's
own archive (real packages, 535). Tests for one of them skip on the other.

molecule runs testinfra over Ansible, where every command is a module run of
a second or more: the facts are read in a few batched commands per host."""

import os
import re

import pytest
import yaml

CUDA_HOST = "gpu-worker"
DEBIAN_HOST = "gpu-worker-debian"
ARTIFACTS = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ""), "artifacts")
IMAGES = "/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst"
GPU_MODE = "/usr/local/bin/gpu-mode"
GPU_MODE_TOKEN = "/etc/homelab-inference/gpu-mode.token"
GPU_MODE_CONFIG = "/etc/homelab-inference/gpu-mode.json"
FILES = ["/usr/local/bin/k3s", IMAGES, "/etc/systemd/system/k3s-agent.service.env",
         "/etc/modprobe.d/blacklist-nouveau.conf", "/etc/modprobe.d/nvidia-drm.conf",
         "/usr/bin/nvidia-container-runtime", GPU_MODE, GPU_MODE_TOKEN, GPU_MODE_CONFIG]
_CACHE = {}


def name_of(host):
    return host.backend.get_hostname()


def only_on(host, name):
    if name_of(host) != name:
        pytest.skip("for %s" % name)


def branch_of(host):
    return "580" if name_of(host) == CUDA_HOST else "535"


def once(host, key, command):
    if (name_of(host), key) not in _CACHE:
        _CACHE[name_of(host), key] = host.check_output(command)
    return _CACHE[name_of(host), key]


def packages(host):
    """Installed package -> version, in one dpkg-query."""
    out = once(host, "packages", "dpkg-query --show --showformat='${db:Status-Abbrev}|${Package}|${Version}\\n'")
    return {name: version for status, name, version in (line.split("|") for line in out.splitlines())
            if status.startswith("ii")}


def files(host):
    """Mode, owner, type and sha256 of FILES, in one command ('missing' for an absent file)."""
    script = "; ".join("stat -c '%%n|%%a|%%U|%%F' %s 2>/dev/null && sha256sum %s | cut -d' ' -f1 || echo '%s|missing'"
                       % (path, path, path) for path in FILES)
    lines = iter(once(host, "files", script).splitlines())
    facts = {}
    for line in lines:
        fields = line.split("|")
        facts[fields[0]] = None if fields[1] == "missing" else {
            "mode": int(fields[1], 8), "user": fields[2], "type": fields[3], "sha256": next(lines)}
    return facts


def release_sums():
    """The release's sha256sum-amd64.txt (the TEST DOUBLES' own): file name -> sha256."""
    with open(os.path.join(ARTIFACTS, "k3s", "sha256sum-amd64.txt")) as handle:
        return {name: digest for digest, name in (line.split() for line in handle if line.strip())}


# -- the driver ----------------------------------------------------------------------------------


def test_driver_and_what_the_container_toolkit_needs_at_the_branch(host):
    # The toolkit's CDI generation needs the CUDA driver library (libcuda1) and NVML (libnvidia-ml1);
    # neither is a dependency of nvidia-driver, so the role must ask for them.
    installed = packages(host)
    driver = installed.get("nvidia-driver", "")
    assert driver.startswith(branch_of(host) + "."), driver
    for name in ("libcuda1", "libnvidia-ml1", "nvidia-smi"):
        assert installed.get(name) == driver, name
    assert "firmware-misc-nonfree" in installed


def test_kernel_headers_for_dkms(host):
    # DKMS only recommends the headers; in a container the running kernel is the host's, so the role
    # installs Debian's metapackage and DKMS builds for Debian's kernel.
    assert "linux-headers-amd64" in packages(host)
    kernels = [name[len("linux-headers-"):] for name in packages(host)
               if re.match(r"^linux-headers-\d.*-amd64$", name)]
    assert kernels
    # where DKMS looks for a kernel's build tree
    assert host.file("/lib/modules/%s/build/Makefile" % kernels[0]).exists, kernels


def test_dkms_built_the_module_for_debians_kernel(host):
    only_on(host, DEBIAN_HOST)
    status = host.check_output("dkms status; ls /lib/modules/*/updates/dkms/")
    match = re.search(r"^nvidia-current/(535\.[\d.]+), (\S+), x86_64: installed$", status, re.M)
    assert match, status
    assert packages(host)["nvidia-kernel-dkms"].startswith(match.group(1))
    assert re.search(r"^nvidia-current\.ko$", status, re.M), status


def test_debian_nonfree_components_as_deb822_sources_with_the_security_suite(host):
    sources = host.check_output("cat /etc/apt/sources.list.d/debian-nvidia.sources; echo ====; "
                                "cat /etc/apt/sources.list.d/debian-nvidia-security.sources")
    source, security = sources.split("====")
    assert "Components: contrib non-free non-free-firmware" in source
    assert "Suites: bookworm bookworm-updates" in source
    assert "URIs: http://deb.debian.org/debian-security" in security
    assert "Suites: bookworm-security" in security
    assert "Components: contrib non-free non-free-firmware" in security


def test_the_driver_is_debians_newest_with_its_security_updates(host):
    only_on(host, DEBIAN_HOST)
    policy = host.check_output("apt-cache policy nvidia-driver")
    installed = re.search(r"Installed: (\S+)", policy).group(1)
    candidate = re.search(r"Candidate: (\S+)", policy).group(1)
    assert installed == candidate, policy
    # Debian publishes the driver's security fixes in bookworm-security only (535.309.01-0+deb12u1 at the time of writing).
    assert "bookworm-security/non-free amd64 Packages" in policy, policy


def test_the_cuda_repository_as_a_signed_deb822_source(host):
    only_on(host, CUDA_HOST)
    source = host.file("/etc/apt/sources.list.d/nvidia-cuda.sources").content_string
    assert "URIs: http://127.0.0.1:8080/compute/cuda/repos/debian12/x86_64/" in source
    assert "Suites: /" in source
    keyring = re.search(r"Signed-By: (\S+)", source).group(1)
    assert "BEGIN PGP PUBLIC KEY BLOCK" in host.file(keyring).content_string


def test_apt_stays_on_the_branch(host):
    # The repository also offers 590: NVIDIA's pinning package keeps apt on 580, upgrades included.
    only_on(host, CUDA_HOST)
    installed = packages(host)
    assert "nvidia-driver-pinning-580" in installed and "nvidia-driver-pinning-590" not in installed
    names = ("nvidia-driver", "libcuda1", "libnvidia-ml1", "nvidia-smi", "nvidia-persistenced")
    out = host.check_output("apt-cache policy %s; echo ====; apt-get --simulate upgrade" % " ".join(names))
    policies, upgrade = out.split("====")
    for name, policy in zip(names, re.split(r"^(?=\S+:$)", policies.strip(), flags=re.M)[1:]):
        assert policy.startswith(name + ":") and "590.44.01-1" in policy, policy
        assert re.search(r"Candidate: 580\.", policy), policy
    assert "0 upgraded" in upgrade, upgrade


def test_nouveau_blacklisted_and_modeset(host):
    facts = files(host)
    blacklist = facts["/etc/modprobe.d/blacklist-nouveau.conf"]
    assert blacklist["mode"] == 0o644 and blacklist["user"] == "root"
    text = host.check_output("cat /etc/modprobe.d/blacklist-nouveau.conf /etc/modprobe.d/nvidia-drm.conf")
    assert "blacklist nouveau" in text
    assert "options nouveau modeset=0" in text
    assert "options nvidia-drm modeset=1" in text


def test_persistence_daemon_enabled_but_not_started_without_a_gpu(host):
    states = host.run("systemctl is-enabled nvidia-persistenced; systemctl is-active nvidia-persistenced").stdout
    enabled, active = states.split()
    assert enabled == "enabled"
    assert active != "active", "no GPU here: the role must not start it"


# -- the container toolkit -----------------------------------------------------------------------


def test_container_toolkit_from_the_local_packages(host):
    installed = packages(host)
    for name in ("libnvidia-container1", "libnvidia-container-tools", "nvidia-container-toolkit-base",
                 "nvidia-container-toolkit"):
        assert installed.get(name) == "1.18.1-1", name
    assert files(host)["/usr/bin/nvidia-container-runtime"]["mode"] == 0o755


def test_no_containerd_config_written_by_nvidia_ctk(host):
    # k3s writes the runtime itself; the role only sets the default runtime through a drop-in.
    out = host.check_output("test ! -e /var/lib/rancher/k3s/agent/etc/containerd/config.toml && echo absent; "
                            "cat /etc/rancher/k3s/config.yaml.d/90-nvidia-runtime.yaml")
    assert out.startswith("absent\n"), out
    assert yaml.safe_load(out[len("absent\n"):]) == {"default-runtime": "nvidia"}


# -- k3s -------------------------------------------------------------------------------------------


def test_k3s_binary_at_the_pinned_version(host):
    binary = files(host)["/usr/local/bin/k3s"]
    assert binary["mode"] == 0o755 and binary["user"] == "root"
    assert binary["sha256"] == release_sums()["k3s"]
    assert "k3s version v1.31.4+k3s1" in host.check_output("/usr/local/bin/k3s --version")


def test_k3s_air_gap_images_where_the_agent_imports_them(host):
    # docs.k3s.io, Air-Gap Install: the archive in the agent's images directory, imported when k3s starts.
    images = files(host)[IMAGES]
    assert images, "%s is missing" % IMAGES
    assert images["type"] == "regular file" and images["mode"] == 0o644 and images["user"] == "root"
    assert images["sha256"] == release_sums()["k3s-airgap-images-amd64.tar.zst"]


def test_k3s_config(host):
    config = yaml.safe_load(host.file("/etc/rancher/k3s/config.yaml").content_string)
    assert config["node-label"] == ["nvidia.com/gpu=true", "gpu-type=rtx3060"]
    assert config["node-taint"] == ["gpu=true:NoSchedule"]
    assert config["node-ip"] == "100.64.0.30" and config["flannel-iface"] == "tailscale0"
    assert config["node-name"] == name_of(host)


def test_token_file_is_private(host):
    env = files(host)["/etc/systemd/system/k3s-agent.service.env"]
    assert env["mode"] == 0o600 and env["user"] == "root"
    text = host.file("/etc/systemd/system/k3s-agent.service.env").content_string
    assert "K3S_URL=https://k3s-master.test:6443" in text
    assert "K3S_TOKEN=K10-test-token-for-the-scenario" in text


def test_unit_and_service(host):
    out = host.check_output("cat /etc/systemd/system/k3s-agent.service; echo ====; "
                            "systemctl is-enabled k3s-agent; systemctl is-active k3s-agent")
    unit, states = out.split("====")
    assert "ExecStart=/usr/local/bin/k3s agent" in unit
    assert "EnvironmentFile=/etc/systemd/system/k3s-agent.service.env" in unit
    assert states.split() == ["enabled", "active"]


# -- the gpu-mode command and the boot mode ------------------------------------------------------


def test_gpu_mode_runs_on_the_hosts_python_without_ansible_and_keeps_its_token_private(host):
    facts = files(host)
    assert (facts[GPU_MODE_TOKEN]["mode"], facts[GPU_MODE_TOKEN]["user"]) == (0o600, "root")
    assert facts[GPU_MODE]["mode"] == 0o755 and facts[GPU_MODE_CONFIG]["mode"] == 0o644
    assert host.file(GPU_MODE_TOKEN).content_string == "gpu-mode-test-token-for-the-scenario\n"
    assert "gpu-mode-test-token" not in host.file(GPU_MODE_CONFIG).content_string
    assert host.run("python3 -I -c 'import ansible'").rc != 0, "Ansible must not be what makes it work"
    # The agent never joined (there is no server here), so the cluster's CA is not there yet: one line, exit 2.
    assert not host.file("/var/lib/rancher/k3s/agent/server-ca.crt").exists
    status = host.run("gpu-mode status")
    assert (status.rc, status.stdout) == (2, "")
    assert status.stderr == ("gpu-mode: /etc/homelab-inference/gpu-mode.json: ca_file names "
                             "/var/lib/rancher/k3s/agent/server-ca.crt, which is not a readable CA certificate (No "
                             "such file or directory); on a k3s agent it is /var/lib/rancher/k3s/agent/server-ca.crt "
                             "once the agent joined\n")


def test_the_boot_mode_is_a_oneshot_after_the_agent_that_runs_gpu_mode_boot(host):
    out = host.check_output("cat /etc/systemd/system/gpu-mode-boot.service; echo ====; "
                            "systemctl is-enabled gpu-mode-boot; systemctl start gpu-mode-boot || true; "
                            "systemctl show gpu-mode-boot --property=Result --value; "
                            "journalctl -u gpu-mode-boot --no-pager -o cat | grep '^gpu-mode: ' || true")
    unit, states = out.split("====")
    assert "ExecStart=/usr/local/bin/gpu-mode boot" in unit and "Type=oneshot" in unit
    assert "After=network-online.target k3s-agent.service" in unit
    enabled, result, logged = states.strip().splitlines()[:3]
    # Started here, it fails as the command does without the cluster's CA: the unit runs the command.
    assert (enabled, result) == ("enabled", "exit-code")
    assert logged.startswith("gpu-mode: /etc/homelab-inference/gpu-mode.json: ca_file names ")
