"""The switch's sequence (_gpu_switch.GpuModeSwitch) against stubs of its three
boundaries - the API, vLLM and LiteLLM - on a fake clock: what is asked, in what
order, with what time limits, and what a failure says."""

from __future__ import annotations

import copy
import datetime

import pytest

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from ansible_collections.homelab.inference.plugins.module_utils._gpu_switch import GpuModeSwitch, SwitchFailed
from ansible_collections.homelab.inference.tests.unit.plugins.gpu_switch_stubs import (
    Clock,
    Events,
    params,
    StubKube,
    StubLitellm,
    StubVllm,
)


@pytest.fixture
def rig():
    events, clock = Events(), Clock()
    kube = StubKube(events)
    litellm = StubLitellm(events, clock, kube)
    return {"events": events, "clock": clock, "kube": kube, "litellm": litellm, "vllm": StubVllm(kube)}


NOW = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def switch(rig, mode, source=_gpu_mode.OPERATOR, **extra):
    return GpuModeSwitch(rig["kube"], params(mode, **extra), rig["vllm"], rig["litellm"], "me@host/1",
                         clock=rig["clock"], sleep=rig["clock"].sleep, now=lambda: NOW, source=source)


# -- the fallback is warm before the GPU goes ---------------------------------------------

@pytest.mark.parametrize("start, target", [("ml", "gaming"), ("ml", "r1"), ("r1", "ml"), ("r1", "gaming")])
def test_a_switch_that_stops_the_served_model_warms_the_fallback_first(rig, start, target):
    rig["kube"].__init__(rig["events"], mode=start)
    rig["litellm"].answers("ollama-qwen", ("ollama-qwen", 164), ("ollama-qwen", 0))  # a cold CPU load, then warm
    result = switch(rig, target).run(check_mode=False)
    assert result["changed"] is True and result["mode"] == target
    events = [e for e in rig["events"] if e[0] != "lock"]
    # warmed, then the Service pointed at the target's pods (the drain), then the Deployment patched
    assert events[:3] == [("litellm", "ollama-qwen"), ("select", target), ("patch", target)], rig["events"]
    assert result["warmed"] == {"model": "ollama-qwen", "status": 200, "answered_by": "ollama-qwen"}
    assert result["timings"]["warm"] == 164
    # the cold load had the warm-up's time, not a verification's
    assert rig["litellm"].asked[0] == ("ollama-qwen", 300)


@pytest.mark.parametrize("start, target", [("gaming", "ml"), ("gaming", "r1")])
def test_a_switch_from_a_gpu_free_mode_has_nothing_to_warm(rig, start, target):
    rig["kube"].__init__(rig["events"], mode=start)
    result = switch(rig, target).run(check_mode=False)
    assert result["changed"] is True and "warm" not in result["timings"] and "warmed" not in result
    assert [e for e in rig["events"] if e[0] != "lock"][:2] == [("select", target), ("patch", target)]


def test_the_same_mode_and_check_mode_warm_nothing(rig):
    assert switch(rig, "ml").run(check_mode=False)["changed"] is False
    assert switch(rig, "gaming").run(check_mode=True)["changed"] is True
    assert ("litellm", "ollama-qwen") not in rig["events"]
    assert not any(e[0] in ("patch", "lock") for e in rig["events"])


def test_without_a_fallback_model_or_litellm_nothing_is_warmed(rig):
    result = switch(rig, "r1", gpu_free_model="").run(check_mode=False)
    assert result["changed"] is True and "warm" not in result["timings"]
    assert ("litellm", "ollama-qwen") not in rig["events"]
    result = GpuModeSwitch(rig["kube"], params("gaming"), rig["vllm"], None, "me@host/1", clock=rig["clock"],
                           sleep=rig["clock"].sleep).run(check_mode=False)
    assert result["changed"] is True and "warm" not in result["timings"]


def test_a_fallback_that_cannot_be_warmed_fails_the_switch_before_vllm_is_touched(rig):
    # Ollama never answers in time: LiteLLM falls back to the next tier.
    rig["litellm"].answers("ollama-qwen", ("openai-gpt4o", 1))
    before = copy.deepcopy(rig["kube"].deployment)
    with pytest.raises(SwitchFailed) as failed:
        switch(rig, "gaming", warm_timeout=30).run(check_mode=False)
    message = str(failed.value)
    assert message == ("switch to gaming not started: LiteLLM did not serve ollama-qwen from its own tier "
                       "ollama-qwen within 30s (warm_timeout): it fell back to openai-gpt4o; vLLM still serves "
                       "vllm-qwen (ml), nothing changed")
    assert "from vLLM" not in message
    result = failed.value.result
    assert (result["changed"], result["mode"], result["model"], result["rolled_back"]) == (False, "ml", "vllm-qwen",
                                                                                           False)
    assert result["timings"]["warm"] >= 30
    assert not any(e[0] == "patch" for e in rig["events"])
    assert rig["kube"].deployment == before
    assert rig["events"][-1] == ("unlock", "gpu-mode") and rig["kube"].lease is None


