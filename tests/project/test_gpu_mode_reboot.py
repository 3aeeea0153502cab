"""What a reboot does to the GPU mode. By itself, nothing: the mode is the
vLLM Deployment's spec, which the cluster keeps; after a reboot Kubernetes
starts the Deployment's pods again as they were, so a GPU-free mode stays
GPU-free, and a site.yml run keeps the mode the cluster is in. The GPU
worker's boot mode (its gpu-mode command, role gpu_mode_host) then enters the
catalog's default mode, or keeps the mode, as inference_gpu_boot_policy says.

On the lab, a reboot is `lab down` and `lab up` keeping its state: the API's
objects are kept, the kubelet starts the pods it finds again, and each node
gets a new boot ID (its nodeInfo.bootID, and the node's own boot_id file)."""

from __future__ import annotations

import glob
import os
import re

import pytest
import yaml

from helpers import ROOT, ansible_playbook, gpu_mode_host, gpu_mode_result, install_gpu_mode_host
from lab.cluster import Lab
from lab_fixture import call, start_lab, wait_for

DEPLOYMENT = "/apis/apps/v1/namespaces/ml/deployments/vllm-server"
MODE_LABEL = "homelab.inference/gpu-mode"


def gpu_mode(env, mode):
    return gpu_mode_result(env, mode)


@pytest.fixture(scope="module")
def rebooted(tmp_path_factory):
    """A converged lab switched to gaming, then stopped and started again with its state."""
    base = tmp_path_factory.mktemp("reboot")
    lab = start_lab(base, load_delay=0.5, persist=True)
    os.makedirs(str(base / "tmp"))
    env = {"LAB_STATE_DIR": lab.state_dir, "TMPDIR": str(base / "tmp")}
    try:
        # verify.yml's checks are not the point here (the lab scenario runs them). The host command
        # switches with the gpu-mode ServiceAccount's rights (gpu_mode_access).
        converge = ansible_playbook("site.yml", "--skip-tags", "verify", "-e", "gpu_mode_access_enabled=true",
                                    env=env)
        assert converge.returncode == 0, converge.stdout[-3000:]
        switched = gpu_mode(env, "gaming")
        assert switched["changed"] is True and not switched.get("failed"), switched
        boot_before = call(lab, "GET", "/api/v1/nodes/lab-gpu")[1]["status"]["nodeInfo"]["bootID"]
    finally:
        lab.stop()
    lab = Lab(lab.state_dir, port=lab.port, load_delay=0.5, persist=True).start()
    try:
        wait_for(lambda: call(lab, "GET", "/version")[0] == 200, timeout=10)
        yield {"lab": lab, "env": env, "base": base, "boot_before": boot_before}
    finally:
        lab.stop()


def test_a_gpu_free_mode_survives_a_reboot(rebooted):
    lab = rebooted["lab"]
    deployment = call(lab, "GET", DEPLOYMENT)[1]
    assert deployment["spec"]["replicas"] == 0
    assert deployment["metadata"]["labels"][MODE_LABEL] == "gaming"
    # The other workloads came back: the cluster restarted what it had, and no vLLM pod among them.
    wait_for(lambda: call(lab, "GET", "/apis/apps/v1/namespaces/ml/deployments/litellm")[1]
             .get("status", {}).get("availableReplicas") == 1, timeout=120)
    pods = call(lab, "GET", "/api/v1/namespaces/ml/pods?labelSelector=app.kubernetes.io%2Fname%3Dvllm")[1]["items"]
    assert pods == []
    status = gpu_mode(rebooted["env"], "status")
    assert (status["mode"], status["changed"]) == ("gaming", False)


def test_site_yml_after_the_reboot_keeps_the_mode(rebooted):
    result = ansible_playbook("site.yml", "--skip-tags", "verify", env=rebooted["env"])
    assert result.returncode == 0, result.stdout[-3000:]
    deployment = call(rebooted["lab"], "GET", DEPLOYMENT)[1]
    assert (deployment["spec"]["replicas"], deployment["metadata"]["labels"][MODE_LABEL]) == (0, "gaming")
    status = gpu_mode(rebooted["env"], "status")
    assert status["mode"] == "gaming"


