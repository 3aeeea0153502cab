"""Malformed catalogs stop site.yml in preflight, with one line each, before
any cluster call. A listener stands where the API server would be and counts
connections: there must be none."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest
import yaml

from helpers import ROOT, ansible_playbook

with open(os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")) as _handle:
    CATALOG = yaml.safe_load(_handle)


def model(name):
    return next(m for m in CATALOG["inference_models"] if m["name"] == name)


def catalog_with(change):
    catalog = yaml.safe_load(yaml.safe_dump(CATALOG))
    change(catalog)
    return catalog


MALFORMED = {
    "unknown backend": (
        lambda c: c["inference_models"][1].update(backend="llamacpp"),
        "inference_models[1] (ollama-qwen).backend: unknown backend 'llamacpp'; use one of vllm, ollama, openai, "
        "groq, gemini, mistral"),
    "chain member missing": (
        lambda c: c["inference_fallback_chain"].__setitem__(1, "ollama-qwen7"),
        "inference_fallback_chain[1]: 'ollama-qwen7' is not a model in inference_models; declare it there or "
        "remove it from the chain"),
    "mode names a model vLLM cannot serve": (
        lambda c: c["inference_gpu_modes"]["r1"].update(vllm_model="openai-gpt4o"),
        "inference_gpu_modes.r1.vllm_model: 'openai-gpt4o' has backend openai, but vLLM can only serve backend vllm "
        "models; name a vllm model or null"),
    "duplicate name": (
        lambda c: c["inference_models"].append(dict(model("ollama-qwen"))),
        "inference_models[9] (ollama-qwen).name: 'ollama-qwen' is declared twice (also inference_models[1]); "
        "give each model a unique name"),
    "parallel model in the chain": (
        lambda c: c["inference_fallback_chain"].append("gemini/gemini-2.0-flash"),
        "inference_fallback_chain[3]: 'gemini/gemini-2.0-flash' is a parallel model (parallel: true) and must "
        "never join the chain; remove it from the chain"),
    "on-demand policy entering a GPU-free mode": (
        lambda c: c["inference_gpu_on_demand"].update(modes=["r1", "gaming"], never_leave=[]),
        "inference_gpu_on_demand.modes[1]: 'gaming' frees the GPU and serves no model, so no request can ask for "
        "it; remove it"),
}


@pytest.fixture
def api_listener(tmp_path):
    """A TCP listener posing as the API server, and a kubeconfig pointing at it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    connections = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            connections.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "probe",
        "clusters": [{"name": "probe", "cluster": {"server": "http://127.0.0.1:%d" % server.getsockname()[1]}}],
        "contexts": [{"name": "probe", "context": {"cluster": "probe", "user": "probe"}}],
        "users": [{"name": "probe", "user": {"token": "probe"}}],
    }))
    yield kubeconfig, connections
    stop.set()
    thread.join()
    server.close()


def test_listener_does_see_a_cluster_call(api_listener):
    # Positive control: with a valid catalog the play does reach the "API server".
    kubeconfig, connections = api_listener
    ansible_playbook("site.yml", "-e", "inference_kubeconfig=%s" % kubeconfig)
    assert connections


