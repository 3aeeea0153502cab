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


# -- on-demand modes: what the hook does with gpu-mode-switcher's answer ---------------------------------

ON_DEMAND = dict(SETTINGS, on_demand={"url": "http://gpu-mode-switcher.ml.svc.cluster.local:9103"})
SWITCHING = {"action": "switch", "target": "r1", "reason": "", "retry_after": 70, "mode": "ml",
             "hold_seconds": 1, "reply": "hold", "switch": {"to": "r1", "elapsed_seconds": 20.0,
                                                            "expected_seconds": 90.0}}


def on_demand(monkeypatch, answer, model="vllm-r1", headers=None, served=(None,)):
    """The pre-call hook for ``model`` with the switcher answering ``answer`` and vLLM listing ``served``
    at its successive polls (the last one repeats); (the outcome, the polls made)."""
    asked, polls = [], []
    monkeypatch.setattr(hook, "ask_switcher", lambda url, name: asked.append((url, name)) or answer)
    monkeypatch.setattr(hook, "HOLD_POLL_SECONDS", 0.01)

    def served_by_vllm(api_base):
        polls.append(api_base)
        return served[min(len(polls), len(served)) - 1]
    gateway = hook.InferenceGateway(ON_DEMAND, counters=hook.MemoryCounters())
    monkeypatch.setattr(gateway, "served_by_vllm", served_by_vllm)
    data = {"model": model, "proxy_server_request": {"headers": headers or {}}}
    try:
        outcome = run(gateway.async_pre_call_hook(None, None, data, "completion"))
    except HTTPException as err:
        outcome = err
    assert asked in ([], [(ON_DEMAND["on_demand"]["url"], model)])
    return outcome, polls


def test_without_the_setting_or_an_answer_the_request_goes_on(monkeypatch):
    assert on_demand(monkeypatch, None)[0]["model"] == "vllm-r1"
    assert on_demand(monkeypatch, dict(SWITCHING, action="serve"))[0]["model"] == "vllm-r1"
    gateway = hook.InferenceGateway(SETTINGS, counters=hook.MemoryCounters())
    monkeypatch.setattr(hook, "ask_switcher", lambda url, name: pytest.fail("asked without the setting"))
    assert run(gateway.async_pre_call_hook(None, None, {"model": "vllm-r1"}, "completion"))["model"] == "vllm-r1"


def test_a_held_request_goes_on_once_vllm_serves_its_model(monkeypatch):
    outcome, polls = on_demand(monkeypatch, SWITCHING, served=(None, ["vllm-qwen"], ["vllm-r1"]))
    assert outcome["model"] == "vllm-r1" and len(polls) == 3


def test_a_request_still_loading_after_the_hold_gets_503_with_retry_after(monkeypatch):
    outcome, polls = on_demand(monkeypatch, SWITCHING)
    assert isinstance(outcome, hook.OnDemandAnswer) and outcome.status_code == 503 and len(polls) > 5
    assert outcome.headers == {"Retry-After": "70"}
    assert outcome.detail == ("Model vllm-r1 is still loading after 1s: the GPU is switching to mode 'r1' for it "
                              "(20.0s of about 90.0s); retry later.")


def test_a_client_that_asks_to_retry_gets_503_at_once(monkeypatch):
    outcome, polls = on_demand(monkeypatch, SWITCHING, headers={"X-Inference-On-Demand": "retry"})
    assert outcome.status_code == 503 and outcome.headers == {"Retry-After": "70"} and polls == []
    assert outcome.detail == ("Model vllm-r1 is loading: the GPU is switching to mode 'r1' for it (20.0s of about "
                              "90.0s); retry in 70s.")
    # The policy's reply, when the client does not say.
    assert on_demand(monkeypatch, dict(SWITCHING, reply="retry"))[0].status_code == 503


def test_a_chain_model_is_answered_by_its_fallbacks_unless_its_client_holds(monkeypatch):
    switching = dict(SWITCHING, target="ml", switch={"to": "ml", "elapsed_seconds": 1, "expected_seconds": 60})
    outcome, polls = on_demand(monkeypatch, switching, model="vllm-qwen")
    assert outcome["model"] == "vllm-qwen" and polls == []
    outcome, polls = on_demand(monkeypatch, switching, model="vllm-qwen", headers={"x-inference-on-demand": "hold"},
                               served=(["vllm-r1"], ["vllm-qwen"]))
    assert outcome["model"] == "vllm-qwen" and len(polls) == 2
    refused = dict(SWITCHING, action="refuse", reason="GPU in r1 mode for 10s; it stays at least 300s",
                   retry_after=290, switch=None)
    assert on_demand(monkeypatch, refused, model="vllm-qwen")[0]["model"] == "vllm-qwen"


