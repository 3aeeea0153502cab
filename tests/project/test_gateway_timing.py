"""Slow is not dead: the REAL LiteLLM proxy on the rendered config, in front of
FAKE upstreams that take real time. A healthy vLLM answer of 30 s is served by
vLLM and cools nothing down; a stream is not cut while tokens flow; a refused
vLLM fails over at once; a vLLM that comes back serves within half a second.
(The hanging vLLM is in test_gateway.py; the figures are measured by
benchmarks/gateway.py.)"""

from __future__ import annotations

import os
import time

import pytest
import yaml

from helpers import ROOT
from testkit.gateway_rig import Gateway, Upstreams, parse_sse, render_gateway, streamed_text

PROBE_INTERVAL = 2  # litellm_probe_interval
PROBE_FAILURES = 2  # litellm_probe_failures
DEAD_PROBE_INTERVAL = 0.5  # how often the hook probes a backend it found dead


@pytest.fixture(scope="module")
def rendered(upstreams, tmp_path_factory):
    return render_gateway(tmp_path_factory.mktemp("gateway-timing"), upstreams)


@pytest.fixture
def gateway(rendered, upstreams):
    config_dir, env, _ = rendered
    if upstreams.vllm.stopped:
        upstreams.restart_vllm()
    upstreams.vllm.reset()
    for server in upstreams.all():
        server.reset_counters()
    proxy = Gateway(config_dir, env).start()
    yield proxy
    proxy.stop()


def answered_by(result):
    status, _, headers, _ = result
    return status, headers.get("x-litellm-model-group")


def test_a_slow_healthy_vllm_answer_is_served_by_vllm_and_cools_nothing_down(gateway, upstreams):
    upstreams.vllm.latency = 30  # a long non-streamed answer: vLLM sends nothing until it is complete
    status, answer, headers, _ = gateway.chat("vllm-qwen", timeout=120)
    assert status == 200, answer
    assert headers["x-litellm-model-group"] == "vllm-qwen"
    assert answer["choices"][0]["message"]["content"] == "Hello from the fake model."
    assert upstreams.chat_hits()["ollama"] == 0, "nothing was abandoned to the CPU tier"
    upstreams.vllm.latency = 0
    # No cooldown: the very next requests are vLLM's too.
    assert [gateway.chat(model)[0] for model in ("vllm-qwen", "default")] == [200, 200]
    assert upstreams.chat_hits()["vllm"] == 3 and upstreams.chat_hits()["ollama"] == 0
    assert "health probe" not in gateway.proxy.log_tail(400)


# The reference config's retries slept 4.5 s per request before falling back. A fixed deadline
# failed on a busy 2-core machine where every answer was slow, so each failover is held to a
# direct ollama-qwen answer taken just before it, plus less than those sleeps.
NO_WAITING_MARGIN = 2.0


def fails_over_without_waiting(gateway, stream):
    status, _, headers, direct = gateway.chat("ollama-qwen", stream=stream)
    assert (status, headers.get("x-litellm-model-group")) == (200, "ollama-qwen")
    result = gateway.chat("vllm-qwen", stream=stream, timeout=60)
    assert answered_by(result) == (200, "ollama-qwen")
    assert result[3] < direct + NO_WAITING_MARGIN, "the failover waited %.1f s, a direct answer %.1f s" % (
        result[3], direct)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_refused_vllm_fails_over_without_waiting(gateway, upstreams, stream):
    upstreams.vllm.stop()
    for _ in range(3):
        fails_over_without_waiting(gateway, stream)
    # Once its probes have failed, vLLM is not even tried.
    deadline = time.monotonic() + PROBE_INTERVAL * (PROBE_FAILURES + 2)
    while "failed 2 health probes in a row" not in gateway.proxy.log_tail(400):
        assert time.monotonic() < deadline, "the refused vLLM was never declared dead"
        time.sleep(0.2)
    fails_over_without_waiting(gateway, stream)


def test_a_vllm_that_comes_back_serves_within_half_a_second(gateway, upstreams):
    upstreams.vllm.stop()
    while "failed 2 health probes in a row" not in gateway.proxy.log_tail(400):
        assert answered_by(gateway.chat("vllm-qwen")) == (200, "ollama-qwen")
        time.sleep(0.2)
    upstreams.restart_vllm()  # the switch back to ml: vLLM serves again
    time.sleep(3 * DEAD_PROBE_INTERVAL)
    assert answered_by(gateway.chat("vllm-qwen")) == (200, "vllm-qwen"), "no 10 s cooldown in the way"


def test_a_long_stream_is_not_cut_while_tokens_flow(tmp_path):
    """vLLM's timeout set to 2 s and a stream of ~7 s (200 tokens at the realistic profile's
    single-stream rate, slowed down twice): the timeout is between two chunks, not for the whole answer."""
    with open(os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")) as handle:
        models = yaml.safe_load(handle)["inference_models"]
    for entry in models:
        if entry["name"] == "vllm-qwen":
            entry["timeout"] = 2
    upstreams = Upstreams(profile="realistic", time_scale=2)
    gateway = None
    try:
        config_dir, env, _ = render_gateway(tmp_path, upstreams, inference_models=models)
        gateway = Gateway(config_dir, env).start()
        body = {"model": "vllm-qwen", "messages": [{"role": "user", "content": "tell me a story"}],
                "stream": True, "max_tokens": 200}
        status, headers, text, _ = gateway.request("POST", "/v1/chat/completions", body, timeout=120)
        assert status == 200, text
        events = parse_sse(text)
        assert headers["x-litellm-model-group"] == "vllm-qwen"
        assert events[-1] == "[DONE]", "the stream ran to its end"
        assert streamed_text(events).strip() == "Hello from the fake model."
        assert upstreams.vllm.requests[-1]["generated"] == 200, "every token was generated and sent"
        assert upstreams.chat_hits()["ollama"] == 0
    finally:
        if gateway:
            gateway.stop()
        upstreams.stop()
