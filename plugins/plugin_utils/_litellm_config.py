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

import hashlib

from ansible_collections.homelab.inference.plugins.module_utils import _catalog
from ansible_collections.homelab.inference.plugins.plugin_utils._verify import key_state

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
        # Without a database the hook knows the keys: the master key and the clients' (INFERENCE_CLIENT_KEYS);
        # LiteLLM's own checks then hold a client key to its models, quotas and the LLM API routes.
        general_settings["custom_auth"] = "%s.user_api_key_auth" % HOOK_MODULE
        general_settings["custom_auth_run_common_checks"] = True
        litellm_settings["enable_post_custom_auth_checks"] = True
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


CLIENT_KEY_FIX = "put a random key in the vault (openssl rand -hex 24 makes one of 48 characters)"


def client_key_table(clients):
    """INFERENCE_CLIENT_KEYS: each client key's SHA-256 to its client, models and quotas. Only hashes leave the
    controller for the gateway, so the Secret does not hold the clients' keys."""
    table = {}
    for client in clients or []:
        entry = {"client": client["name"], "models": list(client["models"])}
        for field, short in (("requests_per_minute", "rpm"), ("tokens_per_minute", "tpm")):
            if client.get(field):
                entry[short] = int(client[field])
        for key in client["keys"]:
            table[hashlib.sha256(str(key).strip().encode()).hexdigest()] = entry
    return table


def client_key_errors(clients, models, master_key, client_key_of=None, database=False):
    """The preflight's lines for ``litellm_client_keys``, each naming the field and the fix, never a key.
    ``client_key_of``: {variable: key} of deployed clients that must use their own client key (Paperless-AI)."""
    errors, owner, names = [], {}, set()
    known = [entry["name"] for entry in models]
    clients = clients or []
    if clients and database:
        return ["litellm_client_keys: the hook's client keys work without a database; with litellm_database_url "
                "set, give each client a virtual key of LiteLLM's instead and leave litellm_client_keys empty"]
    for index, client in enumerate(clients):
        where = "litellm_client_keys[%d]" % index
        name = client.get("name") if isinstance(client, dict) else None
        if not name or not isinstance(name, str):
            errors.append("%s.name: missing; name the client (for example paperless-ai)" % where)
            continue
        if name in names:
            errors.append("%s.name: '%s' is declared twice; give each client one entry with all its keys" % (where, name))
        names.add(name)
        where = "%s (%s)" % (where, name)
        keys = client.get("keys")
        if not isinstance(keys, list) or not keys:
            errors.append("%s.keys: missing; list the client's keys (two while rotating)" % where)
            keys = []
        for number, key in enumerate(keys):
            field = "%s.keys[%d]" % (where, number)
            state = key_state(key)
            if state != "set":
                errors.append("%s is %s: %s" % (field, "empty" if state == "missing" else "an example placeholder",
                                                CLIENT_KEY_FIX))
            elif master_key and str(key).strip() == str(master_key).strip():
                errors.append("%s is the master key: give every client its own key (%s)" % (field, CLIENT_KEY_FIX))
            elif str(key).strip() in owner:
                errors.append("%s is also a key of %s: give every client its own keys" % (field, owner[str(key).strip()]))
            else:
                owner[str(key).strip()] = where
        allowed = client.get("models")
        if not isinstance(allowed, list) or not allowed:
            errors.append("%s.models: missing; list the models the client may call" % where)
            allowed = []
        for number, model in enumerate(allowed):
            if model not in known:
                errors.append("%s.models[%d]: '%s' is not a model in inference_models; use one of %s"
                              % (where, number, model, ", ".join(known)))
        for field in ("requests_per_minute", "tokens_per_minute"):
            value = client.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                errors.append("%s.%s: %r is not a positive whole number; give one, or leave it out for no limit"
                              % (where, field, value))
    for variable, key in (client_key_of or {}).items():
        if master_key and str(key or "").strip() == str(master_key).strip():
            errors.append("%s is the master key: give the client its own key (%s)" % (
                variable, "a virtual key of LiteLLM's" if database else "in litellm_client_keys"))
        elif not database and str(key or "").strip() and str(key).strip() not in owner:
            errors.append("%s is not a key of litellm_client_keys: add a client for it with that key and the "
                          "models it calls" % variable)
    return errors
