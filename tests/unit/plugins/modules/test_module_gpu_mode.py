"""The gpu_mode module as Ansible runs it: its arguments through the argument spec, run_module on a
FAKE API (the vLLM Deployment and the lock's Lease) and stub vLLM and LiteLLM endpoints on a fake
clock, and what it reports (exit_json or fail_json) for each path: status, a switch, the same mode,
check and diff mode, a held lock, a failed verification rolled back, bad input."""

from __future__ import annotations

import functools
import json
import re

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode, _gpu_mode_run
from ansible_collections.homelab.inference.plugins.module_utils._gpu_switch import GpuModeSwitch
from ansible_collections.homelab.inference.plugins.module_utils._kube_access import KubeError
from ansible_collections.homelab.inference.plugins.modules import gpu_mode
from ansible_collections.homelab.inference.tests.unit.plugins.gpu_switch_stubs import (
    Clock,
    Events,
    StubKube,
    StubLitellm,
    StubVllm,
    TABLE,
)
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule


@pytest.fixture
def rig(monkeypatch):
    events, clock = Events(), Clock()
    kube = StubKube(events)
    litellm = StubLitellm(events, clock, kube)
    found = {"events": events, "clock": clock, "kube": kube, "litellm": litellm, "factory_calls": 0}
    monkeypatch.setattr(gpu_mode, "endpoints", lambda module: (StubVllm(kube), litellm))
    monkeypatch.setattr(gpu_mode, "pod_endpoint", lambda module: lambda pod: StubVllm(kube))
    monkeypatch.setattr(_gpu_mode_run, "GpuModeSwitch",
                        functools.partial(GpuModeSwitch, clock=clock, sleep=clock.sleep))
    return found


def run(rig, capsys, mode, check=False, diff=False, kube=None, **extra):
    """The module's outcome: (failed, result) as Ansible would read them from its output."""
    args = {"mode": mode, "modes": TABLE, "gpu_free_model": "ollama-qwen", "litellm_api_key": "sk-test-key",
            "lock_timeout": 10, "_ansible_check_mode": check, "_ansible_diff": diff}
    args.update(extra)

    def factory(module):
        rig["factory_calls"] += 1
        return kube or rig["kube"]

    with patch_module_args(args):
        module = AnsibleK8SModule(argument_spec=gpu_mode.argument_spec(), supports_check_mode=True,
                                  check_pyyaml=False)
        with pytest.raises(SystemExit):
            gpu_mode.run_module(module, kube_factory=factory)
    result = json.loads(capsys.readouterr().out)
    return bool(result.get("failed")), result


def mode_label(rig):
    return rig["kube"].deployment["metadata"]["labels"][_gpu_mode.MODE_LABEL]


def test_status_reports_the_mode_and_changes_nothing(rig, capsys):
    failed, result = run(rig, capsys, "status")
    assert not failed and result["changed"] is False
    assert result["mode"] == "ml" and result["ready"] is True
    assert rig["events"] == []


def test_a_switch_is_locked_patched_verified_and_unlocked(rig, capsys):
    failed, result = run(rig, capsys, "r1")
    assert not failed, result
    assert result["changed"] is True and result["mode"] == "r1" and result["model"] == "vllm-r1"
    assert result["verified"]["vllm_models"] == ["vllm-r1"]
    assert [e[0] for e in rig["events"]][:1] == ["lock"] and rig["events"][-1] == ("unlock", "gpu-mode")
    assert ("patch", "r1") in rig["events"] and mode_label(rig) == "r1"
    assert rig["kube"].lease is None
    assert "diff" not in result, "the diff is reported only in diff mode"


def test_the_current_mode_again_changes_nothing_and_takes_no_lock(rig, capsys):
    failed, result = run(rig, capsys, "ml")
    assert not failed and result["changed"] is False and result["mode"] == "ml"
    assert not any(e[0] in ("lock", "patch") for e in rig["events"])


def test_check_mode_reports_the_change_and_its_diff_and_touches_nothing(rig, capsys):
    failed, result = run(rig, capsys, "gaming", check=True, diff=True)
    assert not failed and result["changed"] is True
    assert result["diff"] == {"before": {"mode": "ml", "model": "vllm-qwen"}, "after": {"mode": "gaming", "model": None}}
    assert rig["events"] == [] and mode_label(rig) == "ml"


