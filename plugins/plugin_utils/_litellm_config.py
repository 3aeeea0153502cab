# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""LiteLLM's config.yaml, and the settings of the gateway hook, from the catalog.

Pure functions. Why each setting is what it is (measured on the real proxy,
see roles/litellm/README.md):

- every tier is its own model group, and the chain is LiteLLM ``fallbacks``
  in ``litellm_settings`` (a shared model_name would load-balance instead);
- ``num_retries: 0`` and ``max_retries: 0``: the fallback is the retry. A
  retry against a tier that refuses or hangs only adds its back-off or its
  timeout to every request;
- a cooldown takes a failing tier out of rotation, so during an outage
  requests go straight to the next tier; it is short, so a tier that comes
  back (a GPU mode switch) is used again soon;
- a model with nothing to fall back to (a parallel model, the chain's last
  tier, a vLLM model outside the chain) gets no cooldown: a cooldown would
  only replace its own error with "No deployments available" (429), and keep
  a vLLM model refused for a while after a switch to its mode;
- the in-cluster backends (vLLM, Ollama) get no cooldown either: the hook
  probes their health and skips one only while it is dead, so a slow answer
  never cools a healthy server down and a server that comes back serves
  within one probe interval. Their ``timeout`` is only a backstop for a
  healthy answer's length, never the test of life.
"""

from __future__ import annotations

from ansible_collections.homelab.inference.plugins.module_utils import _catalog

HOOK_MODULE = "inference_gateway"
LOCAL_BACKENDS = _catalog.LOCAL_BACKENDS


def local_api_base(backend, api_bases):
    """Where LiteLLM sends an in-cluster backend's requests: Ollama's OpenAI-compatible /v1."""
    api_base = api_bases[backend].rstrip("/")
    return api_base + "/v1" if backend == "ollama" else api_base


def probe_url(backend, api_bases):
    """The health endpoint that answers at once while the model generates.

    vLLM: ``/health`` at the server's root (vllm/entrypoints/openai/api_server.py, v0.11.0);
    Ollama: ``/api/version`` (server/routes.go, v0.13.5)."""
    root = api_bases[backend].rstrip("/")
    if backend == "vllm":
        return (root[:-len("/v1")] if root.endswith("/v1") else root) + "/health"
    return root + "/api/version"


def _provider_model(entry):
    backend = entry["backend"]
    if backend == "vllm":
        # vLLM serves the model under its catalog name (--served-model-name).
        return "openai/" + entry["name"]
    if backend == "ollama":
        # Ollama's OpenAI-compatible endpoint: LiteLLM's native ollama_chat
        # route cost ~8 ms more per request on the real proxy.
        return "openai/" + entry["model"]
    return "%s/%s" % (backend, entry["model"])


def deployment(entry, settings, falls_back):
    """One model_list entry; ``falls_back``: a tier with a next tier after it."""
    backend = entry["backend"]
    params = {"model": _provider_model(entry)}
    api_base = settings["api_bases"].get(backend)
    if api_base and backend in LOCAL_BACKENDS:
        api_base = local_api_base(backend, settings["api_bases"])
    if api_base:
        params["api_base"] = api_base
    if backend in LOCAL_BACKENDS:
        params["api_key"] = "not-needed"  # no key on vLLM or Ollama; the client library wants a value
    elif backend in _catalog.CLOUD_BACKENDS:
        params["api_key"] = "os.environ/" + _catalog.CLOUD_BACKENDS[backend]
    timeout = entry.get("timeout", settings["default_timeout"])
    params.update(timeout=timeout, stream_timeout=timeout, max_retries=0)
    if not falls_back or backend in LOCAL_BACKENDS:
        params["cooldown_time"] = 0
    return {"model_name": entry["name"], "litellm_params": params}


def fallbacks(chain):
    """Each tier falls back to every tier after it, in order; ``default`` as the head."""
    rules = [{member: chain[index + 1:]} for index, member in enumerate(chain[:-1])]
    return [{_catalog.DEFAULT_ALIAS: chain[1:]}] + rules if len(chain) > 1 else rules


def build_config(models, chain, settings):
    """The whole config.yaml as a dict."""
    model_list = [deployment(entry, settings, entry["name"] in chain[:-1]) for entry in models]
    litellm_settings = {
        "num_retries": 0,
        "request_timeout": max(entry.get("timeout", settings["default_timeout"]) for entry in models),
        "fallbacks": fallbacks(chain),
        "callbacks": ["%s.gateway" % HOOK_MODULE] + (["prometheus"] if settings.get("prometheus") else []),
        "require_auth_for_metrics_endpoint": bool(settings.get("metrics_require_auth")),
        "drop_params": True,
    }
    router_settings = {
        "routing_strategy": "simple-shuffle",
        "model_group_alias": {_catalog.DEFAULT_ALIAS: chain[0]},
        "cooldown_time": settings["cooldown_time"],
        "allowed_fails": settings["allowed_fails"],
    }
    redis = settings.get("redis")
    if redis:
        # Cooldowns and rate-limit state shared by every replica.
        router_settings.update(redis_host="os.environ/REDIS_HOST", redis_port="os.environ/REDIS_PORT")
        if redis.get("password"):
            router_settings["redis_password"] = "os.environ/REDIS_PASSWORD"
    general_settings = {"master_key": "os.environ/LITELLM_MASTER_KEY"}
    if settings.get("database"):
        general_settings["database_url"] = "os.environ/DATABASE_URL"
    else:
        # Without a database the master key is the only key; a wrong one gets 401.
        general_settings["custom_auth"] = "%s.user_api_key_auth" % HOOK_MODULE
    return {"model_list": model_list, "litellm_settings": litellm_settings, "router_settings": router_settings,
            "general_settings": general_settings}


def build_gateway_settings(models, chain, modes, settings):
    """inference_gateway.json: what the hook needs to know of the catalog."""
    entries = {}
    for entry in models:
        item = {"backend": entry["backend"], "fallbacks": entry["name"] in chain[:-1]}
        if entry["backend"] == "vllm":
            item["api_base"] = settings["api_bases"]["vllm"]
        quota = {key: entry[key] for key in ("requests_per_minute", "requests_per_day") if entry.get(key)}
        if quota:
            item["quota"] = quota
        entries[entry["name"]] = item
    out = {
        "models": entries,
        "gpu_modes": {name: mode.get("vllm_model") for name, mode in modes.items()},
        "fallback_model": _catalog.DEFAULT_ALIAS,
        "switch_command": settings["switch_command"],
        "quota_window_seconds": settings["quota_window_seconds"],
        "quota_max_wait_seconds": settings["quota_max_wait_seconds"],
        "liveness": liveness_settings(models, settings),
    }
    if settings.get("on_demand_url"):
        out["on_demand"] = {"url": settings["on_demand_url"]}
    return out


def liveness_settings(models, settings):
    """The hook's health probes: every in-cluster backend a model of the catalog uses."""
    api_bases = settings["api_bases"]
    used = sorted({entry["backend"] for entry in models if entry["backend"] in LOCAL_BACKENDS and
                   api_bases.get(entry["backend"])})
    probe = settings.get("probe", {})
    return {
        "backends": {backend: {"api_base": local_api_base(backend, api_bases), "probe": probe_url(backend, api_bases)}
                     for backend in used},
        "interval": probe.get("interval", 2), "timeout": probe.get("timeout", 2),
        "failures": probe.get("failures", 2), "connect_timeout": probe.get("connect_timeout", 2),
    }
