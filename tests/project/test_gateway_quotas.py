"""Free-tier quotas on the REAL LiteLLM proxy: over the per-minute rate
requests are held (up to a bound) rather than failed; over the daily quota
they get 429 with Retry-After; with Redis the counters are shared by replicas
and survive a proxy restart, in memory they do not.

The catalog under test shortens the rate window to 2 s (litellm_quota_window_seconds)
so that a test does not wait a minute; the mechanism is the same."""

from __future__ import annotations

import concurrent.futures
import os

import pytest
import yaml

from testkit.gateway_rig import Gateway, RedisServer, free_port, render_gateway
from helpers import ROOT

WINDOW, MAX_WAIT = 2, 3
RATED = "groq/llama-3.3-70b-versatile"    # 2 requests per window
DAILY = "groq/mixtral-8x7b-32768"         # 4 requests per day
PER_WINDOW, PER_DAY = 2, 4


def catalog_with_small_quotas():
    with open(os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")) as handle:
        models = yaml.safe_load(handle)["inference_models"]
    for model in models:
        model.pop("requests_per_minute", None)
        model.pop("requests_per_day", None)
        if model["name"] == RATED:
            model["requests_per_minute"] = PER_WINDOW
        if model["name"] == DAILY:
            model["requests_per_day"] = PER_DAY
    return models


def start_gateway(tmp_path, upstreams, redis=None, port=None):
    overrides = {"inference_models": catalog_with_small_quotas(), "litellm_quota_window_seconds": WINDOW,
                 "litellm_quota_max_wait_seconds": MAX_WAIT}
    if redis:
        overrides.update(litellm_redis_host="127.0.0.1", litellm_redis_port=redis.port)
    config_dir, env, _ = render_gateway(tmp_path, upstreams, **overrides)
    return Gateway(config_dir, env, port=port).start()


@pytest.fixture(scope="module")
def redis_port():
    """One port for the module's Redis servers: the rendered config names it, so one render serves all."""
    return free_port()


@pytest.fixture
def redis(tmp_path, redis_port):
    server = RedisServer(tmp_path, port=redis_port).start()
    yield server
    server.stop()


# The hook meters requests when it admits them; the provider sees them a few
# milliseconds later, by how long the proxy takes after admission. That delay
# varies (the first call through a provider pays its client's set-up), so the
# windows seen at the provider may be shorter by that much.
JITTER = 0.1


def warm(gateway, upstreams):
    """One call through the groq provider (to a model without quota), so later calls take the same path."""
    assert gateway.chat(DAILY)[0] == 200
    upstreams.groq.reset()


def assert_at_most_per_window(arrivals):
    for index in range(PER_WINDOW, len(arrivals)):
        assert arrivals[index] - arrivals[index - PER_WINDOW] >= WINDOW - JITTER, arrivals


@pytest.fixture
def memory_gateway(tmp_path, upstreams):
    upstreams.groq.reset()
    gateway = start_gateway(tmp_path, upstreams)
    yield gateway
    gateway.stop()


def test_over_the_rate_requests_are_held_not_failed(memory_gateway, upstreams):
    warm(memory_gateway, upstreams)
    statuses = [memory_gateway.chat(RATED)[0] for _ in range(PER_WINDOW * 2 + 1)]
    assert statuses == [200] * (PER_WINDOW * 2 + 1)
    arrivals = [r["at"] for r in upstreams.groq.requests]
    assert len(arrivals) == PER_WINDOW * 2 + 1
    # Never more than PER_WINDOW requests reached the provider within one window.
    assert_at_most_per_window(arrivals)


def test_a_hold_longer_than_the_bound_gets_429_with_retry_after(memory_gateway, upstreams):
    warm(memory_gateway, upstreams)
    burst = 8
    with concurrent.futures.ThreadPoolExecutor(burst) as pool:
        results = list(pool.map(lambda _: memory_gateway.chat(RATED), range(burst)))
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] != 200]
    # Slots free every WINDOW seconds: within the MAX_WAIT bound only the first two windows' worth get through.
    assert len(served) == PER_WINDOW * 2, [r[0] for r in results]
    assert len(refused) == burst - PER_WINDOW * 2
    for status, answer, headers, _ in refused:
        assert status == 429
        assert 1 <= int(headers["retry-after"]) <= WINDOW
        assert answer["error"]["message"].startswith("%s: over the free-tier rate of 2 requests per 2s; retry in" % RATED)
    assert upstreams.groq.hits["chat"] == len(served)


