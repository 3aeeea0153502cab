"""The switch's sequence (_gpu_switch.GpuModeSwitch) against stubs of its three
boundaries - the API, vLLM and LiteLLM - on a fake clock: what is asked, in what
order, with what time limits, and what a failure says."""

from __future__ import annotations

import copy
import json

import pytest

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from ansible_collections.homelab.inference.plugins.module_utils._gpu_switch import GpuModeSwitch, SwitchFailed
from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceError

MODELS = [
    {"name": "vllm-qwen", "backend": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct-AWQ", "context": 8192},
    {"name": "vllm-r1", "backend": "vllm", "model": "r1-awq", "context": 8192},
]
TABLE = _gpu_mode.mode_table(MODELS, {"ml": {"vllm_model": "vllm-qwen"}, "r1": {"vllm_model": "vllm-r1"},
                                      "gaming": {"vllm_model": None}}, [], 8000)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Events(list):
    """What happened, in order, across the stubs."""


class StubKube:
    """The vLLM Deployment; a patch rolls out at once (the rollout is not under test here)."""

    def __init__(self, events, mode="ml"):
        self.events = events
        served = TABLE[mode]["vllm_model"]
        self.deployment = {
            "metadata": {"name": "vllm-server", "generation": 1, "labels": {_gpu_mode.MODE_LABEL: mode},
                         "annotations": {}},
            "spec": {"replicas": 1 if served else 0, "selector": {"matchLabels": {"app": "vllm"}},
                     "template": {"metadata": {}, "spec": {"containers": [
                         {"name": "vllm", "args": list(TABLE[mode]["args"] or TABLE["ml"]["args"])}]}}}}
        self._roll()
        self.lease = None

    def _roll(self):
        replicas = self.deployment["spec"]["replicas"]
        self.deployment["status"] = {"observedGeneration": self.deployment["metadata"]["generation"],
                                     "replicas": replicas, "updatedReplicas": replicas,
                                     "availableReplicas": replicas, "readyReplicas": replicas}

    def serving(self):
        if not self.deployment["spec"]["replicas"]:
            return None
        return _gpu_mode.served_model_name(self.deployment)

    def get_deployment(self, namespace, name):
        return copy.deepcopy(self.deployment)

    def patch_deployment(self, namespace, name, patch):
        self.events.append(("patch", patch["metadata"]["labels"][_gpu_mode.MODE_LABEL]))
        spec = patch["spec"]
        self.deployment["spec"]["replicas"] = spec["replicas"]
        self.deployment["metadata"]["labels"].update(patch["metadata"]["labels"])
        containers = (spec["template"].get("spec") or {}).get("containers")
        if containers:
            self.deployment["spec"]["template"]["spec"]["containers"][0]["args"] = containers[0]["args"]
        self.deployment["metadata"]["generation"] += 1
        self._roll()
        return copy.deepcopy(self.deployment)

    def list_pods(self, namespace, selector):
        return [{"metadata": {"name": "vllm-server-1"}, "status": {"phase": "Running"}}] if self.serving() else []

    def nodes(self, selector):
        return ["gpu-1"]

    def pods_on_node(self, node):
        return []

    def get_lease(self, namespace, name):
        return copy.deepcopy(self.lease)

    def create_lease(self, namespace, body):
        self.events.append(("lock", body["spec"]["holderIdentity"]))
        self.lease = dict(body, metadata=dict(body["metadata"], resourceVersion="1"))

    def replace_lease(self, namespace, body):
        self.create_lease(namespace, body)

    def delete_lease(self, namespace, name):
        self.events.append(("unlock", name))
        self.lease = None


class StubVllm:
    def __init__(self, kube):
        self.kube = kube

    def request_json(self, method, path, body=None, timeout=30, headers=None):
        served = self.kube.serving()
        if served is None:
            raise ServiceError("cannot reach service ml/vllm-api:8000: connection refused")
        return 200, {"data": [{"id": served}]}


class StubLitellm:
    """LiteLLM: each model's answers in turn (the last one repeats); an answer is a model group that answers
    200, ``None`` for a request that times out, after ``seconds`` on the clock."""

    def __init__(self, events, clock, kube):
        self.events, self.clock, self.kube = events, clock, kube
        self.script = {}
        self.asked = []

    def answers(self, model, *answers):
        self.script[model] = list(answers)

    def exchange(self, method, path, body=None, timeout=30, headers=None):
        model = body["model"]
        self.asked.append((model, timeout))
        self.events.append(("litellm", model))
        answers = self.script.get(model) or [(model if model != "vllm-qwen" or self.kube.serving() else None, 0)]
        group, seconds = answers.pop(0) if len(answers) > 1 else answers[0]
        if group is None or seconds > timeout:
            self.clock.sleep(timeout)
            raise ServiceError("service ml/litellm:4000 did not answer within %ss" % timeout, timed_out=True)
        self.clock.sleep(seconds)
        return 200, json.dumps({"choices": []}), {"x-litellm-model-group": group}


def params(mode, **extra):
    base = {"mode": mode, "modes": TABLE, "namespace": "ml", "deployment": "vllm-server", "container": "vllm",
            "rollout_timeout": 60, "rollback": True, "verify": True, "verify_timeout": 60, "warm_timeout": 300,
            "gpu_node_selector": "nvidia.com/gpu=true", "gpu_free_model": "ollama-qwen", "litellm_api_key": "sk-x",
            "lock_name": "gpu-mode", "lock_timeout": 10, "lock_duration": 900}
    base.update(extra)
    return base


@pytest.fixture
def rig():
    events, clock = Events(), Clock()
    kube = StubKube(events)
    litellm = StubLitellm(events, clock, kube)
    return {"events": events, "clock": clock, "kube": kube, "litellm": litellm, "vllm": StubVllm(kube)}


def switch(rig, mode, **extra):
    return GpuModeSwitch(rig["kube"], params(mode, **extra), rig["vllm"], rig["litellm"], "me@host/1",
                         clock=rig["clock"], sleep=rig["clock"].sleep)


# -- the fallback is warm before the GPU goes ---------------------------------------------

@pytest.mark.parametrize("start, target", [("ml", "gaming"), ("ml", "r1"), ("r1", "ml"), ("r1", "gaming")])
def test_a_switch_that_stops_the_served_model_warms_the_fallback_first(rig, start, target):
    rig["kube"].__init__(rig["events"], mode=start)
    rig["litellm"].answers("ollama-qwen", ("ollama-qwen", 164), ("ollama-qwen", 0))  # a cold CPU load, then warm
    result = switch(rig, target).run(check_mode=False)
    assert result["changed"] is True and result["mode"] == target
    events = [e for e in rig["events"] if e[0] != "lock"]
    assert events[:2] == [("litellm", "ollama-qwen"), ("patch", target)], rig["events"]
    assert result["warmed"] == {"model": "ollama-qwen", "status": 200, "answered_by": "ollama-qwen"}
    assert result["timings"]["warm"] == 164
    # the cold load had the warm-up's time, not a verification's
    assert rig["litellm"].asked[0] == ("ollama-qwen", 300)


@pytest.mark.parametrize("start, target", [("gaming", "ml"), ("gaming", "r1")])
def test_a_switch_from_a_gpu_free_mode_has_nothing_to_warm(rig, start, target):
    rig["kube"].__init__(rig["events"], mode=start)
    result = switch(rig, target).run(check_mode=False)
    assert result["changed"] is True and "warm" not in result["timings"] and "warmed" not in result
    assert [e for e in rig["events"] if e[0] != "lock"][0] == ("patch", target)


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
