"""The on-demand policy: its preflight, its decisions and its idle return."""

from __future__ import annotations

import os

import pytest
import yaml

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from ansible_collections.homelab.inference.plugins.module_utils import _gpu_on_demand as od
from ansible_collections.homelab.inference.plugins.module_utils._gpu_on_demand import GpuState

MODES = {"ml": {"vllm_model": "vllm-qwen"}, "r1": {"vllm_model": "vllm-r1"}, "gaming": {"vllm_model": None}}
ON = {"enabled": True}
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 4))


def test_the_catalog_role_defaults_are_the_policy_defaults():
    with open(os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")) as handle:
        assert yaml.safe_load(handle)["inference_gpu_on_demand"] == od.DEFAULTS


@pytest.mark.parametrize("policy", [None, {}, ON, od.DEFAULTS, {"enabled": True, "modes": ["r1"], "hold_seconds": 0,
                                                                "idle_seconds": 0, "reply": "retry"}])
def test_valid_policies(policy):
    assert od.policy_errors(policy, MODES, "ml") == []


BAD = [
    ("not a mapping", ["r1"], "inference_gpu_on_demand: must be a mapping with enabled, modes, never_leave, "
                              "hold_seconds, min_dwell_seconds, idle_seconds, reply; leave it out"),
    ("unknown key", {"enable": True}, "inference_gpu_on_demand.enable: unknown key; use one of enabled, modes,"),
    ("string for a boolean", {"enabled": "yes"}, "inference_gpu_on_demand.enabled: must be true or false, got 'yes'"),
    ("boolean for a number", {"hold_seconds": True}, "inference_gpu_on_demand.hold_seconds: must be an integer, "
                                                     "got True"),
    ("a mode as a string", {"modes": "r1"}, "inference_gpu_on_demand.modes: must be a list of mode names, got 'r1'"),
    ("unknown mode", {"modes": ["r1", "turbo"]}, "inference_gpu_on_demand.modes[1]: 'turbo' is not a mode in "
                                                 "inference_gpu_modes; use one of gaming, ml, r1"),
    ("unknown never_leave mode", {"never_leave": ["Gaming"]}, "inference_gpu_on_demand.never_leave[0]: 'Gaming' is "
                                                              "not a mode"),
    ("twice", {"modes": ["r1", "r1"]}, "inference_gpu_on_demand.modes[1]: 'r1' appears twice; list each mode once"),
    ("GPU-free mode entered", {"modes": ["gaming"], "never_leave": []},
     "inference_gpu_on_demand.modes[0]: 'gaming' frees the GPU and serves no model, so no request can ask for it"),
    ("in both lists", {"modes": ["r1"], "never_leave": ["r1"]},
     "inference_gpu_on_demand.modes[0]: 'r1' is also in never_leave, so a request could enter it and nothing would "
     "leave it; remove it from one of the two"),
    ("enabled without modes", {"enabled": True, "modes": []},
     "inference_gpu_on_demand.modes: empty while enabled is true; list the modes a request may enter, or set "
     "enabled: false"),
    ("hold too long", {"hold_seconds": 7200}, "inference_gpu_on_demand.hold_seconds: must be from 0 to 3600, got 7200"),
    ("negative dwell", {"min_dwell_seconds": -1}, "inference_gpu_on_demand.min_dwell_seconds: must be 0 or more, "
                                                  "got -1"),
    ("negative idle", {"idle_seconds": -5}, "inference_gpu_on_demand.idle_seconds: must be 0 or more, got -5"),
    ("unknown reply", {"reply": "wait"}, "inference_gpu_on_demand.reply: must be hold or retry, got 'wait'"),
    ("default never left", {"enabled": True, "never_leave": ["ml"], "modes": ["r1"]},
     "inference_gpu_on_demand.never_leave: holds the default mode 'ml', so no request could ever switch the GPU"),
]


@pytest.mark.parametrize("policy,expected", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_each_problem_is_one_line_naming_the_key(policy, expected):
    errors = od.policy_errors(policy, MODES, "ml")
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors[0]
    assert "\n" not in errors[0]


def test_the_catalog_filter_reports_the_policy_with_the_catalog():
    from ansible_collections.homelab.inference.plugins.filter.catalog import catalog_errors
    models = [{"name": "vllm-qwen", "backend": "vllm", "model": "q", "context": 8192},
              {"name": "vllm-r1", "backend": "vllm", "model": "r", "context": 8192}]
    assert catalog_errors(models, ["vllm-qwen"], MODES, "ml", {"reply": "later"}) == [
        "inference_gpu_on_demand.reply: must be hold or retry, got 'later'"]
    assert catalog_errors(models, ["vllm-qwen"], MODES, "ml") == []
    assert catalog_errors(models, ["vllm-qwen"], MODES, "ml", od.DEFAULTS) == []
    assert catalog_errors(models, ["vllm-qwen"], MODES, "ml", ON) == []
    # Modes that are not a mapping are reported once, by the catalog; the policy is not checked against them.
    assert len(catalog_errors(models, ["vllm-qwen"], ["ml"], "ml", {"modes": ["x"]})) == 1


def state(mode="ml", source=_gpu_mode.INSTALL, by="", since=0.0, switching_to=None):
    return GpuState(mode, source, by, since, switching_to)


NOW = 10000.0


def decide(model, gpu, policy=None):
    return od.decide(policy or ON, MODES, "ml", gpu, model, NOW)


def test_a_model_the_mode_serves_is_served():
    assert decide("vllm-qwen", state()).action == "serve"


def test_off_by_default_a_request_never_switches():
    decision = od.decide(None, MODES, "ml", state(), "vllm-r1", NOW)
    assert decision == od.Decision("refuse", "r1", "on-demand switching is off (inference_gpu_on_demand.enabled)",
                                   None)


def test_a_request_for_another_mode_switches_from_the_default_whoever_entered_it():
    for source in _gpu_mode.SOURCES:
        assert decide("vllm-r1", state(source=source)) == od.Decision("switch", "r1", "", None)


def test_requests_during_the_switch_join_it():
    assert decide("vllm-r1", state(switching_to="r1")) == od.Decision("switch", "r1", "", None)
    other = decide("vllm-qwen", state(mode="r1", source=_gpu_mode.ON_DEMAND, switching_to="ml"))
    assert other.action == "switch" and other.target == "ml"


def test_a_request_for_a_third_mode_during_a_switch_is_told_to_retry():
    decision = decide("vllm-qwen", state(mode="gaming", source=_gpu_mode.OPERATOR, switching_to="r1"),
                      policy={"enabled": True, "never_leave": []})
    assert decision.action == "refuse" and decision.reason == "the GPU is switching to mode 'r1'"
    assert decision.retry_after == od.DEFAULTS["hold_seconds"]


def test_a_mode_outside_the_policy_is_not_entered():
    decision = decide("vllm-r1", state(), policy={"enabled": True, "modes": ["ml"]})
    assert decision == od.Decision("refuse", "r1", "on-demand switching may not enter mode 'r1' "
                                   "(inference_gpu_on_demand.modes)", None)


def test_gaming_is_never_left():
    decision = decide("vllm-qwen", state(mode="gaming", source=_gpu_mode.OPERATOR, by="alice@desk"))
    assert decision == od.Decision("refuse", "ml", "GPU in gaming mode; on-demand switching is off for gaming", None)


def test_an_operators_mode_is_kept_until_an_operator_leaves_it():
    decision = decide("vllm-qwen", state(mode="r1", source=_gpu_mode.OPERATOR, by="alice@desk/4242", since=0.0))
    assert decision.action == "refuse" and decision.retry_after is None
    assert decision.reason == ("GPU in r1 mode, set by alice@desk/4242; an operator's mode is kept until an "
                               "operator switches")


def test_no_thrash_a_mode_stays_its_dwell_time():
    gpu = state(mode="r1", source=_gpu_mode.ON_DEMAND, since=NOW - 100)
    decision = decide("vllm-qwen", gpu)
    assert decision.action == "refuse" and decision.target == "ml"
    assert decision.retry_after == 200
    assert decision.reason == ("GPU in r1 mode for 100s; it stays at least 300s "
                               "(inference_gpu_on_demand.min_dwell_seconds)")
    assert decide("vllm-qwen", gpu._replace(since=NOW - 300)).action == "switch"


def test_alternating_requests_switch_at_most_once_per_dwell():
    """Requests alternating between the two models every second for an hour."""
    gpu, switches = state(since=0.0), []
    for second in range(3600):
        now = 1000.0 + second
        model = "vllm-r1" if second % 2 else "vllm-qwen"
        decision = od.decide(ON, MODES, "ml", gpu, model, now)
        if decision.action == "switch":
            switches.append(now)
            gpu = state(mode=decision.target, source=_gpu_mode.ON_DEMAND, since=now + 90)  # entered once loaded
    gaps = [b - a for a, b in zip(switches, switches[1:])]
    assert switches and min(gaps) >= od.DEFAULTS["min_dwell_seconds"]


def idle(gpu, last_request, policy=None):
    return od.idle_return(policy or ON, "ml", gpu, last_request, NOW)


def test_a_mode_entered_on_demand_returns_after_its_idle_time():
    gpu = state(mode="r1", source=_gpu_mode.ON_DEMAND, since=NOW - 2000)
    assert idle(gpu, NOW - 900) == 0
    assert idle(gpu, NOW - 100) == 800
    assert idle(gpu, None) == 0


def test_the_idle_return_waits_for_the_dwell_time_too():
    gpu = state(mode="r1", source=_gpu_mode.ON_DEMAND, since=NOW - 10)
    assert idle(gpu, None, policy={"enabled": True, "idle_seconds": 60}) == 290


@pytest.mark.parametrize("gpu,policy", [
    (state(mode="ml", source=_gpu_mode.ON_DEMAND), ON),
    (state(mode="r1", source=_gpu_mode.OPERATOR), ON),
    (state(mode="r1", source=_gpu_mode.BOOT), ON),
    (state(mode="r1", source=_gpu_mode.ON_DEMAND, switching_to="ml"), ON),
    (state(mode="r1", source=_gpu_mode.ON_DEMAND), {"enabled": True, "idle_seconds": 0}),
    (state(mode="r1", source=_gpu_mode.ON_DEMAND), {"enabled": False}),
], ids=["default already", "operator's mode", "boot's mode", "switch under way", "idle return off", "policy off"])
def test_no_idle_return(gpu, policy):
    assert idle(gpu, None, policy) is None
