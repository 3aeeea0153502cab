"""Each client its own key, on the REAL LiteLLM proxy without a database: the hook knows
the keys by their SHA-256 (INFERENCE_CLIENT_KEYS) and LiteLLM's own checks
(custom_auth_run_common_checks) hold a client key to its models, its quotas and the
LLM API routes. The master key keeps every right; any other key gets 401."""

from __future__ import annotations

import json

import pytest

from testkit.gateway_rig import MASTER_KEY, Gateway, render_gateway

PAPERLESS = "pl-0123456789abcdef0123456789abcdef01"
SCRIPTS_OLD = "sc-old-0123456789abcdef0123456789abcd"
SCRIPTS_NEW = "sc-new-0123456789abcdef0123456789abcd"
CLIENTS = [
    {"name": "paperless-ai", "keys": [PAPERLESS], "models": ["vllm-qwen", "ollama-qwen", "openai-gpt4o"],
     "requests_per_minute": 3},
    {"name": "scripts", "keys": [SCRIPTS_OLD, SCRIPTS_NEW], "models": ["ollama-qwen", "groq/llama-3.3-70b-versatile"]},
]
ADMIN_ROUTES = (("POST", "/key/generate"), ("POST", "/config/update"), ("POST", "/model/new"),
                ("GET", "/global/spend/logs"), ("POST", "/user/new"), ("GET", "/get/config/callbacks"))


def gateway_with(tmp_path, upstreams, clients):
    config_dir, env, _ = render_gateway(tmp_path, upstreams, litellm_client_keys=clients,
                                        paperless_ai_api_key=PAPERLESS)
    return Gateway(config_dir, env).start(), env


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, upstreams):
    running, env = gateway_with(tmp_path_factory.mktemp("client-keys"), upstreams, CLIENTS)
    yield running, env
    running.stop()


def error_of(answer):
    return answer.get("error", {}) if isinstance(answer, dict) else {}


def test_a_client_key_calls_its_models_and_no_other(gateway):
    running, _ = gateway
    assert running.chat("vllm-qwen", key=PAPERLESS)[0] == 200
    status, answer, _, _ = running.chat("groq/llama-3.3-70b-versatile", key=PAPERLESS)
    assert (status, error_of(answer).get("type")) == (403, "key_model_access_denied"), answer
    assert running.chat("groq/llama-3.3-70b-versatile", key=SCRIPTS_NEW)[0] == 200
    status, answer, _, _ = running.chat("vllm-qwen", key=SCRIPTS_NEW)
    assert (status, error_of(answer).get("type")) == (403, "key_model_access_denied"), answer
    # The listing shows a client what it may call, and nothing else.
    status, _, text, _ = running.request("GET", "/v1/models", key=SCRIPTS_NEW)
    assert status == 200 and sorted(m["id"] for m in json.loads(text)["data"]) == ["groq/llama-3.3-70b-versatile",
                                                                                  "ollama-qwen"]


def test_a_client_key_reaches_no_admin_route_the_master_key_does(gateway):
    running, _ = gateway
    for method, path in ADMIN_ROUTES:
        body = {} if method == "POST" else None
        status, _, text, _ = running.request(method, path, body, key=PAPERLESS)
        assert status == 403 and "not allowed to call this route" in text, (path, status, text)
        # The master key gets past the check (without a database some of these cannot work: not 401 or 403).
        assert running.request(method, path, body, key=MASTER_KEY)[0] not in (401, 403), path


def test_a_wrong_key_is_refused_and_the_master_key_still_calls_everything(gateway):
    running, _ = gateway
    status, answer, _, _ = running.chat("vllm-qwen", key="not-a-client-0123456789abcdef0123456789")
    assert status == 401 and "Invalid or missing API key" in error_of(answer).get("message", ""), answer
    for model in ("vllm-qwen", "groq/llama-3.3-70b-versatile"):
        assert running.chat(model, key=MASTER_KEY)[0] == 200, model


def test_the_secret_holds_the_hashes_of_the_keys_never_the_keys(gateway):
    _, env = gateway
    table = json.loads(env["INFERENCE_CLIENT_KEYS"])
    assert len(table) == 3 and {e["client"] for e in table.values()} == {"paperless-ai", "scripts"}
    for key in (PAPERLESS, SCRIPTS_OLD, SCRIPTS_NEW):
        assert key not in env["INFERENCE_CLIENT_KEYS"]


def test_a_client_over_its_requests_per_minute_gets_429(gateway):
    running, _ = gateway
    codes = [running.chat("ollama-qwen", key=PAPERLESS)[0] for _ in range(5)]
    # Three a minute, one of them asked by the first test (the limit counts per key and minute).
    assert 429 in codes and codes.index(429) <= 3 and set(codes) <= {200, 429}, codes
    assert running.chat("ollama-qwen", key=SCRIPTS_NEW)[0] == 200, "another client's quota is its own"


def test_rotation_both_keys_answer_until_the_old_one_is_removed(tmp_path, gateway, upstreams):
    running, _ = gateway
    assert running.chat("ollama-qwen", key=SCRIPTS_OLD)[0] == 200
    assert running.chat("ollama-qwen", key=SCRIPTS_NEW)[0] == 200
    rotated = [dict(CLIENTS[0]), dict(CLIENTS[1], keys=[SCRIPTS_NEW])]
    after, _ = gateway_with(tmp_path, upstreams, rotated)
    try:
        assert after.chat("ollama-qwen", key=SCRIPTS_OLD)[0] == 401
        assert after.chat("ollama-qwen", key=SCRIPTS_NEW)[0] == 200
    finally:
        after.stop()
