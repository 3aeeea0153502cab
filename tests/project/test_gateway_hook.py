"""The gateway hook's own logic, outside the proxy (the proxy tests cover it in place)."""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import os
import types

import pytest
from fastapi import HTTPException

from helpers import ROOT

spec = importlib.util.spec_from_file_location(
    "inference_gateway", os.path.join(ROOT, "roles", "litellm", "files", "inference_gateway.py"))
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)

SETTINGS = {
    "models": {"vllm-r1": {"backend": "vllm", "fallbacks": False, "api_base": "http://127.0.0.1:9/v1"},
               "vllm-qwen": {"backend": "vllm", "fallbacks": True, "api_base": "http://127.0.0.1:9/v1"},
               "groq/x": {"backend": "groq", "fallbacks": False, "quota": {"requests_per_day": 2}}},
    "gpu_modes": {"ml": "vllm-qwen", "r1": "vllm-r1", "gaming": None},
    "fallback_model": "default",
    "switch_command": "ansible-playbook gpu_mode.yml -e mode={mode}",
    "quota_window_seconds": 60, "quota_max_wait_seconds": 0,
}


def run(coroutine):
    return asyncio.run(coroutine)


def test_memory_counters_admit_fill_and_spend():
    counters = hook.MemoryCounters()

    async def scenario():
        seen = [await counters.admit("m", "2026-01-01", 3, 2, 60) for _ in range(2)]
        seen.append(await counters.admit("m", "2026-01-01", 3, 2, 60))  # window full
        counters.windows["m"] = []  # the window passed
        seen.append(await counters.admit("m", "2026-01-01", 3, 2, 60))
        seen.append(await counters.admit("m", "2026-01-01", 3, 2, 60))  # day spent
        seen.append(await counters.admit("m", "2026-01-02", 3, 2, 60))  # a new day
        return seen

    verdicts = [v for v, _ in run(scenario())]
    assert verdicts == [hook.ADMITTED, hook.ADMITTED, hook.FULL, hook.ADMITTED, hook.SPENT, hook.ADMITTED]


def test_seconds_to_utc_midnight():
    now = datetime.datetime(2026, 11, 28, 23, 59, 30, tzinfo=datetime.timezone.utc)
    assert hook.seconds_to_utc_midnight(now) == 30
    assert hook.seconds_to_utc_midnight(now.replace(hour=0, minute=0, second=0)) == 86400


def test_daily_quota_refusal_is_429_with_retry_after():
    gateway = hook.InferenceGateway(SETTINGS, counters=hook.MemoryCounters())
    data = {"model": "groq/x"}
    run(gateway.async_pre_call_hook(None, None, data, "completion"))
    run(gateway.async_pre_call_hook(None, None, data, "completion"))
    with pytest.raises(HTTPException) as refused:
        run(gateway.async_pre_call_hook(None, None, data, "completion"))
    assert refused.value.status_code == 429
    assert int(refused.value.headers["Retry-After"]) > 0


def test_models_without_quota_pass_untouched():
    gateway = hook.InferenceGateway(SETTINGS, counters=hook.MemoryCounters())
    data = {"model": "vllm-qwen", "messages": []}
    assert run(gateway.async_pre_call_hook(None, None, data, "completion")) is data


@pytest.mark.parametrize("served, expected", [
    (["vllm-qwen"], "Model vllm-r1 is not loaded: the GPU is in mode 'ml' (serving vllm-qwen); it is served in "
                    "mode 'r1': switch with `ansible-playbook gpu_mode.yml -e mode=r1`, or ask for model 'default', "
                    "which always answers."),
    (None, "Model vllm-r1 is not loaded: vLLM is not running (the GPU is released, mode 'gaming', or a model is "
           "still loading); it is served in mode 'r1': switch with `ansible-playbook gpu_mode.yml -e mode=r1`, or "
           "ask for model 'default', which always answers."),
])
def test_not_loaded_message(served, expected):
    assert hook.InferenceGateway(SETTINGS, counters=hook.MemoryCounters()).not_loaded_message("vllm-r1", served) == \
        expected


def test_failure_hook_leaves_chain_members_and_loaded_models_alone(monkeypatch):
    gateway = hook.InferenceGateway(SETTINGS, counters=hook.MemoryCounters())
    assert run(gateway.async_post_call_failure_hook({"model": "vllm-qwen"}, Exception(), None)) is None
    assert run(gateway.async_post_call_failure_hook({"model": "groq/x"}, Exception(), None)) is None
    monkeypatch.setattr(hook.InferenceGateway, "served_by_vllm", staticmethod(lambda base: ["vllm-r1"]))
    assert run(gateway.async_post_call_failure_hook({"model": "vllm-r1"}, Exception(), None)) is None
    monkeypatch.setattr(hook.InferenceGateway, "served_by_vllm", staticmethod(lambda base: None))
    replaced = run(gateway.async_post_call_failure_hook({"model": "vllm-r1"}, Exception(), None))
    assert replaced.status_code == 404


def request(path):
    return types.SimpleNamespace(url=types.SimpleNamespace(path=path))


def test_key_check_accepts_only_the_master_key(monkeypatch):
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-master")
    gateway = hook.InferenceGateway(SETTINGS, counters=hook.MemoryCounters())
    accepted = run(gateway.user_api_key_auth(request("/v1/models"), "Bearer sk-master"))
    assert accepted.user_role == hook.LitellmUserRoles.PROXY_ADMIN
    for wrong in ("Bearer sk-other", "", None, "Bearer "):
        with pytest.raises(HTTPException) as refused:
            run(gateway.user_api_key_auth(request("/v1/models"), wrong))
        assert refused.value.status_code == 401
    assert run(gateway.user_api_key_auth(request("/health/readiness"), None)).user_role == \
        hook.LitellmUserRoles.INTERNAL_USER_VIEW_ONLY


def test_no_master_key_configured_refuses_everything(monkeypatch):
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)
    gateway = hook.InferenceGateway(SETTINGS, counters=hook.MemoryCounters())
    with pytest.raises(HTTPException):
        run(gateway.user_api_key_auth(request("/v1/models"), "Bearer "))


@pytest.mark.parametrize("served, listed", [
    (None, ["default", "vllm-qwen", "groq/x"]),  # vLLM stopped or loading (gaming, a switch)
    (["vllm-qwen"], ["default", "vllm-qwen", "groq/x"]),  # ml
    (["vllm-r1"], ["default", "vllm-r1", "vllm-qwen", "groq/x"]),  # r1
], ids=["stopped", "ml", "r1"])
def test_the_listings_leave_out_a_vllm_model_the_gpu_does_not_serve_now(monkeypatch, served, listed):
    gateway = hook.InferenceGateway(SETTINGS, counters=hook.MemoryCounters())
    asked = []
    monkeypatch.setattr(gateway, "served_by_vllm", lambda api_base: asked.append(api_base) or served)
    names = ("default", "vllm-r1", "vllm-qwen", "groq/x")
    assert run(gateway.async_filter_listed_models(None, names)) == listed
    assert asked == ["http://127.0.0.1:9/v1"], "vLLM asked once per listing"
    assert run(gateway.async_filter_listed_models(None, ("groq/x",))) == ("groq/x",)
    assert len(asked) == 1, "a listing without a GPU-only model asks vLLM nothing"
