"""The REAL LiteLLM proxy on the config the litellm role renders, in front of
FAKE upstreams: listing and auth, the fallback chain (plain and streamed),
parallel models, the reasoning model and GPU modes. Hit counters on the fakes
say who answered."""

from __future__ import annotations

import json

import pytest

from testkit.gateway_rig import Gateway, render_gateway, streamed_text

CATALOG_MODELS = ["vllm-qwen", "ollama-qwen", "openai-gpt4o", "vllm-r1", "groq/llama-3.3-70b-versatile",
                  "groq/mixtral-8x7b-32768", "gemini/gemini-2.0-flash", "gemini/gemini-2.5-flash",
                  "mistral/mistral-small-latest"]
# The hook's probes (litellm_probe_*): a hung backend is found within interval + failures x timeout.
HANG_BOUND = 2 + 2 * 2
NOBODY = {"vllm": 0, "ollama": 0, "openai": 0, "groq": 0, "mistral": 0, "gemini": 0}


def only(**hits):
    return dict(NOBODY, **hits)


@pytest.fixture(scope="module")
def rendered(upstreams, tmp_path_factory):
    return render_gateway(tmp_path_factory.mktemp("gateway"), upstreams)


@pytest.fixture
def gateway(rendered, upstreams):
    """A freshly started proxy per test (cooldowns never leak between tests), every
    upstream healthy, vLLM in ML mode."""
    config_dir, env, _ = rendered
    if upstreams.vllm.stopped:
        upstreams.restart_vllm()
    upstreams.vllm.reset(models=["vllm-qwen"], reasoning_parser=None)
    for server in upstreams.all():
        server.reset_counters()
        if hasattr(server, "behaviour"):
            server.behaviour = "ok"
    for name in ("ollama",):
        if getattr(upstreams, name).stopped:
            pytest.fail("a test left %s stopped" % name)
    proxy = Gateway(config_dir, env).start()
    yield proxy
    proxy.stop()


def listed(gateway):
    status, _, text, _ = gateway.request("GET", "/v1/models")
    assert status == 200, text
    return sorted(m["id"] for m in json.loads(text)["data"])


def test_models_listed_as_they_answer_now_auth_health_and_metrics(gateway, upstreams):
    # ml: vllm-r1 would get a 404, so it is not listed; the chain's models always answer.
    in_ml = sorted(set(CATALOG_MODELS + ["default"]) - {"vllm-r1"})
    assert listed(gateway) == in_ml
    assert gateway.request("GET", "/v1/models/vllm-r1")[0] == 404
    assert gateway.request("GET", "/v1/models/vllm-qwen")[0] == 200
    upstreams.vllm.reset(models=["vllm-r1"], reasoning_parser="deepseek_r1")  # r1
    assert listed(gateway) == sorted(CATALOG_MODELS + ["default"])
    upstreams.vllm.stop()  # gaming: vLLM stopped, the chain answers from the CPU tier
    assert listed(gateway) == in_ml
    upstreams.restart_vllm()
    upstreams.vllm.reset(models=["vllm-qwen"], reasoning_parser=None)
    assert gateway.request("GET", "/v1/models", key=None)[0] == 401
    assert gateway.request("GET", "/v1/models", key="sk-wrong")[0] == 401
    assert gateway.chat("vllm-qwen", key="sk-wrong")[0] == 401
    assert gateway.request("GET", "/health/liveliness", key=None)[0] == 200
    assert gateway.request("GET", "/health/readiness", key=None)[0] == 200
    assert gateway.chat("vllm-qwen")[0] == 200
    status, _, metrics, _ = gateway.request("GET", "/metrics/", key=None)
    assert status == 200
    assert 'litellm_proxy_total_requests_metric_total{' in metrics and 'requested_model="vllm-qwen"' in metrics


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_vllm_up_serves_the_chain(gateway, upstreams, stream):
    status, answer, _, _ = gateway.chat("vllm-qwen", stream=stream)
    assert status == 200
    text = streamed_text(answer) if stream else answer["choices"][0]["message"]["content"]
    assert text.strip() == "Hello from the fake model."
    assert gateway.chat("default", stream=stream)[0] == 200
    assert upstreams.chat_hits() == only(vllm=2)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_vllm_refusing_falls_back_to_ollama(gateway, upstreams, stream):
    upstreams.vllm.stop()
    for model in ("vllm-qwen", "default", "vllm-qwen"):
        status, answer, headers, _ = gateway.chat(model, stream=stream)
        assert status == 200, answer
        assert headers["x-litellm-model-group"] == "ollama-qwen", "clients can tell which tier answered"
        text = streamed_text(answer) if stream else answer["choices"][0]["message"]["content"]
        assert text.strip() == "Hello from the fake Ollama model."
        if stream:
            assert answer[-1] == "[DONE]"
    assert upstreams.chat_hits() == only(ollama=3)
    # The metric the LiteLLMFallbacksFiring alert watches exists on the pinned version.
    metrics = gateway.request("GET", "/metrics/", key=None)[2]
    assert "litellm_deployment_successful_fallbacks_total{" in metrics


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_vllm_and_ollama_down_falls_back_to_openai(gateway, upstreams, stream):
    upstreams.vllm.stop()
    upstreams.ollama.stop()
    try:
        status, answer, _, _ = gateway.chat("vllm-qwen", stream=stream)
    finally:
        upstreams.ollama = type(upstreams.ollama)(("127.0.0.1", int(upstreams.ollama.url.rsplit(":", 1)[1])),
                                                  models=["qwen2.5:3b", "llama3.2:1b"]).start()
    assert status == 200, answer
    text = streamed_text(answer) if stream else answer["choices"][0]["message"]["content"]
    assert text.strip() == "Hello from the fake model."
    assert upstreams.openai.requests[-1]["model"] == "gpt-4o-mini"
    assert upstreams.openai.requests[-1]["authorization"] == "Bearer sk-test-openai"
    assert upstreams.chat_hits() == only(openai=1)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_hanging_vllm_is_found_by_its_health_probe_and_its_requests_fail_over(gateway, upstreams, stream):
    upstreams.vllm.behaviour = "hang"  # accepts connections, answers nothing: /health neither
    # Without the probes the request would wait for vLLM's backstop timeout (300 s).
    status, answer, headers, _ = gateway.chat("vllm-qwen", stream=stream, timeout=2 * HANG_BOUND)
    assert status == 200, answer
    assert headers["x-litellm-model-group"] == "ollama-qwen"
    text = streamed_text(answer) if stream else answer["choices"][0]["message"]["content"]
    assert text.strip() == "Hello from the fake Ollama model."
    assert "failed 2 health probes in a row" in gateway.proxy.log_tail(400), "found dead by its probes"
    # Found dead: the next request goes straight to Ollama.
    assert gateway.chat("vllm-qwen", stream=stream)[0] == 200
    hits = upstreams.chat_hits()
    assert hits["vllm"] <= 1 and hits["ollama"] == 2 and hits["openai"] == 0


