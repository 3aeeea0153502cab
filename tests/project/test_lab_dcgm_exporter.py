"""The FAKE NVIDIA dcgm-exporter on the lab's GPU node: its metrics follow the
card (vLLM's memory while it runs, its requests as utilisation, the pod that
holds the GPU), and without the NVIDIA runtime it fails as the real one does
without NVML."""

from __future__ import annotations

import json
import re
import threading
import urllib.request

import pytest

from lab_fixture import DEVICE_PLUGIN, call, start_lab, vllm_deployment, wait_for

NS = "kube-system"
IMAGE = "nvcr.io/nvidia/k8s/dcgm-exporter:4.5.3-4.8.2-distroless"
LINE = re.compile(r'^(DCGM_\w+)\{(.*)\} (\S+)$')
TOTAL_MIB = 12288


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    # realistic: a streamed answer takes seconds, long enough to be seen running; the load stays short.
    lab = start_lab(tmp_path_factory.mktemp("dcgm"), load_delay=0.5, profile="realistic")
    call(lab, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    call(lab, "POST", "/apis/apps/v1/namespaces/kube-system/daemonsets", DEVICE_PLUGIN)
    wait_for(lambda: call(lab, "GET", "/api/v1/nodes/lab-gpu")[1]["status"]["allocatable"].get(
        "nvidia.com/gpu") == "1")
    yield lab
    lab.stop()


def exporter_pod(name, runtime="nvidia"):
    """As NVIDIA's chart runs it: Kubernetes mapping on, the kubelet's pod-resources socket mounted, no GPU
    taken from the device plugin (the image's NVIDIA_VISIBLE_DEVICES=all); samples every 200 ms."""
    spec = {"restartPolicy": "Never", "nodeSelector": {"nvidia.com/gpu": "true"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "automountServiceAccountToken": False,
            "containers": [{"name": "exporter", "image": IMAGE, "args": ["-c", "200"],
                            "env": [{"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"},
                                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                            "ports": [{"name": "metrics", "containerPort": 9400}],
                            "readinessProbe": {"httpGet": {"path": "/health", "port": 9400}, "periodSeconds": 1},
                            "volumeMounts": [{"name": "pod-resources", "mountPath": "/var/lib/kubelet/pod-resources",
                                              "readOnly": True}]}],
            "volumes": [{"name": "pod-resources", "hostPath": {"path": "/var/lib/kubelet/pod-resources"}}]}
    if runtime:
        spec["runtimeClassName"] = runtime
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def scrape(lab, name="dcgm"):
    """{metric: (labels, value)} and the raw text of the exporter's /metrics."""
    pod = call(lab, "GET", "/api/v1/namespaces/%s/pods/%s" % (NS, name))[1]
    with urllib.request.urlopen("http://%s:9400/metrics" % pod["status"]["podIP"], timeout=5) as response:
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            found[match.group(1)] = (list(labels.items()), float(match.group(3)))
    return found, text


@pytest.fixture(scope="module")
def exporter(lab):
    assert call(lab, "POST", "/api/v1/namespaces/%s/pods" % NS, exporter_pod("dcgm"))[0] == 201
    wait_for(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in call(
        lab, "GET", "/api/v1/namespaces/%s/pods/dcgm" % NS)[1].get("status", {}).get("conditions") or []))
    return "dcgm"


def test_the_exporter_serves_the_default_counters_the_lab_backs(lab, exporter):
    found, text = scrape(lab)
    assert sorted(found) == ["DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_UTIL"]
    assert text.startswith("# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n# TYPE DCGM_FI_DEV_GPU_UTIL gauge\n")
    assert "# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).\n# TYPE DCGM_FI_DEV_FB_USED gauge\n" in text
    labels, used = found["DCGM_FI_DEV_FB_USED"]
    assert labels == [("gpu", "0"), ("UUID", lab.gpu["uuid"]), ("pci_bus_id", "00000000:01:00.0"),
                      ("device", "nvidia0"), ("modelName", "NVIDIA GeForce RTX 3060"), ("Hostname", "lab-gpu"),
                      ("DCGM_FI_DRIVER_VERSION", "580.95.05")]
    assert used + found["DCGM_FI_DEV_FB_FREE"][1] == TOTAL_MIB
    assert found["DCGM_FI_DEV_GPU_UTIL"][1] == 0
    # The exporter holds no GPU of the device plugin's: the node's GPU is still free for vLLM.
    with urllib.request.urlopen("http://%s:9400/health" % call(
            lab, "GET", "/api/v1/namespaces/%s/pods/dcgm" % NS)[1]["status"]["podIP"], timeout=5) as response:
        assert response.read() == b"OK"


def chat(lab, done):
    """A streamed chat straight to vLLM's pod, long enough to be seen running."""
    pod = call(lab, "GET", "/api/v1/namespaces/ml/pods?labelSelector=app%3Dvllm")[1]["items"][0]
    body = json.dumps({"model": "vllm-qwen", "stream": True, "max_tokens": 200,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    request = urllib.request.Request("http://%s:8000/v1/chat/completions" % pod["status"]["podIP"], data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    done.set()


def test_gpu_memory_and_utilisation_follow_vllm(lab, exporter):
    idle = scrape(lab)[0]["DCGM_FI_DEV_FB_USED"][1]
    assert call(lab, "POST", "/apis/apps/v1/namespaces/ml/deployments", vllm_deployment())[0] == 201

    def serving():
        pods = call(lab, "GET", "/api/v1/namespaces/ml/pods?labelSelector=app%3Dvllm")[1]["items"]
        return pods and any(c["type"] == "Ready" and c["status"] == "True"
                            for c in pods[0].get("status", {}).get("conditions") or []) and pods[0]
    vllm = wait_for(serving, timeout=60)
    held = int(TOTAL_MIB * 0.9)  # vLLM's default --gpu-memory-utilization
    found = wait_for(lambda: (lambda f: f if f["DCGM_FI_DEV_FB_USED"][1] == idle + held else None)(scrape(lab)[0]))
    assert found["DCGM_FI_DEV_FB_FREE"][1] == TOTAL_MIB - idle - held
    labels = dict(found["DCGM_FI_DEV_FB_USED"][0])
    assert (labels["pod"], labels["namespace"], labels["container"]) == (vllm["metadata"]["name"], "ml", "vllm")
    assert list(labels)[-3:] == ["container", "namespace", "pod"]
    assert scrape(lab)[0]["DCGM_FI_DEV_GPU_UTIL"][1] == 0, "loaded, answering nothing"

    done = threading.Event()
    threading.Thread(target=chat, args=(lab, done), daemon=True).start()
    wait_for(lambda: scrape(lab)[0]["DCGM_FI_DEV_GPU_UTIL"][1] == 100 or done.is_set(), interval=0.05)
    assert not done.is_set(), "the request ended before a sample saw it running"
    done.wait(60)
    wait_for(lambda: scrape(lab)[0]["DCGM_FI_DEV_GPU_UTIL"][1] == 0)

    status, _ = call(lab, "PATCH", "/apis/apps/v1/namespaces/ml/deployments/vllm", {"spec": {"replicas": 0}},
                     "application/merge-patch+json")
    assert status == 200
    wait_for(lambda: scrape(lab)[0]["DCGM_FI_DEV_FB_USED"][1] == idle)
    # The memory is free when vLLM's process exits; the kubelet's pod-resources API still lists the pod until
    # its container has terminated, so the pod label goes a moment later, and the memory stays free.
    found = wait_for(lambda: (lambda f: f if "pod" not in dict(f["DCGM_FI_DEV_FB_USED"][0]) else None)(scrape(lab)[0]))
    assert found["DCGM_FI_DEV_FB_USED"][1] == idle


def test_without_the_nvidia_runtime_dcgm_cannot_start(lab):
    assert call(lab, "POST", "/api/v1/namespaces/%s/pods" % NS, exporter_pod("no-runtime", runtime=None))[0] == 201

    def failed():
        pod = call(lab, "GET", "/api/v1/namespaces/%s/pods/no-runtime" % NS)[1]
        return pod if pod.get("status", {}).get("phase") == "Failed" else None
    pod = wait_for(failed)
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1
    with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/namespaces/%s/pods/no-runtime/log" % (lab.port, NS),
                                timeout=10) as response:
        lines = response.read().decode().splitlines()
    assert 'level=INFO msg="Starting dcgm-exporter" Version=4.5.3-4.8.2' in lines[0]
    assert lines[-1].endswith('level=ERROR msg="error starting nv-hostengine: DCGM initialization error"')