@pytest.mark.parametrize("reason, retry, status, expected", [
    ("GPU in gaming mode; on-demand switching is off for gaming", None, 404,
     "Model vllm-r1 is not loaded: GPU in gaming mode; on-demand switching is off for gaming; it is served in mode "
     "'r1': switch with `ansible-playbook gpu_mode.yml -e mode=r1`, or ask for model 'default', which always "
     "answers."),
    ("GPU in ml mode for 100s; it stays at least 300s (inference_gpu_on_demand.min_dwell_seconds)", 200, 503,
     "Model vllm-r1 is not loaded: GPU in ml mode for 100s; it stays at least 300s "
     "(inference_gpu_on_demand.min_dwell_seconds); retry in 200s."),
])
def test_a_refusal_names_why_and_when(monkeypatch, reason, retry, status, expected):
    answer = dict(SWITCHING, action="refuse", reason=reason, retry_after=retry, switch=None)
    outcome = on_demand(monkeypatch, answer)[0]
    assert (outcome.status_code, outcome.detail) == (status, expected)
    assert outcome.headers == ({"Retry-After": str(retry)} if retry else None)
    gateway = hook.InferenceGateway(ON_DEMAND, counters=hook.MemoryCounters())
    assert run(gateway.async_post_call_failure_hook({"model": "vllm-r1"}, outcome, None)) is None, \
        "the failure hook keeps the on-demand answer"


def test_a_held_request_ends_with_the_reason_when_its_switch_fails(monkeypatch):
    failed = dict(SWITCHING, action="refuse", retry_after=280, switch=None, reason=(
        "the last switch to mode 'r1' failed 20s ago (switch to r1 failed: vLLM exited (OOMKilled); rolled back "
        "to ml (verified))"))
    answers = [dict(SWITCHING, hold_seconds=30), SWITCHING, failed]
    monkeypatch.setattr(hook, "HOLD_ASK_SECONDS", 0.02)
    monkeypatch.setattr(hook, "HOLD_POLL_SECONDS", 0.01)
    monkeypatch.setattr(hook, "ask_switcher", lambda url, name: answers.pop(0) if len(answers) > 1 else answers[0])
    gateway = hook.InferenceGateway(ON_DEMAND, counters=hook.MemoryCounters())
    monkeypatch.setattr(gateway, "served_by_vllm", lambda api_base: None)
    with pytest.raises(hook.OnDemandAnswer) as refused:
        run(gateway.async_pre_call_hook(None, None, {"model": "vllm-r1"}, "completion"))
    assert answers == [failed], "the hold ended at the switcher's refusal, not at hold_seconds"
    assert (refused.value.status_code, refused.value.headers) == (503, {"Retry-After": "280"})
    assert refused.value.detail == ("Model vllm-r1 is not loaded: the last switch to mode 'r1' failed 20s ago "
                                    "(switch to r1 failed: vLLM exited (OOMKilled); rolled back to ml (verified)); "
                                    "retry in 280s.")


@pytest.mark.parametrize("answer, listed", [
    (SWITCHING, ["default", "vllm-r1", "vllm-qwen", "groq/x"]),
    (dict(SWITCHING, action="refuse", retry_after=200, reason="GPU in ml mode for 100s"),
     ["default", "vllm-r1", "vllm-qwen", "groq/x"]),
    (dict(SWITCHING, action="refuse", retry_after=None, reason="GPU in gaming mode"),
     ["default", "vllm-qwen", "groq/x"]),
    (None, ["default", "vllm-qwen", "groq/x"]),
], ids=["would switch", "after the dwell", "never on demand", "no switcher"])
def test_on_demand_the_listings_show_a_model_a_request_would_switch_to(monkeypatch, answer, listed):
    gateway = hook.InferenceGateway(ON_DEMAND, counters=hook.MemoryCounters())
    asked = []
    monkeypatch.setattr(gateway, "served_by_vllm", lambda api_base: ["vllm-qwen"])
    monkeypatch.setattr(hook, "ask_switcher", lambda url, name, timeout=2.0, dry_run=False: asked.append(
        (name, dry_run)) or answer)
    assert run(gateway.async_filter_listed_models(None, ("default", "vllm-r1", "vllm-qwen", "groq/x"))) == listed
    assert asked == [("vllm-r1", True)], "only what vLLM does not serve, and without starting a switch"