def test_a_stream_that_dies_after_its_first_chunk_ends_with_an_error_event(gateway, upstreams):
    upstreams.vllm.behaviour = "die_mid_stream"
    status, events, _, _ = gateway.chat("vllm-qwen", stream=True)
    assert status == 200
    assert streamed_text(events).strip() == "Hello", "the chunk sent before the drop is delivered"
    assert "[DONE]" not in events, "a truncated stream must not look complete"
    assert isinstance(events[-1], dict) and "error" in events[-1], events[-1]


@pytest.mark.parametrize("backend, model", [("groq", "groq/llama-3.3-70b-versatile"),
                                            ("mistral", "mistral/mistral-small-latest"),
                                            ("gemini", "gemini/gemini-2.0-flash")])
def test_parallel_models_answer_and_fail_on_their_own(gateway, upstreams, backend, model):
    status, answer, _, _ = gateway.chat(model)
    assert status == 200, answer
    server = getattr(upstreams, backend)
    server.behaviour = "error"
    for _ in range(2):  # its own error every time, not a cooldown's "No deployments available"
        status, answer, _, _ = gateway.chat(model)
        assert status == 500
        assert "fake upstream failure" in answer["error"]["message"]
    # One call per request: no retry, and no other upstream (they never join the chain).
    assert upstreams.chat_hits() == only(**{backend: 3})


def test_r1_mode_returns_reasoning_apart_from_the_answer(gateway, upstreams):
    upstreams.vllm.reset(models=["vllm-r1"], reasoning_parser="deepseek_r1")
    status, answer, _, _ = gateway.chat("vllm-r1")
    assert status == 200, answer
    message = answer["choices"][0]["message"]
    assert message["content"] == "Hello from the fake model."
    assert "</think>" not in message["content"]
    assert message["reasoning_content"] == "The user greets me. I should greet back."
    status, events, _, _ = gateway.chat("vllm-r1", stream=True)
    assert status == 200
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content") or "" for e in events
                        if isinstance(e, dict) and e.get("choices"))
    assert reasoning.split() == "The user greets me. I should greet back.".split()
    assert streamed_text(events).strip() == "Hello from the fake model."
    # ...while vllm-qwen, not loaded in r1 mode, falls back down the chain.
    status, answer, _, _ = gateway.chat("vllm-qwen")
    assert status == 200 and answer["choices"][0]["message"]["content"] == "Hello from the fake Ollama model."


def test_ml_mode_answers_a_clear_error_for_the_r1_model_at_once(gateway, upstreams):
    status, answer, _, _ = gateway.chat("vllm-r1")
    assert status == 404
    message = answer["error"]["message"]
    assert message == ("Model vllm-r1 is not loaded: the GPU is in mode 'ml' (serving vllm-qwen); it is served in "
                       "mode 'r1': switch with `ansible-playbook gpu_mode.yml -e mode=r1`, or ask for model "
                       "'default', which always answers.")
    assert gateway.chat("vllm-r1")[0] == 404, "the same clear error again, not a cooldown's 429"
    assert upstreams.vllm.hits.get("chat:vllm-r1") == 2, "one upstream call per request, no retries"
    # Switched to r1 (as gpu_mode does): the very next request is served, no cooldown in the way.
    upstreams.vllm.reset(models=["vllm-r1"], reasoning_parser="deepseek_r1")
    assert gateway.chat("vllm-r1")[0] == 200


def test_gpu_free_mode_answers_a_clear_error_for_vllm_models_outside_the_chain(gateway, upstreams):
    upstreams.vllm.stop()
    status, answer, _, _ = gateway.chat("vllm-r1")
    assert status == 404
    assert answer["error"]["message"].startswith(
        "Model vllm-r1 is not loaded: vLLM is not running (the GPU is released, mode 'gaming', or a model is still "
        "loading); it is served in mode 'r1'")
    assert gateway.chat("default")[0] == 200
    assert upstreams.chat_hits() == only(ollama=1)
