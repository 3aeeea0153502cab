from __future__ import annotations

import hashlib

import pytest

from ansible_collections.homelab.inference.plugins.plugin_utils import _litellm_config

MODELS = [
    {"name": "vllm-qwen", "backend": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct-AWQ", "timeout": 3},
    {"name": "ollama-qwen", "backend": "ollama", "model": "qwen2.5:3b", "timeout": 120},
    {"name": "openai-gpt4o", "backend": "openai", "model": "gpt-4o-mini", "timeout": 30},
    {"name": "vllm-r1", "backend": "vllm", "model": "r1", "timeout": 60, "reasoning": True},
    {"name": "groq/llama", "backend": "groq", "model": "llama", "parallel": True, "requests_per_minute": 30,
     "requests_per_day": 6000},
    {"name": "gemini/flash", "backend": "gemini", "model": "gemini-2.0-flash", "parallel": True},
]
CHAIN = ["vllm-qwen", "ollama-qwen", "openai-gpt4o"]
MODES = {"ml": {"vllm_model": "vllm-qwen"}, "r1": {"vllm_model": "vllm-r1"}, "gaming": {"vllm_model": None}}
SETTINGS = {"api_bases": {"vllm": "http://vllm-api:8000/v1", "ollama": "http://ollama:11434"}, "default_timeout": 30,
            "cooldown_time": 10, "allowed_fails": 0, "prometheus": True, "switch_command": "gpu_mode {mode}",
            "quota_window_seconds": 60, "quota_max_wait_seconds": 10}


def config(**settings):
    return _litellm_config.build_config(MODELS, CHAIN, dict(SETTINGS, **settings))


def params(cfg, name):
    return next(d["litellm_params"] for d in cfg["model_list"] if d["model_name"] == name)


def test_every_tier_is_its_own_model_group():
    names = [d["model_name"] for d in config()["model_list"]]
    assert names == [m["name"] for m in MODELS]
    assert len(set(names)) == len(names), "a shared model_name would load-balance instead of failing over"


def test_fallbacks_live_in_litellm_settings_and_follow_the_chain():
    cfg = config()
    assert "fallbacks" not in cfg["router_settings"]
    assert cfg["litellm_settings"]["fallbacks"] == [
        {"default": ["ollama-qwen", "openai-gpt4o"]},
        {"vllm-qwen": ["ollama-qwen", "openai-gpt4o"]},
        {"ollama-qwen": ["openai-gpt4o"]},
    ]
    assert cfg["router_settings"]["model_group_alias"] == {"default": "vllm-qwen"}


def test_parallel_models_never_appear_in_fallbacks():
    rules = config()["litellm_settings"]["fallbacks"]
    mentioned = {name for rule in rules for key, targets in rule.items() for name in [key] + targets}
    assert "groq/llama" not in mentioned and "gemini/flash" not in mentioned


@pytest.mark.parametrize("name, expected", [
    ("vllm-qwen", {"model": "openai/vllm-qwen", "api_base": "http://vllm-api:8000/v1", "api_key": "not-needed",
                   "timeout": 3, "stream_timeout": 3, "max_retries": 0, "cooldown_time": 0}),
    ("ollama-qwen", {"model": "openai/qwen2.5:3b", "api_base": "http://ollama:11434/v1", "api_key": "not-needed",
                     "timeout": 120, "stream_timeout": 120, "max_retries": 0, "cooldown_time": 0}),
    ("openai-gpt4o", {"model": "openai/gpt-4o-mini", "api_key": "os.environ/OPENAI_API_KEY", "timeout": 30,
                      "stream_timeout": 30, "max_retries": 0, "cooldown_time": 0}),
    ("vllm-r1", {"model": "openai/vllm-r1", "api_base": "http://vllm-api:8000/v1", "api_key": "not-needed",
                 "timeout": 60, "stream_timeout": 60, "max_retries": 0, "cooldown_time": 0}),
    ("gemini/flash", {"model": "gemini/gemini-2.0-flash", "api_key": "os.environ/GEMINI_API_KEY", "timeout": 30,
                      "stream_timeout": 30, "max_retries": 0, "cooldown_time": 0}),
])
def test_deployment_params(name, expected):
    assert params(config(), name) == expected


def test_no_secret_value_only_environment_references():
    cfg = config(redis={"password": True}, database=True)
    assert cfg["general_settings"] == {"master_key": "os.environ/LITELLM_MASTER_KEY",
                                       "database_url": "os.environ/DATABASE_URL"}
    assert cfg["router_settings"]["redis_password"] == "os.environ/REDIS_PASSWORD"


def test_without_a_database_the_hook_checks_keys():
    assert config()["general_settings"]["custom_auth"] == "inference_gateway.user_api_key_auth"


def test_redis_only_when_asked():
    assert "redis_host" not in config()["router_settings"]
    router = config(redis={"password": False})["router_settings"]
    assert router["redis_host"] == "os.environ/REDIS_HOST" and "redis_password" not in router


def test_only_cloud_tiers_with_a_next_tier_cool_down():
    cooling = [d["model_name"] for d in config()["model_list"] if d["litellm_params"].get("cooldown_time") != 0]
    assert cooling == [], "vLLM and Ollama are skipped by the hook's health probes, never by a cooldown"
    chain = ["vllm-qwen", "openai-gpt4o", "ollama-qwen"]
    cfg = _litellm_config.build_config(MODELS, chain, SETTINGS)
    assert [d["model_name"] for d in cfg["model_list"] if d["litellm_params"].get("cooldown_time") != 0] == [
        "openai-gpt4o"]


def test_liveness_probes_every_in_cluster_backend_at_its_health_endpoint():
    settings = _litellm_config.build_gateway_settings(MODELS, CHAIN, MODES, dict(SETTINGS, probe={
        "interval": 1.5, "timeout": 1, "failures": 3, "connect_timeout": 0.5}))
    assert settings["liveness"] == {
        "backends": {"ollama": {"api_base": "http://ollama:11434/v1", "probe": "http://ollama:11434/api/version"},
                     "vllm": {"api_base": "http://vllm-api:8000/v1", "probe": "http://vllm-api:8000/health"}},
        "interval": 1.5, "timeout": 1, "failures": 3, "connect_timeout": 0.5}
    # The probe's api_base is the deployment's, so the hook can tell which deployments a backend serves.
    cfg = config()
    assert params(cfg, "ollama-qwen")["api_base"] == settings["liveness"]["backends"]["ollama"]["api_base"]
    assert params(cfg, "vllm-qwen")["api_base"] == settings["liveness"]["backends"]["vllm"]["api_base"]


@pytest.mark.parametrize("api_base, probe", [("http://v:8000/v1/", "http://v:8000/health"),
                                             ("http://v:8000", "http://v:8000/health")])
def test_vllm_probe_is_at_the_server_root(api_base, probe):
    assert _litellm_config.probe_url("vllm", {"vllm": api_base}) == probe


def test_no_probe_for_a_backend_no_model_uses():
    cloud_only = [m for m in MODELS if m["backend"] not in ("vllm", "ollama")]
    settings = _litellm_config.build_gateway_settings(cloud_only, ["gemini/flash"], {}, SETTINGS)
    assert settings["liveness"]["backends"] == {}


def test_no_retries_and_a_short_cooldown():
    cfg = config()
    assert cfg["litellm_settings"]["num_retries"] == 0
    assert cfg["router_settings"]["cooldown_time"] == 10 and cfg["router_settings"]["allowed_fails"] == 0
    assert all(d["litellm_params"]["max_retries"] == 0 for d in cfg["model_list"])


def test_callbacks():
    assert config()["litellm_settings"]["callbacks"] == ["inference_gateway.gateway", "prometheus"]
    assert config(prometheus=False)["litellm_settings"]["callbacks"] == ["inference_gateway.gateway"]


def test_gateway_settings():
    settings = _litellm_config.build_gateway_settings(MODELS, CHAIN, MODES, SETTINGS)
    assert settings["models"]["groq/llama"] == {"backend": "groq", "fallbacks": False,
                                                "quota": {"requests_per_minute": 30, "requests_per_day": 6000}}
    assert settings["models"]["vllm-r1"] == {"backend": "vllm", "fallbacks": False,
                                             "api_base": "http://vllm-api:8000/v1"}
    assert settings["models"]["vllm-qwen"]["fallbacks"] is True
    assert settings["models"]["openai-gpt4o"]["fallbacks"] is False, "the chain's last tier has nothing after it"
    assert settings["gpu_modes"] == {"ml": "vllm-qwen", "r1": "vllm-r1", "gaming": None}
    assert settings["fallback_model"] == "default"


CLIENT = {"name": "paperless-ai", "keys": ["k" * 40], "models": ["vllm-qwen"]}
MASTER = "m" * 40


def test_without_a_database_the_hook_knows_the_keys_and_litellm_enforces_them():
    config = _litellm_config.build_config(MODELS, CHAIN, SETTINGS)
    assert config["general_settings"]["custom_auth"] == "inference_gateway.user_api_key_auth"
    assert config["general_settings"]["custom_auth_run_common_checks"] is True
    assert config["litellm_settings"]["enable_post_custom_auth_checks"] is True
    with_db = _litellm_config.build_config(MODELS, CHAIN, dict(SETTINGS, database=True))
    assert "custom_auth" not in with_db["general_settings"]
    assert "enable_post_custom_auth_checks" not in with_db["litellm_settings"]


def test_the_client_key_table_holds_hashes_and_each_rotating_key():
    table = _litellm_config.client_key_table([dict(CLIENT, keys=["old-key", "new-key"], requests_per_minute=5)])
    assert sorted(table) == sorted(hashlib.sha256(k).hexdigest() for k in (b"old-key", b"new-key"))
    assert list(table.values())[0] == {"client": "paperless-ai", "models": ["vllm-qwen"], "rpm": 5}
    assert "old-key" not in str(table) and "new-key" not in str(table)


@pytest.mark.parametrize("clients, paperless, expected", [
    ([CLIENT], "k" * 40, []),
    ([dict(CLIENT, keys=["sk-CHANGE-ME"])], None,
     ["litellm_client_keys[0] (paperless-ai).keys[0] is an example placeholder: " + _litellm_config.CLIENT_KEY_FIX]),
    ([dict(CLIENT, keys=[" "])], None,
     ["litellm_client_keys[0] (paperless-ai).keys[0] is empty: " + _litellm_config.CLIENT_KEY_FIX]),
    ([dict(CLIENT, keys=[MASTER])], None,
     ["litellm_client_keys[0] (paperless-ai).keys[0] is the master key: give every client its own key (%s)"
      % _litellm_config.CLIENT_KEY_FIX]),
    ([CLIENT, dict(CLIENT, name="scripts")], None,
     ["litellm_client_keys[1] (scripts).keys[0] is also a key of litellm_client_keys[0] (paperless-ai): give every "
      "client its own keys"]),
    ([CLIENT, dict(CLIENT, keys=["s" * 40])], None,
     ["litellm_client_keys[1].name: 'paperless-ai' is declared twice; give each client one entry with all its keys"]),
    ([dict(CLIENT, models=["vllm-qwen", "gpt-5"])], None,
     ["litellm_client_keys[0] (paperless-ai).models[1]: 'gpt-5' is not a model in inference_models; use one of "
      + ", ".join(m["name"] for m in MODELS)]),
    ([dict(CLIENT, requests_per_minute=0)], None,
     ["litellm_client_keys[0] (paperless-ai).requests_per_minute: 0 is not a positive whole number; give one, or "
      "leave it out for no limit"]),
    ([dict(CLIENT, keys=[])], None,
     ["litellm_client_keys[0] (paperless-ai).keys: missing; list the client's keys (two while rotating)"]),
    ([CLIENT], MASTER, ["paperless_ai_api_key is the master key: give the client its own key (in litellm_client_keys)"]),
    ([CLIENT], "p" * 40, ["paperless_ai_api_key is not a key of litellm_client_keys: add a client for it with that key "
                          "and the models it calls"]),
])
def test_client_key_errors_name_the_field_and_never_a_key(clients, paperless, expected):
    errors = _litellm_config.client_key_errors(clients, MODELS, MASTER,
                                               {"paperless_ai_api_key": paperless} if paperless else {})
    assert errors == expected
    assert not any(secret in line for secret in ("k" * 40, MASTER, "p" * 40, "s" * 40) for line in errors)


def test_with_a_database_clients_get_virtual_keys_instead():
    assert _litellm_config.client_key_errors([CLIENT], MODELS, MASTER, {}, True)[0].startswith(
        "litellm_client_keys: the hook's client keys work without a database")
    assert _litellm_config.client_key_errors([], MODELS, MASTER, {"paperless_ai_api_key": MASTER}, True) == [
        "paperless_ai_api_key is the master key: give the client its own key (a virtual key of LiteLLM's)"]
    assert _litellm_config.client_key_errors([], MODELS, MASTER, {"paperless_ai_api_key": "p" * 40}, True) == []