def failed_tasks(result, prefix="[ERROR]: Task failed: Action failed: "):
    """The one-line reasons of a failed run's failed tasks (none when it passed)."""
    if result.returncode == 0:
        return []
    return [line[len(prefix):] for line in (result.stdout + result.stderr).splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_catalog_fails_in_preflight_with_one_line(name, tmp_path, api_listener):
    change, expected = MALFORMED[name]
    kubeconfig, connections = api_listener
    extra = tmp_path / "catalog.yml"
    extra.write_text(yaml.safe_dump(catalog_with(change)))
    result = ansible_playbook("site.yml", "-e", "@%s" % extra, "-e", "inference_kubeconfig=%s" % kubeconfig)
    assert failed_tasks(result) == [expected], (result.stdout + result.stderr)[-3000:]
    assert "TASK [homelab.inference.catalog : Validate the model catalog]" in result.stdout
    assert connections == [], "the play contacted the cluster before the catalog was valid"


FIX = "put a random key in the vault (openssl rand -hex 24 makes one of 48 characters)"
BAD_KEYS = {
    "empty master key": ({"litellm_master_key": ""}, "litellm_master_key is empty: " + FIX),
    "placeholder master key": ({"litellm_master_key": "sk-CHANGE-ME-secret-canary-0451"},
                               "litellm_master_key is an example placeholder: " + FIX),
    "short master key": ({"litellm_master_key": "sk-short-secret-canary-0451"},
                         "litellm_master_key is shorter than 32 characters: " + FIX),
    "empty client key": ({"paperless_ai_api_key": " "}, "paperless_ai_api_key is empty: " + FIX),
    "paperless-ai given the master key": (
        {"litellm_master_key": "sk-secret-canary-0123456789abcdef0451", "paperless_ai_api_key":
         "sk-secret-canary-0123456789abcdef0451"},
        "paperless_ai_api_key is the master key: give the client its own key (in litellm_client_keys)"),
    "client key shared": (
        {"litellm_client_keys": [{"name": "a", "keys": ["secret-canary-shared-0451"], "models": ["vllm-qwen"]},
                                 {"name": "b", "keys": ["secret-canary-shared-0451"], "models": ["vllm-qwen"]}],
         "paperless_ai_api_key": "secret-canary-shared-0451"},
        "litellm_client_keys[1] (b).keys[0] is also a key of litellm_client_keys[0] (a): give every client its own "
        "keys"),
}


@pytest.mark.parametrize("name", sorted(BAD_KEYS))
def test_an_unusable_key_fails_in_preflight_with_one_line_naming_the_variable_not_the_value(name, api_listener):
    keys, expected = BAD_KEYS[name]
    kubeconfig, connections = api_listener
    result = ansible_playbook("site.yml", "-e", json.dumps(dict(keys, inference_kubeconfig=str(kubeconfig))))
    output = result.stdout + result.stderr
    assert failed_tasks(result) == [expected], output[-3000:]
    assert "TASK [homelab.inference.catalog : Check the keys from the vault]" in result.stdout
    for value in keys.values():
        assert not isinstance(value, str) or not value.strip() or value not in output
    assert "secret-canary" not in output
    assert connections == [], "the play contacted the cluster with an unusable key"


def test_the_shipped_catalog_is_valid():
    from ansible_collections.homelab.inference.plugins.module_utils._catalog import catalog_errors
    assert catalog_errors(CATALOG["inference_models"], CATALOG["inference_fallback_chain"],
                          CATALOG["inference_gpu_modes"], CATALOG["inference_gpu_default_mode"]) == []


def test_gpu_mode_playbook_refuses_an_unknown_mode_before_any_cluster_call(api_listener):
    kubeconfig, connections = api_listener
    result = ansible_playbook("gpu_mode.yml", "-e", "mode=turbo", "-e", "inference_kubeconfig=%s" % kubeconfig)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "mode: 'turbo' is not a mode; use one of gaming, ml, r1, or status" in output, output[-2000:]
    assert connections == []


def test_gpu_mode_playbook_says_in_one_line_when_the_api_is_unreachable(api_listener):
    kubeconfig, connections = api_listener
    result = ansible_playbook("gpu_mode.yml", "-e", "mode=status", "-e", "inference_kubeconfig=%s" % kubeconfig)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    prefix = "[ERROR]: Task failed: Module failed: "
    failures = [line[len(prefix):] for line in output.splitlines() if line.startswith(prefix)]
    assert len(failures) == 1, output[-3000:]
    assert failures[0].endswith("check kubeconfig, context and host"), failures
    assert connections, "it did try the API server"
