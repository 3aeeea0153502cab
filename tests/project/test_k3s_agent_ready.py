"""k3s_agent waits for its node through the API and insists on the GPU labels and taint
(k3s applies them only at first registration). Against the lab's API emulator, whose
`lab-gpu` node is registered like the GPU worker and `lab-cpu` like a plain worker."""

from __future__ import annotations

import os

import pytest

from helpers import ansible_playbook
from lab_fixture import call, start_lab

PREFIX = "[ERROR]: Task failed: Action failed: "


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("k3s-ready"))
    yield lab
    lab.stop()


def wait_for_node(lab, node, *extra):
    kubeconfig = os.path.join(lab.state_dir, "kubeconfig")
    return ansible_playbook("tests/project/playbooks/k3s_agent_ready.yml", "-e", "k3s_agent_kubeconfig=%s" % kubeconfig,
                            "-e", "k3s_agent_node_name=%s" % node, "-e", "k3s_agent_ready_timeout=3", *extra)


def failures(result):
    return [line[len(PREFIX):] for line in (result.stdout + result.stderr).splitlines() if line.startswith(PREFIX)]


def test_a_ready_gpu_node_with_its_labels_and_taint_passes(lab):
    result = wait_for_node(lab, "lab-gpu")
    assert result.returncode == 0, result.stdout[-2500:]
    assert "failed=0" in result.stdout


def test_a_node_registered_without_the_gpu_labels_fails_naming_what_is_missing(lab):
    result = wait_for_node(lab, "lab-cpu")
    assert result.returncode != 0
    assert failures(result) == [
        "Node lab-cpu lacks nvidia.com/gpu=true, gpu-type=rtx3060, gpu=true:NoSchedule: k3s applies node labels and "
        "taints only at first registration; add them with kubectl label/taint node lab-cpu"], result.stdout[-2500:]


def test_a_taint_without_a_value_is_matched_in_the_k3s_form(lab):
    result = wait_for_node(lab, "lab-gpu", "-e", '{"k3s_agent_node_taints": ["gpu:NoSchedule"]}')
    assert failures(result) == [
        "Node lab-gpu lacks gpu:NoSchedule: k3s applies node labels and taints only at first registration; add them "
        "with kubectl label/taint node lab-gpu"], result.stdout[-2500:]


def test_a_node_that_never_registers_fails_after_the_timeout(lab):
    result = wait_for_node(lab, "k3s-gpu-worker")
    assert failures(result) == [
        "Node k3s-gpu-worker is not Ready after 3 s (never registered); see journalctl -u k3s-agent on localhost, "
        "and k3s_agent_node_name, k3s_agent_server_url, k3s_agent_token"], result.stdout[-2500:]


def test_a_registered_node_that_is_not_ready_fails_after_the_timeout(lab):
    status, node = call(lab, "GET", "/api/v1/nodes/lab-server")
    assert status == 200
    for condition in node["status"]["conditions"]:
        if condition["type"] == "Ready":
            condition.update(status="False", reason="KubeletNotReady")
    assert call(lab, "PUT", "/api/v1/nodes/lab-server/status", node)[0] == 200
    result = wait_for_node(lab, "lab-server", "-e", '{"k3s_agent_node_labels": [], "k3s_agent_node_taints": []}')
    assert failures(result) == [
        "Node lab-server is not Ready after 3 s (registered); see journalctl -u k3s-agent on localhost, "
        "and k3s_agent_node_name, k3s_agent_server_url, k3s_agent_token"], result.stdout[-2500:]
