"""The lab's controllers and kubelet: Deployments become processes, the GPU is
one device, faults show up as the pod's reasons, and `lab down` leaves nothing."""

from __future__ import annotations


import os
import socket
import subprocess
import sys

import pytest

from helpers import ROOT
from lab import TOOLS
from testkit.gateway_rig import free_port
from lab_fixture import DEVICE_PLUGIN, call, service, start_lab, vllm_deployment, wait_for

DEPLOYMENTS = "/apis/apps/v1/namespaces/ml/deployments"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("controllers"), load_delay=0.5)
    call(lab, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    yield lab
    lab.stop()


def pods(lab, selector):
    return call(lab, "GET", "/api/v1/namespaces/ml/pods?labelSelector=%s" % selector)[1]["items"]


def gpu_count(lab):
    node = call(lab, "GET", "/api/v1/nodes/lab-gpu")[1]
    return node["status"]["allocatable"].get("nvidia.com/gpu")


def served(lab, name="vllm-api"):
    status, body = call(lab, "GET", "/api/v1/namespaces/ml/services/%s:8000/proxy/v1/models" % name)
    return [m["id"] for m in body.get("data", [])] if status == 200 else None


def test_the_gpu_node_advertises_its_gpu_only_with_the_device_plugin(lab):
    assert gpu_count(lab) in (None, "0")
    assert call(lab, "POST", "/apis/apps/v1/namespaces/kube-system/daemonsets", DEVICE_PLUGIN)[0] == 201
    wait_for(lambda: gpu_count(lab) == "1")
    plugin = call(lab, "GET", "/api/v1/namespaces/kube-system/pods")[1]["items"]
    assert [p["spec"]["nodeName"] for p in plugin] == ["lab-gpu"], "only on the node its selector names"


def test_a_vllm_deployment_serves_its_model_after_the_load_delay(lab):
    assert call(lab, "POST", DEPLOYMENTS, vllm_deployment())[0] == 201
    assert call(lab, "POST", "/api/v1/namespaces/ml/services", service("vllm-api", {"app": "vllm"}, 8000))[0] == 201
    status, body = call(lab, "GET", "/api/v1/namespaces/ml/services/vllm-api:8000/proxy/v1/models")
    assert (status, body.get("reason")) == (503, "ServiceUnavailable"), "no ready endpoint while the model loads"
    wait_for(lambda: served(lab) == ["vllm-qwen"])
    pod = pods(lab, "app=vllm")[0]
    assert pod["spec"]["nodeName"] == "lab-gpu" and pod["status"]["phase"] == "Running"
    deployment = call(lab, "GET", DEPLOYMENTS + "/vllm")[1]
    assert deployment["status"]["availableReplicas"] == 1
    assert deployment["status"]["observedGeneration"] == deployment["metadata"]["generation"]
    # The real API server's proxy answers a model vLLM does not serve with vLLM's own 404.
    status, body = call(lab, "POST", "/api/v1/namespaces/ml/services/vllm-api:8000/proxy/v1/chat/completions",
                        {"model": "vllm-r1", "messages": []})
    assert (status, body["error"]["type"]) == (404, "NotFound" + "Error")


def test_changed_args_roll_a_new_pod_that_serves_the_new_model(lab):
    before = pods(lab, "app=vllm")[0]["metadata"]["name"]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "vllm", "args": [
        "--model", "other/model", "--served-model-name", "vllm-r1", "--port", "8000"]}]}}}}
    assert call(lab, "PATCH", DEPLOYMENTS + "/vllm", patch, "application/strategic-merge-patch+json")[0] == 200
    wait_for(lambda: served(lab) == ["vllm-r1"])
    current = pods(lab, "app=vllm")
    assert len(current) == 1 and current[0]["metadata"]["name"] != before


def test_a_second_gpu_pod_stays_pending_with_the_schedulers_message(lab):
    second = vllm_deployment(name="second", model="other")
    assert call(lab, "POST", DEPLOYMENTS, second)[0] == 201
    pod = wait_for(lambda: next((p for p in pods(lab, "app=second") if p["status"].get("conditions")), None))
    condition = pod["status"]["conditions"][0]
    assert (pod["status"]["phase"], condition["reason"]) == ("Pending", "Unschedulable")
    assert "1 Insufficient nvidia.com/gpu" in condition["message"]
    assert "2 node(s) didn't match Pod's node affinity/selector" in condition["message"]


def test_scaling_to_zero_frees_the_gpu_for_the_waiting_pod(lab):
    assert call(lab, "PATCH", DEPLOYMENTS + "/vllm/scale", {"spec": {"replicas": 0}},
                "application/merge-patch+json")[0] == 200
    wait_for(lambda: not pods(lab, "app=vllm"))
    wait_for(lambda: served(lab, "vllm-api") is None)
    pod = wait_for(lambda: next((p for p in pods(lab, "app=second") if p["spec"].get("nodeName")), None))
    assert pod["spec"]["nodeName"] == "lab-gpu"
    assert call(lab, "DELETE", DEPLOYMENTS + "/second")[0] == 200
    wait_for(lambda: not pods(lab, "app=second"))