def test_over_the_daily_quota_429_with_retry_after_and_no_upstream_call(memory_gateway, upstreams):
    assert [memory_gateway.chat(DAILY)[0] for _ in range(PER_DAY)] == [200] * PER_DAY
    status, answer, headers, _ = memory_gateway.chat(DAILY)
    assert status == 429
    assert 0 < int(headers["retry-after"]) <= 86400
    assert answer["error"]["message"].startswith(
        "%s: the free-tier quota of %d requests per day is spent; it resets at 00:00 UTC" % (DAILY, PER_DAY))
    assert upstreams.groq.hits["chat"] == PER_DAY
    # Other models are not affected.
    assert memory_gateway.chat("mistral/mistral-small-latest")[0] == 200


def test_in_memory_counters_start_again_after_a_restart(memory_gateway, upstreams):
    for _ in range(PER_DAY):
        memory_gateway.chat(DAILY)
    assert memory_gateway.chat(DAILY)[0] == 429
    memory_gateway.restart()
    assert memory_gateway.chat(DAILY)[0] == 200, "documented: without Redis a restart forgets the day's count"


def test_redis_counters_survive_a_proxy_restart(tmp_path, upstreams, redis):
    upstreams.groq.reset()
    gateway = start_gateway(tmp_path, upstreams, redis=redis)
    try:
        assert [gateway.chat(DAILY)[0] for _ in range(PER_DAY)] == [200] * PER_DAY
        gateway.restart()
        assert gateway.chat(DAILY)[0] == 429
    finally:
        gateway.stop()
    assert upstreams.groq.hits["chat"] == PER_DAY


def test_two_replicas_share_one_quota_through_redis(tmp_path, upstreams, redis):
    upstreams.groq.reset()
    first = start_gateway(tmp_path / "a", upstreams, redis=redis)
    second = Gateway(first.proxy.config_dir, first.proxy.env).start()
    try:
        assert [first.chat(DAILY)[0] for _ in range(PER_DAY // 2)] == [200] * (PER_DAY // 2)
        assert [second.chat(DAILY)[0] for _ in range(PER_DAY // 2)] == [200] * (PER_DAY // 2)
        assert first.chat(DAILY)[0] == 429
        assert second.chat(DAILY)[0] == 429
        # The rate window is shared too: the pair never lets more than PER_WINDOW through per window.
        for gateway in (first, second, first, second, first):
            assert gateway.chat(RATED)[0] == 200
        assert_at_most_per_window([r["at"] for r in upstreams.groq.requests if r["model"] == "llama-3.3-70b-versatile"])
    finally:
        first.stop()
        second.stop()


def test_two_replicas_each_skip_a_hung_vllm_through_their_own_probes(tmp_path, upstreams, redis):
    """Replicas do not share vLLM's state: each probes it. Once both found it hung, neither sends it a request."""
    first = start_gateway(tmp_path / "a", upstreams, redis=redis)
    second = Gateway(first.proxy.config_dir, first.proxy.env).start()
    try:
        upstreams.vllm.reset(behaviour="hang")
        for replica in (first, second):
            status, answer, _, _ = replica.chat("vllm-qwen", timeout=30)
            assert status == 200 and answer["choices"][0]["message"]["content"] == "Hello from the fake Ollama model."
        asked = upstreams.vllm.hits.get("chat", 0)
        for replica in (first, second):
            assert "failed 2 health probes in a row" in replica.proxy.log_tail(400)
            status, answer, _, _ = replica.chat("vllm-qwen")
            assert status == 200 and answer["choices"][0]["message"]["content"] == "Hello from the fake Ollama model."
        assert upstreams.vllm.hits.get("chat", 0) == asked, "a replica tried the hung vLLM again"
    finally:
        upstreams.vllm.reset()
        first.stop()
        second.stop()