def test_a_lock_another_live_run_holds_fails_after_lock_timeout_and_changes_nothing(rig, capsys):
    now = rig["clock"]()
    rig["kube"].lease = {"metadata": {"name": "gpu-mode", "resourceVersion": "7"},
                         "spec": {"holderIdentity": "ops@elsewhere/42", "leaseDurationSeconds": 3600,
                                  "renewTime": "2999-01-01T00:00:00.000000Z"}}
    failed, result = run(rig, capsys, "r1")
    assert failed
    assert "another gpu_mode run holds the lock ml/gpu-mode" in result["msg"] and "\n" not in result["msg"]
    assert rig["clock"]() - now >= 10, "it waited lock_timeout for the lock"
    assert mode_label(rig) == "ml" and not any(e[0] == "patch" for e in rig["events"])
    assert rig["kube"].lease["spec"]["holderIdentity"] == "ops@elsewhere/42", "the other run's lock is left alone"


def test_a_switch_whose_verification_fails_is_rolled_back_and_says_so(rig, capsys):
    rig["litellm"].answers("vllm-r1", (None, 0))  # LiteLLM never answers for the new model
    failed, result = run(rig, capsys, "r1", verify_timeout=5)
    assert failed and result["rolled_back"] is True
    assert result["msg"].startswith("switch to r1 failed: ") and "rolled back to ml" in result["msg"]
    assert "\n" not in result["msg"]
    assert [e for e in rig["events"] if e[0] == "patch"] == [("patch", "r1"), ("patch", "ml")]
    assert mode_label(rig) == "ml" and rig["kube"].lease is None


def test_a_rollback_that_fails_too_is_not_called_rolled_back(rig, capsys):
    rig["litellm"].answers("vllm-r1", (None, 0))
    rig["litellm"].answers("vllm-qwen", (None, 0))  # the previous mode no longer answers either
    failed, result = run(rig, capsys, "r1", verify_timeout=5)
    assert failed and result["rolled_back"] is False
    assert "; rolling back to ml failed too: " in result["msg"] and "\n" not in result["msg"]
    [event] = rig["kube"].recorded
    assert (event["reason"], event["type"]) == ("GpuModeSwitchFailed", "Warning")
    assert json.loads(event["metadata"]["annotations"]["homelab.inference/switch"])["result"] == "failed"


def test_each_switch_is_recorded_as_an_event_on_the_deployment(rig, capsys):
    run(rig, capsys, "r1")
    run(rig, capsys, "r1")            # the same mode again: nothing switched, nothing recorded
    run(rig, capsys, "gaming", check=True)
    [event] = rig["kube"].recorded
    assert event["involvedObject"]["kind"] == "Deployment" and event["involvedObject"]["name"] == "vllm-server"
    assert (event["reason"], event["type"], event["source"]) == (
        "GpuModeSwitched", "Normal", {"component": "homelab.inference.gpu_mode"})
    assert re.fullmatch(r"ml -> r1 by \S+@\S+/\d+ in [\d.]+s \(lock [\d.]+s, warm [\d.]+s, drain [\d.]+s, patch [\d.]+s, rollout "
                        r"[\d.]+s, verify [\d.]+s\): verified", event["message"]), event["message"]
    record = json.loads(event["metadata"]["annotations"]["homelab.inference/switch"])
    assert (record["from"], record["to"], record["result"], record["drained"]) == ("ml", "r1", "switched", 0)
    assert record["by"] in event["message"] and sorted(record["seconds"]) == [
        "drain", "lock", "patch", "rollout", "total", "verify", "warm"]


def test_a_failed_switch_is_recorded_as_a_warning_event(rig, capsys):
    rig["kube"].gpu_memory_used = 11060
    failed, result = run(rig, capsys, "gaming")
    [event] = rig["kube"].recorded
    assert failed and (event["reason"], event["type"]) == ("GpuModeSwitchFailed", "Warning")
    assert event["message"].endswith(result["msg"]), event["message"]
    record = json.loads(event["metadata"]["annotations"]["homelab.inference/switch"])
    assert (record["from"], record["to"], record["result"]) == ("ml", "gaming", "failed")


def test_an_event_that_cannot_be_written_is_a_warning_not_a_failure(rig, capsys, monkeypatch):
    def refuse(namespace, body):
        raise KubeError("recording Event ml/x: 403 Forbidden; grant create on events in namespace ml", 403)
    monkeypatch.setattr(rig["kube"], "create_event", refuse)
    failed, result = run(rig, capsys, "r1")
    assert not failed and result["mode"] == "r1"
    # ansible-core 2.19 reports a warning as a WarningSummary whose event holds the text
    assert [w["event"]["msg"] if isinstance(w, dict) else w for w in result["warnings"]] == [
        "the switch is done but its Event was not recorded: recording Event ml/x: 403 Forbidden; grant create on "
        "events in namespace ml"]


