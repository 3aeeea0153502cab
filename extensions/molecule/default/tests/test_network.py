"""Who may reach what on the converged lab, under the roles' NetworkPolicies, which the lab
enforces as k3s's kube-router does (docs/lab.md "NetworkPolicies"). Each path is tried from a
real pod's address (tools/testkit/pod_network.py); docs/security.md lists the same paths."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from conftest import PORT, STATE, api
from testkit.pod_network import reach

VLLM = ("vllm-api.ml.svc.cluster.local", 8000)
OLLAMA = ("ollama.ml.svc.cluster.local", 11434)
LITELLM = ("litellm.ml.svc.cluster.local", 4000)
PAPERLESS_NGX = ("paperless.docs.svc.cluster.local", 8000)
OPENAI = ("api.openai.com", 8080)


def pod_ip(namespace, name):
    """The address of the running pod of ``app.kubernetes.io/name=name``."""
    items = api("GET", "/api/v1/namespaces/%s/pods?labelSelector=app.kubernetes.io/name=%s" % (namespace, name))[1]
    running = [p for p in items["items"] if (p.get("status") or {}).get("phase") == "Running"
               and not p["metadata"].get("deletionTimestamp")]
    assert running, "no running %s pod in %s" % (name, namespace)
    return running[0]["status"]["podIP"]


def outcome(source, target):
    return reach(STATE, source, *target)


def test_the_lab_enforces_the_policies_the_roles_applied():
    with open(os.path.join(STATE, "network.json")) as handle:
        assert json.load(handle)["network_policy"]["enforced"] is True
    names = {(p["metadata"]["namespace"], p["metadata"]["name"])
             for p in api("GET", "/apis/networking.k8s.io/v1/networkpolicies")[1]["items"]}
    assert {("ml", "vllm-server"), ("ml", "ollama"), ("ml", "litellm"), ("docs", "paperless-ai")} <= names


def test_each_needed_path_is_open():
    litellm, paperless = pod_ip("ml", "litellm"), pod_ip("docs", "paperless-ai")
    assert {"litellm to vllm": outcome(litellm, VLLM), "litellm to ollama": outcome(litellm, OLLAMA),
            "litellm to a cloud API": outcome(litellm, OPENAI),
            "paperless-ai to litellm": outcome(paperless, LITELLM),
            "paperless-ai to paperless-ngx": outcome(paperless, PAPERLESS_NGX)} == dict.fromkeys(
        ["litellm to vllm", "litellm to ollama", "litellm to a cloud API", "paperless-ai to litellm",
         "paperless-ai to paperless-ngx"], "open")


def test_each_other_path_is_refused():
    paperless = pod_ip("docs", "paperless-ai")
    bystander = pod_ip("kube-system", "nvidia-device-plugin")   # any other pod in the cluster
    assert {"paperless-ai to vllm": outcome(paperless, VLLM), "paperless-ai to ollama": outcome(paperless, OLLAMA),
            "paperless-ai to a cloud API": outcome(paperless, OPENAI),
            "another pod to vllm": outcome(bystander, VLLM), "another pod to ollama": outcome(bystander, OLLAMA),
            "another pod to litellm": outcome(bystander, LITELLM)} == dict.fromkeys(
        ["paperless-ai to vllm", "paperless-ai to ollama", "paperless-ai to a cloud API", "another pod to vllm",
         "another pod to ollama", "another pod to litellm"], "refused")


def test_the_api_servers_proxy_reaches_vllm_on_the_gpu_node():
    """gpu_mode's and the switcher's verification path: vLLM's pod is on lab-gpu, the API server on lab-server."""
    url = "http://127.0.0.1:%d/api/v1/namespaces/ml/services/vllm-api:8000/proxy/health" % PORT
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert answer.status == 200
    except urllib.error.HTTPError as err:
        raise AssertionError("the API server's proxy to vLLM: %d %s" % (err.code, err.read()[:300]))
