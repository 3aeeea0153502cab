"""The example home-lab inventory works with the commands the README gives for it:
it parses, and `--tags render` renders every app from it without touching a host
(its addresses are not reachable from here, so any connection would show)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import yaml

from helpers import ROOT, ansible_playbook

from ansible_collections.homelab.inference.plugins.plugin_utils import _cuda_driver

INVENTORY = "inventories/homelab"
# What the vault holds on a real controller (vault.yml.example lists the names).
VAULT = {name: "CANARY-%s-0c5f1e2a" % name for name in re.findall(
    r"^(vault_\w+):", open(os.path.join(ROOT, INVENTORY, "group_vars/all/vault.yml.example")).read(), re.M)}


def test_the_inventory_parses_and_places_the_gpu_worker():
    executable = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")
    result = subprocess.run([executable, "-i", INVENTORY, "--list"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    inventory = json.loads(result.stdout)
    assert inventory["gpu_workers"]["hosts"] == ["k3s-gpu-worker"]
    worker = inventory["_meta"]["hostvars"]["k3s-gpu-worker"]
    assert worker["k3s_agent_token"] == "{{ vault_k3s_agent_token }}"
    assert worker["k3s_agent_server_url"].startswith("https://")


def test_the_gpu_workers_driver_runs_the_catalogs_vllm_image():
    # The catalog (the catalog role's defaults, unless the inventory overrides it) names the image; the
    # inventory names the driver branch.
    executable = os.path.join(os.path.dirname(sys.executable), "ansible-inventory")
    result = subprocess.run([executable, "-i", INVENTORY, "--list", "--playbook-dir", ROOT], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    worker = json.loads(result.stdout)["_meta"]["hostvars"]["k3s-gpu-worker"]
    with open(os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")) as handle:
        image = worker.get("inference_vllm_image", yaml.safe_load(handle)["inference_vllm_image"])
    requirement = _cuda_driver.vllm_cuda_requirement(image)
    assert _cuda_driver.driver_satisfies(worker["nvidia_driver_branch"], requirement["min_driver"]), (worker, requirement)
    # Debian's archive stops at 535: a branch that new comes from NVIDIA's CUDA repository.
    assert worker["nvidia_driver_source"] == "cuda"


def test_render_from_the_homelab_inventory_touches_no_host(tmp_path):
    result = ansible_playbook("-i", INVENTORY, "site.yml", "--tags", "render", "-e", "render_dir=%s" % tmp_path,
                              "-e", json.dumps(VAULT), check=True)
    recap = re.search(r"k3s-gpu-worker\s+:.*unreachable=(\d+)\s+failed=(\d+)", result.stdout)
    assert recap and recap.groups() == ("0", "0"), result.stdout[-2000:]
    # The example turns on the least-privilege switching account its GPU worker's gpu-mode command uses,
    # and monitoring for kube-prometheus-stack.
    assert sorted(os.listdir(tmp_path)) == sorted("%s.yaml" % app for app in (
        "namespaces", "nvidia-device-plugin", "vllm", "ollama", "litellm", "paperless-ai", "gpu-mode-access",
        "gpu-monitoring"))
    with open(tmp_path / "gpu-monitoring.yaml") as handle:
        monitoring = [d for d in yaml.safe_load_all(handle) if d]
    selected = [d["kind"] for d in monitoring if d["metadata"].get("labels", {}).get("release") == "kube-prometheus-stack"]
    assert "PrometheusRule" in selected and selected.count("ServiceMonitor") == 2, selected  # the mode exporter's, DCGM's
    with open(tmp_path / "ollama.yaml") as handle:
        deployment = next(d for d in yaml.safe_load_all(handle) if d and d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "k3s-worker-02"}
    for value in VAULT.values():
        assert value not in result.stdout + result.stderr
        for name in os.listdir(tmp_path):
            assert value not in (tmp_path / name).read_text()
