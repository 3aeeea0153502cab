"""A lab per test module, in-process, on its own port and state directory."""

from __future__ import annotations

import time
import urllib.request

from testkit.api_client import api_request
from lab.cluster import Lab
from testkit.gateway_rig import free_port


def start_lab(tmp_path, load_delay=0.5, persist=False, profile="fast", **timing):
    """A lab whose FAKE model servers answer at once (the ``fast`` timing profile) unless asked otherwise
    (``profile``, ``time_scale``, ``load_scale``)."""
    lab = Lab(str(tmp_path / "lab"), port=free_port(), load_delay=load_delay, persist=persist,
              profile=profile, **timing).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen("http://127.0.0.1:%d/version" % lab.port, timeout=1)
            return lab
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the lab did not start")


def call(lab, method, path, body=None, content_type="application/json"):
    """(status, parsed body) of a raw API request."""
    return api_request(lab.port, method, path, body, content_type)


def wait_for(predicate, timeout=30, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met within %ss" % timeout)


DEVICE_PLUGIN = {
    "apiVersion": "apps/v1", "kind": "DaemonSet",
    "metadata": {"name": "nvidia-device-plugin", "namespace": "kube-system"},
    "spec": {"selector": {"matchLabels": {"app": "dp"}},
             "template": {"metadata": {"labels": {"app": "dp"}},
                          "spec": {"nodeSelector": {"nvidia.com/gpu": "true"},
                                   "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true",
                                                    "effect": "NoSchedule"}],
                                   "containers": [{"name": "plugin",
                                                   "image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.4"}]}}}}


def vllm_deployment(name="vllm", model="vllm-qwen", replicas=1, strategy="Recreate"):
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "ml"},
        "spec": {"replicas": replicas, "strategy": {"type": strategy}, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {
                     "nodeSelector": {"nvidia.com/gpu": "true"},
                     "tolerations": [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
                     "containers": [{"name": "vllm", "image": "docker.io/vllm/vllm-openai:v0.32.0",
                                     "args": ["--model", "some/model", "--served-model-name", model, "--port",
                                              "8000"],
                                     "ports": [{"name": "http", "containerPort": 8000}],
                                     "readinessProbe": {"httpGet": {"path": "/health", "port": "http"},
                                                        "periodSeconds": 1},
                                     "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}


def service(name, selector, port):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "ml"},
            "spec": {"selector": selector, "ports": [{"name": "http", "port": port, "targetPort": port}]}}