def test_a_warm_up_that_times_out_says_so(rig):
    rig["litellm"].answers("ollama-qwen", (None, 0))
    with pytest.raises(SwitchFailed) as failed:
        switch(rig, "r1", warm_timeout=200).run(check_mode=False)
    assert str(failed.value) == (
        "switch to r1 not started: LiteLLM did not serve ollama-qwen from its own tier ollama-qwen within 200s "
        "(warm_timeout): no answer in time (the request timed out); vLLM still serves vllm-qwen (ml), "
        "nothing changed")
    assert not any(e[0] == "patch" for e in rig["events"])


# -- verification: its time limit holds, and a failure names the tier -------------------------

def test_each_verification_request_ends_by_the_verify_timeout(rig):
    """verify_timeout bounds the verification, each request included (a request used to get 60 s of its own)."""
    rig["kube"].__init__(rig["events"], mode="gaming")
    rig["litellm"].answers("vllm-qwen", (None, 0))
    with pytest.raises(SwitchFailed):
        switch(rig, "ml", verify_timeout=5, rollback=False).run(check_mode=False)
    timeouts = [timeout for model, timeout in rig["litellm"].asked if model == "vllm-qwen"]
    assert timeouts and all(timeout <= 5 for timeout in timeouts), timeouts


def test_a_gpu_free_verification_failure_names_the_model_and_its_tier_not_vllm(rig):
    # warm: answered by Ollama; after the switch, only by the next tier
    rig["litellm"].answers("ollama-qwen", ("ollama-qwen", 0), ("openai-gpt4o", 0))
    with pytest.raises(SwitchFailed) as failed:
        switch(rig, "gaming", verify_timeout=3, rollback=False).run(check_mode=False)
    assert str(failed.value) == ("switch to gaming failed: LiteLLM did not serve ollama-qwen from its own tier "
                                 "ollama-qwen within 3s (verify_timeout): it fell back to openai-gpt4o")


def test_a_vllm_verification_failure_says_vllm(rig):
    rig["litellm"].answers("vllm-r1", ("ollama-qwen", 0))
    with pytest.raises(SwitchFailed) as failed:
        switch(rig, "r1", verify_timeout=3, rollback=False).run(check_mode=False)
    assert str(failed.value) == ("switch to r1 failed: LiteLLM did not serve vllm-r1 from vLLM (its own tier "
                                 "vllm-r1) within 3s (verify_timeout): it fell back to ollama-qwen")


# -- the drain: vLLM out of its Service, its requests finished, then replaced -------------------------

def test_the_pod_being_replaced_finishes_its_requests_first(rig):
    rig["vllm"].in_flight = [3, 3, 2, 1, 0]
    result = switch(rig, "r1").run(check_mode=False)
    assert result["drained"] == 3 and result["mode"] == "r1"
    events = [e for e in rig["events"] if e[0] in ("select", "patch")]
    assert events == [("select", "r1"), ("patch", "r1")]
    assert rig["kube"].service["spec"]["selector"]["homelab.inference/gpu-mode"] == "r1"
    # at least drain_settle for the gateway's probes, however soon the pod was idle
    assert result["timings"]["drain"] == 3.0 and rig["vllm"].reads == 13


def test_requests_still_running_at_the_drain_timeout_are_cut_with_a_warning(rig):
    rig["vllm"].in_flight = [2]
    runner = switch(rig, "gaming", drain_timeout=10)
    result = runner.run(check_mode=False)
    assert result["mode"] == "gaming" and result["drained"] == 2 and result["timings"]["drain"] == 10.0
    assert runner.warnings == ["drain_timeout: 2 request(s) still running on vLLM after 10s were cut by the switch"]


def test_a_drain_timeout_of_0_replaces_the_pod_at_once(rig):
    rig["vllm"].in_flight = [2]
    result = switch(rig, "r1", drain_timeout=0, drain_settle=0).run(check_mode=False)
    assert result["timings"]["drain"] == 0 and rig["vllm"].reads == 1


def test_from_a_gpu_free_mode_there_is_nothing_to_drain(rig):
    rig["kube"].__init__(rig["events"], mode="gaming")
    result = switch(rig, "ml").run(check_mode=False)
    assert "drain" not in result["timings"] and "drained" not in result and rig["vllm"].reads == 0
    assert rig["kube"].service["spec"]["selector"]["homelab.inference/gpu-mode"] == "ml"


def test_a_rollback_points_the_service_back(rig):
    rig["litellm"].answers("vllm-r1", ("ollama-qwen", 0))
    with pytest.raises(SwitchFailed) as failed:
        switch(rig, "r1", verify_timeout=3).run(check_mode=False)
    assert failed.value.result["rolled_back"] is True
    selected = [e for e in rig["events"] if e[0] in ("select", "patch")]
    assert selected == [("select", "r1"), ("patch", "r1"), ("select", "ml"), ("patch", "ml")]
    assert rig["kube"].service["spec"]["selector"]["homelab.inference/gpu-mode"] == "ml"