def test_a_gpu_free_mode_is_verified_by_the_drivers_memory(rig, capsys):
    failed, result = run(rig, capsys, "gaming")
    assert not failed, result
    assert result["verified"]["gpu_memory"] == {"used_mib": 1, "max_mib": 1024, "processes": []}
    assert ("check pod", "vllm-server-gpu-free-check") in rig["events"] and rig["kube"].check_pod is None


def test_memory_held_after_a_gpu_free_switch_fails_naming_the_process_without_a_rollback(rig, capsys):
    rig["kube"].gpu_memory_used = 11060
    rig["kube"].gpu_processes = [(4242, "VLLM::EngineCore", 11059)]
    failed, result = run(rig, capsys, "gaming")
    assert failed and result["rolled_back"] is False and result["mode"] == "gaming", result
    assert result["msg"] == (
        "switch to gaming failed: the GPU is not free: 11060 MiB used, at most 1024 allowed (gpu_free_max_mib), "
        "held by VLLM::EngineCore (pid 4242, 11059 MiB); left in gaming with vLLM stopped, not rolled back (vLLM "
        "could not load beside that memory): end that process or restart the GPU node")
    assert "\n" not in result["msg"] and rig["kube"].check_pod is None and rig["kube"].lease is None
    assert [e for e in rig["events"] if e[0] == "patch"] == [("patch", "gaming")], "no rollback"


def test_memory_held_in_gaming_already_fails_an_unchanged_run_with_its_mode(rig, capsys):
    assert not run(rig, capsys, "gaming")[0]
    rig["kube"].gpu_memory_used = 11060
    rig["kube"].gpu_processes = [(4242, "VLLM::EngineCore", 11059)]
    failed, result = run(rig, capsys, "gaming")
    assert failed and not result["changed"] and result["mode"] == result["previous_mode"] == "gaming", result
    assert result["msg"] == (
        "gaming is in place but the GPU is not free: 11060 MiB used, at most 1024 allowed (gpu_free_max_mib), "
        "held by VLLM::EngineCore (pid 4242, 11059 MiB): end that process or restart the GPU node")
    assert [e for e in rig["events"] if e[0] == "patch"] == [("patch", "gaming")], "nothing patched again"


def test_the_memory_check_can_be_skipped_and_is_validated(rig, capsys):
    rig["kube"].gpu_memory_used = 11060
    failed, result = run(rig, capsys, "gaming", gpu_free_max_mib=-1)
    assert not failed and "gpu_memory" not in result["verified"], result
    assert not [e for e in rig["events"] if e[0] == "check pod"]
    failed, result = run(rig, capsys, "ml", gpu_free_max_mib=-2)
    assert failed and result["msg"] == ("gpu_free_max_mib: -2 is below -1; give the most MiB a free GPU may show "
                                        "used, or -1 to skip the check"), result


def test_the_api_key_is_never_in_the_result(rig, capsys):
    for mode in ("status", "r1"):
        result = run(rig, capsys, mode)[1]
        assert "sk-test-key" not in json.dumps(result)


@pytest.mark.parametrize("mode, modes, message", [
    ("turbo", TABLE, "mode: 'turbo' is not a mode; use one of gaming, ml, r1, or status"),
    ("ml", {}, "modes: the mode table is empty; pass the catalog's, built by the gpu_mode_table filter"),
    ("ml", {"ml": {"vllm_model": "vllm-qwen"}},
     "modes.ml: needs vllm_model and args (build the table with the gpu_mode_table filter)"),
])
def test_bad_input_fails_in_one_line_before_any_api_call(rig, capsys, mode, modes, message):
    failed, result = run(rig, capsys, mode, modes=modes)
    assert failed and result["msg"] == message
    assert rig["factory_calls"] == 0 and rig["events"] == []


def test_an_api_error_fails_with_its_message(rig, capsys):
    class Refusing(StubKube):
        def get_deployment(self, namespace, name):
            raise KubeError("cannot read Deployment ml/vllm-server: the API server refused the connection")

    failed, result = run(rig, capsys, "r1", kube=Refusing(Events()))
    assert failed and result["msg"] == "cannot read Deployment ml/vllm-server: the API server refused the connection"