def test_no_doc_claims_that_a_reboot_restores_the_default_mode():
    paths = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")]
    paths += glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    paths += glob.glob(os.path.join(ROOT, "roles", "*", "README.md"))
    paths += glob.glob(os.path.join(ROOT, "roles", "*", "meta", "argument_specs.yml"))
    claims = []
    for path in paths:
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                if re.search(r"reboot\w*\W+(\w+\W+){0,3}restor", line, re.IGNORECASE):
                    claims.append("%s:%d: %s" % (os.path.relpath(path, ROOT), number, line.strip()))
    assert claims == []
    with open(os.path.join(ROOT, "roles", "catalog", "meta", "argument_specs.yml")) as handle:
        spec = yaml.safe_load(handle)["argument_specs"]["main"]["options"]["inference_gpu_default_mode"]
    described = " ".join(spec["description"]) if isinstance(spec["description"], list) else spec["description"]
    assert "survives a reboot" in described, "the catalog says what the tests above prove"


def test_the_boot_mode_enters_the_default_mode_once_the_node_shows_this_boot(rebooted):
    lab, base = rebooted["lab"], rebooted["base"]
    node = call(lab, "GET", "/api/v1/nodes/lab-gpu")[1]
    boot_id_file = os.path.join(lab.state_dir, "nodes", "lab-gpu", "boot_id")
    with open(boot_id_file) as handle:
        this_boot = handle.read().strip()
    assert node["status"]["nodeInfo"]["bootID"] == this_boot != rebooted["boot_before"], "the reboot is a new boot"
    root = base / "host"

    def install(policy, boot_id, timeout=120):
        installed = install_gpu_mode_host(root, lab.state_dir, rebooted["env"],
                                          "-e", "inference_gpu_boot_policy=%s" % policy,
                                          "-e", "gpu_mode_host_node_name=lab-gpu",
                                          "-e", "gpu_mode_host_boot_id_file=%s" % boot_id,
                                          "-e", "gpu_mode_host_boot_timeout=%d" % timeout)
        assert installed.returncode == 0, installed.stdout[-3000:]

    install("keep", boot_id_file)
    kept = gpu_mode_host(root, "boot")
    assert (kept.returncode, kept.stdout) == (0, "GPU mode at boot: kept (boot policy keep)\n"), kept
    assert gpu_mode_host(root, "status").stdout == "GPU mode: gaming (GPU free), unchanged\n"
    # A boot the cluster has not seen (the kubelet still shows the boot before): it waits, then says so.
    unseen = base / "unseen_boot_id"
    unseen.write_text("0e4e1d8c-0000-4000-8000-00000000b007\n")
    install("default", unseen, timeout=2)
    waited = gpu_mode_host(root, "boot")
    assert (waited.returncode, waited.stdout) == (1, ""), waited
    assert waited.stderr == ("gpu-mode: boot: node lab-gpu did not show this boot within 2s: its kubelet has not "
                             "reported this boot yet (bootID %s, this boot 0e4e1d8c-0000-4000-8000-00000000b007)\n"
                             % this_boot)
    install("default", boot_id_file)
    entered = gpu_mode_host(root, "boot")
    assert entered.returncode == 0 and entered.stderr == "", entered
    assert re.fullmatch(r"GPU mode: ml \(vllm-qwen\), was gaming, in [\d.]+ s; verified: vllm_models, litellm\n",
                        entered.stdout), entered.stdout
    again = gpu_mode_host(root, "boot")
    assert again.returncode == 0 and again.stdout.startswith("GPU mode: ml (vllm-qwen), unchanged"), again
    status = gpu_mode(rebooted["env"], "status")
    assert (status["mode"], status["ready"]) == ("ml", True)
