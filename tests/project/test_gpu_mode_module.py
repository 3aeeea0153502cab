"""homelab.inference.gpu_mode at its client boundary: a FAKE Kubernetes client
(tests/project/fake_kube.py) that rolls the vLLM Deployment the vllm role
renders, a FAKE vLLM over real HTTP that serves what the ready pod serves,
and the REAL LiteLLM proxy on the config the litellm role renders."""

from __future__ import annotations

import json
import os
import threading

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from ansible_collections.homelab.inference.plugins.module_utils._gpu_switch import GpuModeSwitch, SwitchFailed
from ansible_collections.homelab.inference.plugins.module_utils._kube_access import KubeError
from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceEndpoint
from ansible_collections.homelab.inference.plugins.modules import gpu_mode
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import AnsibleK8SModule
from testkit.kube_client import FakeKube
from helpers import ROOT
from testkit.gateway_rig import MASTER_KEY, Gateway, Upstreams, render_gateway


def catalog():
    with open(os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")) as handle:
        return yaml.safe_load(handle)


def vllm_defaults():
    with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as handle:
        return yaml.safe_load(handle)


TABLE = _gpu_mode.mode_table(catalog()["inference_models"], catalog()["inference_gpu_modes"],
                             vllm_defaults()["vllm_common_args"], vllm_defaults()["vllm_port"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """FAKE upstreams, the REAL LiteLLM on the rendered config, and the rendered vLLM Deployment."""
    upstreams = Upstreams()
    target = tmp_path_factory.mktemp("stack")
    config_dir, env, _ = render_gateway(target, upstreams)
    with open(os.path.join(str(target), "render", "vllm.yaml")) as handle:
        deployment = next(o for o in yaml.safe_load_all(handle) if o and o["kind"] == "Deployment")
    # As client-side apply leaves it on the object.
    deployment["metadata"]["annotations"][_gpu_mode.LAST_APPLIED] = json.dumps(deployment)
    gateway = Gateway(config_dir, env).start()
    yield {"upstreams": upstreams, "gateway": gateway, "deployment": deployment}
    gateway.stop()
    upstreams.stop()


@pytest.fixture
def kube(stack):
    """A cluster in ML mode, vLLM serving vllm-qwen."""
    return FakeKube(stack["deployment"], stack["upstreams"], load_reads=3)


def args(stack, mode, **extra):
    base = {"mode": mode, "modes": TABLE, "vllm_url": stack["upstreams"].api_bases["vllm"].rsplit("/v1", 1)[0],
            "litellm_url": stack["gateway"].url, "litellm_api_key": MASTER_KEY, "gpu_free_model": "ollama-qwen",
            "verify_timeout": 20, "rollout_timeout": 30, "lock_timeout": 2,
            # no gateway probes vLLM through a Service here: the drain needs no time to settle
            "drain_settle": 0}
    base.update(extra)
    return base


def run(kube, capsys, **module_args):
    """Run the module in-process against the FAKE client; its JSON result."""
    with patch_module_args(module_args):
        module = AnsibleK8SModule(argument_spec=gpu_mode.argument_spec(), supports_check_mode=True,
                                  check_pyyaml=False)
        with pytest.raises(SystemExit):
            gpu_mode.run_module(module, kube_factory=lambda _: kube)
    return json.loads(capsys.readouterr().out)


def test_switch_to_r1_is_verified_and_releases_the_lock(stack, kube, capsys):
    result = run(kube, capsys, **args(stack, "r1"))
    assert result["changed"] is True and not result.get("failed"), result
    assert (result["mode"], result["previous_mode"], result["model"]) == ("r1", "ml", "vllm-r1")
    assert result["verified"]["vllm_models"] == ["vllm-r1"]
    assert result["verified"]["litellm"] == {"model": "vllm-r1", "status": 200, "answered_by": "vllm-r1"}
    assert set(result["timings"]) == {"lock", "warm", "drain", "patch", "rollout", "verify", "total"}
    assert result["drained"] == 0 and kube.service["spec"]["selector"][_gpu_mode.MODE_LABEL] == "r1"
    assert result["warmed"] == {"model": "ollama-qwen", "status": 200, "answered_by": "ollama-qwen"}
    assert result["rolled_back"] is False
    container = kube.deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == TABLE["r1"]["args"]
    assert container["readinessProbe"]["exec"]["command"][-1] == "vllm-r1"
    assert kube.deployment["metadata"]["labels"][_gpu_mode.MODE_LABEL] == "r1"
    source, by, at = _gpu_mode.mode_setter(kube.deployment)  # who entered the mode, for the on-demand rules
    assert (source, by.rsplit("/", 1)[-1]) == ("operator", str(os.getpid())) and at is not None
    assert kube.calls.count("patch_deployment") == 1, "one patch per switch"
    assert kube.leases == {}, "the lock is released"
    applied = json.loads(kube.deployment["metadata"]["annotations"][_gpu_mode.LAST_APPLIED])
    assert applied["spec"]["template"]["spec"]["containers"][0]["args"] == TABLE["r1"]["args"]


def test_the_same_mode_again_changes_nothing_and_writes_nothing(stack, kube, capsys):
    result = run(kube, capsys, **args(stack, "ml"))
    assert result["changed"] is False, result
    assert result["verified"]["vllm_models"] == ["vllm-qwen"]
    assert result["verified"]["litellm"]["answered_by"] == "vllm-qwen"
    assert "patch_deployment" not in kube.calls and "create_lease" not in kube.calls


def test_gaming_frees_the_gpu_and_back_to_ml(stack, kube, capsys):
    result = run(kube, capsys, **args(stack, "gaming"))
    assert result["changed"] is True and not result.get("failed"), result
    assert result["model"] is None
    assert result["verified"]["vllm_pods"] == 0 and result["verified"]["gpu_holders"] == []
    assert result["verified"]["litellm"]["answered_by"] == "ollama-qwen"
    assert kube.deployment["spec"]["replicas"] == 0
    assert stack["upstreams"].vllm.stopped, "no pod: vLLM refuses connections"
    back = run(kube, capsys, **args(stack, "ml"))
    assert back["changed"] is True and back["previous_mode"] == "gaming" and not back.get("failed"), back
    assert back["verified"]["litellm"]["answered_by"] == "vllm-qwen"


@pytest.fixture
def cold_ollama(stack):
    """Ollama restarted: nothing loaded, and a load of the model takes COLD_LOAD seconds."""
    ollama = stack["upstreams"].ollama
    saved = ollama.cold_load
    ollama.loaded.clear()
    ollama.cold_load = COLD_LOAD
    ollama.reset_counters()
    yield ollama
    ollama.cold_load = saved


# The reference system's cold CPU load (60-164 s) against gpu_mode's verification (60 s),
# scaled down: the load takes longer than verification may.
COLD_LOAD, VERIFY_TIMEOUT = 3, 1


def test_a_cold_fallback_is_warmed_before_vllm_goes_and_the_switch_verifies(stack, kube, cold_ollama, capsys):
    result = run(kube, capsys, **args(stack, "gaming", verify_timeout=VERIFY_TIMEOUT))
    assert result["changed"] is True and not result.get("failed"), result
    assert result["warmed"] == {"model": "ollama-qwen", "status": 200, "answered_by": "ollama-qwen"}
    assert result["verified"]["litellm"]["answered_by"] == "ollama-qwen"
    assert result["rolled_back"] is False and kube.deployment["spec"]["replicas"] == 0
    assert "warm" in result["timings"]


def test_a_fallback_that_cannot_be_warmed_fails_the_switch_before_vllm_is_touched(stack, kube, cold_ollama, capsys):
    before = json.dumps(kube.deployment, sort_keys=True)
    result = run(kube, capsys, **args(stack, "gaming", warm_timeout=1))
    assert result["failed"] is True
    assert result["msg"].startswith("switch to gaming not started: LiteLLM did not serve ollama-qwen from its own "
                                    "tier ollama-qwen within 1s (warm_timeout): ")
    assert result["msg"].endswith("; vLLM still serves vllm-qwen (ml), nothing changed")
    assert "from vLLM" not in result["msg"] and "\n" not in result["msg"]
    assert (result["changed"], result["mode"], result["model"], result["rolled_back"]) == (False, "ml", "vllm-qwen",
                                                                                           False)
    assert "patch_deployment" not in kube.calls
    assert json.dumps(kube.deployment, sort_keys=True) == before
    assert kube.leases == {}, "the lock is released"


def test_check_mode_warms_nothing(stack, kube, cold_ollama, capsys):
    result = run(kube, capsys, _ansible_check_mode=True, **args(stack, "gaming"))
    assert result["changed"] is True and "warmed" not in result
    assert not any(key.startswith("generate:") for key in cold_ollama.hits), cold_ollama.hits


def test_status_reports_and_changes_nothing(stack, kube, capsys):
    result = run(kube, capsys, **args(stack, "status"))
    assert result["changed"] is False
    assert (result["mode"], result["model"], result["ready"], result["pod_problems"]) == ("ml", "vllm-qwen", True, [])
    assert [c for c in kube.calls if c not in ("get_deployment", "list_pods")] == []


def test_check_mode_reports_the_switch_and_writes_nothing(stack, kube, capsys):
    result = run(kube, capsys, _ansible_check_mode=True, _ansible_diff=True, **args(stack, "r1"))
    assert result["changed"] is True
    assert result["diff"] == {"before": {"mode": "ml", "model": "vllm-qwen"},
                              "after": {"mode": "r1", "model": "vllm-r1"}}
    assert [c for c in kube.calls if c not in ("get_deployment",)] == []


def test_a_failed_load_fails_with_the_pods_reason_and_rolls_back(stack, kube, capsys):
    kube.faults["vllm-r1"] = "oom"
    result = run(kube, capsys, **args(stack, "r1"))
    assert result["failed"] is True
    assert result["msg"].startswith("switch to r1 failed: pod vllm-server-")
    assert "container vllm was OOMKilled (exit code 137); rolled back to ml (verified)" in result["msg"]
    assert result["rolled_back"] is True and result["mode"] == "ml"
    assert result["verified"]["vllm_models"] == ["vllm-qwen"]
    assert _gpu_mode.mode_of_deployment(kube.deployment, TABLE) == "ml"
    assert kube.leases == {}


def test_without_rollback_a_failed_load_is_left_as_it_is(stack, kube, capsys):
    kube.faults["vllm-r1"] = "no_gpu"
    result = run(kube, capsys, rollback=False, **args(stack, "r1"))
    assert result["failed"] is True
    assert result["msg"].startswith("switch to r1 failed: pod vllm-server-")
    assert "is Pending: no GPU free (0/2 nodes are available: 1 Insufficient nvidia.com/gpu.)" in result["msg"]
    assert "rolled back" not in result["msg"]
    assert kube.deployment["metadata"]["labels"][_gpu_mode.MODE_LABEL] == "r1"
    assert kube.leases == {}


def test_a_gpu_still_held_by_another_pod_fails_the_free_mode(stack, kube, capsys):
    kube.gpu_node_pods = [{"metadata": {"name": "steam", "namespace": "games"}, "status": {"phase": "Running"},
                           "spec": {"containers": [{"name": "game",
                                                    "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}]
    result = run(kube, capsys, **args(stack, "gaming"))
    assert result["failed"] is True
    assert result["msg"] == ("switch to gaming failed: the GPU is still held by games/steam; rolled back to ml "
                             "(verified)")


def test_a_live_lock_makes_a_second_run_wait_then_fail_naming_the_holder(stack, kube, capsys):
    now = _gpu_mode.micro_time(_gpu_mode.parse_time("2099-01-01T00:00:00Z"))
    kube.leases["gpu-mode"] = {"metadata": {"name": "gpu-mode", "resourceVersion": "7"},
                               "spec": {"holderIdentity": "alice@laptop/42", "leaseDurationSeconds": 600,
                                        "acquireTime": now, "renewTime": now}}
    result = run(kube, capsys, **args(stack, "r1"))
    assert result["failed"] is True
    assert result["msg"].startswith("another gpu_mode run holds the lock ml/gpu-mode: alice@laptop/42 since ")
    assert "patch_deployment" not in kube.calls
    assert kube.leases["gpu-mode"]["spec"]["holderIdentity"] == "alice@laptop/42", "someone else's lock stays"


def test_an_expired_lock_is_taken_over(stack, kube, capsys):
    kube.leases["gpu-mode"] = {"metadata": {"name": "gpu-mode", "resourceVersion": "7"},
                               "spec": {"holderIdentity": "crashed@host/1", "leaseDurationSeconds": 60,
                                        "acquireTime": "2020-01-01T00:00:00.000000Z",
                                        "renewTime": "2020-01-01T00:00:00.000000Z"}}
    result = run(kube, capsys, **args(stack, "r1"))
    assert result["changed"] is True and not result.get("failed"), result
    assert kube.leases == {}


def test_two_switches_at_once_end_in_one_consistent_mode(stack, kube):
    """Two runs race for r1 and gaming: one waits for the other's lock; the final mode is the later one's, verified."""
    defaults = {name: spec.get("default") for name, spec in gpu_mode.argument_spec().items()}
    params = dict(defaults, **args(stack, "r1"))
    params.update(lock_duration=120, lock_timeout=60)
    vllm = ServiceEndpoint(None, "ml", "vllm-api", 8000, params["vllm_url"])
    litellm = ServiceEndpoint(None, "ml", "litellm", 4000, params["litellm_url"])
    outcomes = {}

    def switch(name, mode):
        runner = GpuModeSwitch(kube, dict(params, mode=mode), vllm, litellm, holder=name)
        try:
            outcomes[name] = runner.run(check_mode=False)
        except SwitchFailed as failure:
            outcomes[name] = {"failed": str(failure)}

    threads = [threading.Thread(target=switch, args=("one", "r1")), threading.Thread(target=switch,
                                                                                      args=("two", "gaming"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not any("failed" in o for o in outcomes.values()), outcomes
    final = _gpu_mode.mode_of_deployment(kube.deployment, TABLE)
    assert final in ("r1", "gaming")
    waited = [o for o in outcomes.values() if o["timings"]["lock"] > 0.5]
    assert waited, "one of the runs waited for the other's lock: %s" % outcomes
    assert kube.leases == {}


def test_an_unknown_mode_is_one_line_and_no_api_call(stack, kube, capsys):
    result = run(kube, capsys, **args(stack, "turbo"))
    assert result["msg"] == "mode: 'turbo' is not a mode; use one of gaming, ml, r1, or status"
    assert kube.calls == []


def test_a_missing_deployment_says_what_to_do(stack, kube, capsys):
    result = run(kube, capsys, deployment="vllm-nope", **args(stack, "r1"))
    assert result["failed"] is True
    assert result["msg"] == ("Deployment ml/vllm-nope not found; run site.yml first, or set namespace and deployment")


def test_an_api_outage_is_one_line(stack, kube, capsys):
    kube.fail_with = KubeError("reading Deployment ml/vllm-server at https://127.0.0.1:6443: Connection refused; "
                               "check kubeconfig, context and host")
    result = run(kube, capsys, **args(stack, "r1"))
    assert result["failed"] is True and "\n" not in result["msg"]
    assert result["msg"].endswith("check kubeconfig, context and host")


def test_no_secret_in_the_result(stack, kube, capsys):
    result = run(kube, capsys, **args(stack, "r1"))
    assert MASTER_KEY not in json.dumps(result)