def test_a_switch_stopped_after_the_services_patch_is_mended_by_the_next_run(rig):
    rig["kube"].service["spec"]["selector"]["homelab.inference/gpu-mode"] = "r1"  # the Deployment is still in ml
    runner = switch(rig, "ml")
    result = runner.run(check_mode=False)
    assert result["changed"] is True and result["mode"] == "ml" and result["verified"]["vllm_models"] == ["vllm-qwen"]
    assert rig["kube"].service["spec"]["selector"]["homelab.inference/gpu-mode"] == "ml"
    assert not any(e[0] == "patch" for e in rig["events"]) and "selects ml's again" in runner.warnings[0]


def test_check_mode_reports_a_service_to_mend_and_leaves_it(rig):
    rig["kube"].service["spec"]["selector"]["homelab.inference/gpu-mode"] = "r1"
    runner = switch(rig, "ml")
    assert runner.run(check_mode=True)["changed"] is True and "would select ml's again" in runner.warnings[0]
    assert rig["kube"].service["spec"]["selector"]["homelab.inference/gpu-mode"] == "r1" and not rig["events"]


def test_check_mode_leaves_the_service_alone(rig):
    assert switch(rig, "r1").run(check_mode=True)["changed"] is True
    assert rig["kube"].service["spec"]["selector"]["homelab.inference/gpu-mode"] == "ml" and not rig["events"]


# -- who entered the mode ----------------------------------------------------------------------

def test_a_switch_records_who_entered_the_mode_and_when(rig):
    assert _gpu_mode.mode_setter(rig["kube"].deployment) == ("install", "", None)
    switch(rig, "r1").run(check_mode=False)
    assert _gpu_mode.mode_setter(rig["kube"].deployment) == ("operator", "me@host/1", NOW)
    switch(rig, "ml", source=_gpu_mode.BOOT).run(check_mode=False)
    assert _gpu_mode.mode_setter(rig["kube"].deployment) == ("boot", "me@host/1", NOW)


def test_the_same_mode_and_check_mode_keep_the_record(rig):
    switch(rig, "ml", source=_gpu_mode.ON_DEMAND).run(check_mode=True)
    switch(rig, "ml", source=_gpu_mode.ON_DEMAND).run(check_mode=False)
    assert _gpu_mode.SETTER_ANNOTATION not in rig["kube"].deployment["metadata"]["annotations"]


def test_a_rollback_restores_the_record_of_the_mode_it_returns_to(rig):
    switch(rig, "r1", source=_gpu_mode.ON_DEMAND).run(check_mode=False)
    entered = rig["kube"].deployment["metadata"]["annotations"][_gpu_mode.SETTER_ANNOTATION]
    rig["litellm"].answers("vllm-qwen", ("ollama-qwen", 0))
    with pytest.raises(SwitchFailed) as failed:
        switch(rig, "ml", verify_timeout=3).run(check_mode=False)
    assert failed.value.result["rolled_back"] is True
    assert rig["kube"].deployment["metadata"]["annotations"][_gpu_mode.SETTER_ANNOTATION] == entered


def test_a_rollback_to_a_mode_nobody_recorded_removes_the_record(rig):
    rig["litellm"].answers("vllm-r1", ("ollama-qwen", 0))
    with pytest.raises(SwitchFailed):
        switch(rig, "r1", verify_timeout=3).run(check_mode=False)
    assert _gpu_mode.SETTER_ANNOTATION not in rig["kube"].deployment["metadata"]["annotations"]


@pytest.mark.parametrize("text", ["", "not json", "[1]", '{"source": "robot", "by": "x"}'])
def test_a_record_that_cannot_be_read_counts_as_the_install(text):
    deployment = {"metadata": {"annotations": {_gpu_mode.SETTER_ANNOTATION: text}}}
    assert _gpu_mode.mode_setter(deployment) == ("install", "", None)


def test_an_operator_asking_for_a_mode_a_request_entered_keeps_it(rig):
    switch(rig, "r1", source=_gpu_mode.ON_DEMAND).run(check_mode=False)
    checked = switch(rig, "r1")
    assert checked.run(check_mode=True)["changed"] is True
    assert checked.warnings == ["mode r1 was entered on demand: it would become the operator's, kept until an "
                                "operator switches"]
    assert _gpu_mode.mode_setter(rig["kube"].deployment)[0] == "on-demand", "check mode changes nothing"
    claimed = switch(rig, "r1")
    result = claimed.run(check_mode=False)
    assert result["changed"] is True and result["verified"], result
    assert claimed.warnings == ["mode r1 was entered on demand: it is now the operator's, kept until an operator "
                                "switches"]
    assert _gpu_mode.mode_setter(rig["kube"].deployment) == ("operator", "me@host/1", NOW)
    assert [e[0] for e in rig["events"]].count("patch") == 1, "no rollout, only the record"
    assert rig["kube"].lease is None or not (rig["kube"].lease.get("spec") or {}).get("holderIdentity")
    again = switch(rig, "r1")
    assert again.run(check_mode=False)["changed"] is False and again.warnings == []
