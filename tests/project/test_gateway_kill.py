"""vLLM killed under load: the REAL LiteLLM proxy on the rendered config, 500
requests at concurrency 16 for ``vllm-qwen``, vLLM's process stopped when the
150th request is sent. Every request must be answered: by vLLM before, by
Ollama after, never by a tier past Ollama. (The lab's end-to-end scenario does the same through the
cluster; this one needs no cluster, so the upgrade check runs it on any
LiteLLM version: scripts/litellm-upgrade-check.sh.)"""

from __future__ import annotations

import collections
import concurrent.futures
import threading

import pytest

from testkit.gateway_rig import Gateway, render_gateway

REQUESTS, CONCURRENCY, KILL_AT = 500, 16, 150


@pytest.fixture
def gateway(upstreams, tmp_path_factory):
    config_dir, env, _ = render_gateway(tmp_path_factory.mktemp("gateway-kill"), upstreams)
    proxy = Gateway(config_dir, env).start()
    yield proxy
    proxy.stop()


def test_vllm_killed_during_500_requests_at_concurrency_16_fails_none(gateway, upstreams):
    killed = threading.Event()

    def one(index):
        if index == KILL_AT:
            upstreams.vllm.stop()
            killed.set()
        status, answer, headers, _ = gateway.chat("vllm-qwen", timeout=60)
        return status, headers.get("x-litellm-model-group"), (None if status == 200 else str(answer)[:300])

    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(one, range(REQUESTS)))
    statuses = collections.Counter(status for status, _, _ in results)
    groups = collections.Counter(group for _, group, _ in results)
    failed = [r for r in results if r[0] != 200]
    print("statuses %s, answered by %s" % (dict(statuses), dict(groups)))
    assert killed.is_set()
    assert not failed, "%d of %d failed (%s); first: %s" % (len(failed), REQUESTS, dict(statuses), failed[0][2])
    assert groups["vllm-qwen"] and groups["ollama-qwen"], "the kill did reach vLLM: %s" % dict(groups)
    # Ollama stays healthy, so no request may skip it. LiteLLM 1.108 on the old config (a LiteLLM
    # cooldown on the local tiers) put Ollama in cooldown with its own "No deployments available"
    # error for vLLM and sent the rest to OpenAI - or answered 429 where OpenAI could not answer.
    assert set(groups) == {"vllm-qwen", "ollama-qwen"}, "a tier was skipped: %s" % dict(groups)