def test_a_model_that_fails_to_load_crash_loops_with_oomkilled(lab):
    lab.faults["fail_models"]["vllm-r1"] = "oom"
    try:
        call(lab, "PATCH", DEPLOYMENTS + "/vllm/scale", {"spec": {"replicas": 1}}, "application/merge-patch+json")

        def crashing():
            for pod in pods(lab, "app=vllm"):
                for status in pod["status"].get("containerStatuses") or []:
                    if status.get("lastState", {}).get("terminated", {}).get("reason") == "OOMKilled":
                        return status
            return None

        status = wait_for(crashing)
        assert status["lastState"]["terminated"]["exitCode"] == 137 and status["restartCount"] >= 0
        wait_for(lambda: any((c.get("state", {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
                             for p in pods(lab, "app=vllm") for c in p["status"].get("containerStatuses") or []))
    finally:
        lab.faults["fail_models"].clear()
        call(lab, "PATCH", DEPLOYMENTS + "/vllm/scale", {"spec": {"replicas": 0}}, "application/merge-patch+json")
        wait_for(lambda: not pods(lab, "app=vllm"))


def listening(prefixes):
    """Local listening TCP sockets whose "address:" starts with one of ``prefixes`` (from /proc/net/tcp)."""
    found = []
    with open("/proc/net/tcp") as handle:
        for line in handle.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":
                continue
            address = socket.inet_ntoa(bytes.fromhex(local.split(":")[0])[::-1])
            endpoint = "%s:%d" % (address, int(local.split(":")[1], 16))
            if endpoint.startswith(prefixes):
                found.append(endpoint)
    return found


def test_lab_down_leaves_no_process_and_no_port(tmp_path):
    state, port = str(tmp_path / "cli-lab"), free_port()
    env = dict(os.environ, PYTHONPATH=TOOLS)
    lab = [sys.executable, "-m", "lab", "--state-dir", state]
    up = subprocess.run(lab + ["up", "--port", str(port), "--profile", "fast", "--load-delay", "0.2"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "kubeconfig: %s/kubeconfig" % state in up.stdout
    other = subprocess.run([sys.executable, "-m", "lab", "--state-dir", str(tmp_path / "other-lab"), "up",
                            "--port", str(port), "--profile", "fast"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
    assert other.returncode == 1 and other.stderr.strip() == (
        "The lab cannot start: port %d is another lab's; stop it (python -m lab --state-dir DIR down) or give --port"
        % port), "a second lab on a taken port must not pass for up"
    fake = type("Lab", (), {"port": port})
    call(fake, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    call(fake, "POST", "/apis/apps/v1/namespaces/kube-system/daemonsets", DEVICE_PLUGIN)
    call(fake, "POST", DEPLOYMENTS, vllm_deployment())
    call(fake, "POST", "/api/v1/namespaces/ml/services", service("vllm-api", {"app": "vllm"}, 8000))
    wait_for(lambda: call(fake, "GET", "/api/v1/namespaces/ml/services/vllm-api:8000/proxy/v1/models")[0] == 200)
    described = call(fake, "GET", "/lab/status")[1]
    addresses = tuple({p["ip"] + ":" for p in described["pods"] if p["ip"]}
                      | {s["clusterIP"] + ":" for s in described["services"] if s["clusterIP"]})
    assert listening(addresses), "the lab's pods and services were listening"
    pids = [int(name) for name in os.listdir(os.path.join(state, "pids"))]
    with open(os.path.join(state, "lab.pid")) as handle:
        pids.append(int(handle.read()))
    assert len(pids) >= 3
    down = subprocess.run(lab + ["down"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr

    def alive(pid):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().split()[2] != "Z"

    assert [p for p in pids if alive(p)] == []
    assert listening(addresses) == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the API port is closed"
    status = subprocess.run(lab + ["status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert status.returncode == 3 and "down" in status.stdout


def test_state_persists_across_down_and_up_when_kept(tmp_path):
    first = start_lab(tmp_path, persist=True)
    call(first, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    created = call(first, "POST", "/api/v1/namespaces/ml/configmaps",
                   {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept"}, "data": {"a": "1"}})[1]
    first.stop()
    second = start_lab(tmp_path, persist=True)
    try:
        status, again = call(second, "GET", "/api/v1/namespaces/ml/configmaps/kept")
        assert status == 200 and again["data"] == {"a": "1"}
        assert again["metadata"]["uid"] == created["metadata"]["uid"]
        assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    finally:
        second.stop()
