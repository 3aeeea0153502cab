"""The lab on the REAL vLLM (LAB_VLLM=real): site.yml converges it, and gpu_mode
switches ml -> r1 -> gaming -> ml, each switch verified by the module against
vLLM CPU 0.32.0 serving the lab's tiny models (tools/lab/workloads/vllm_real.py).

The lab runs in this process, so LAB_VLLM set here is what its kubelet sees. The
first tests are quick (no vLLM runs) and are part of `make test`; the round trip
is marked ``real_vllm`` (`make test-real-vllm`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from helpers import ROOT, ansible_playbook, gpu_mode_result
from lab import TOOLS, tiny_model
from testkit.gateway_rig import free_port
from lab_fixture import call, start_lab

SERVED = {"ml": "vllm-qwen", "r1": "vllm-r1"}
PODS = "/api/v1/namespaces/ml/pods?labelSelector=app.kubernetes.io%2Fname%3Dvllm"
CHAT = "/api/v1/namespaces/ml/services/vllm-api:8000/proxy/v1/chat/completions"
# gpu_mode's own limits suffice: the rollout waits for vLLM's readiness up to vllm_startup_timeout
# (900 s; a switch's rollout to the real vLLM CPU measured 25-40 s), and once the pod is ready vLLM lists its
# model and LiteLLM routes to it at once (verify measured 0.02-0.42 s against its default 60 s).
TIMES = {}


def gpu_mode(env, mode, *extra):
    began = time.monotonic()
    result = gpu_mode_result(env, mode, *extra)
    TIMES.setdefault("gpu_mode.yml %s" % mode, []).append(round(time.monotonic() - began, 1))
    return result


def vllm_pods(lab):
    status, body = call(lab, "GET", PODS)
    assert status == 200, body
    return body["items"]


def served_by_the_real_vllm(lab, mode):
    """The running vLLM pod is the REAL vLLM (its log says so), serving ``mode``'s tiny model."""
    pods = [p for p in vllm_pods(lab) if not p["metadata"].get("deletionTimestamp")]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    log = lab.container_log(pods[0], "vllm") or ""
    assert "lab real vLLM" in log and "vllm.entrypoints.openai.api_server" in log, log[-2000:]
    status, answer = call(lab, "POST", CHAT, {"model": SERVED[mode], "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200, answer
    message = answer["choices"][0]["message"]
    if mode == "r1":
        # vLLM 0.32.0's deepseek_r1 parser: the thinking in `reasoning` (not the FAKE's reasoning_content).
        assert message["reasoning"].strip() == tiny_model.R1_REASONING
        assert message["content"].strip() == tiny_model.R1_ANSWER
    else:
        assert message["content"].strip() == tiny_model.ANSWER


# -- quick: which vLLM a lab runs, and its load delay ------------------------------------------


def test_a_bad_lab_vllm_value_stops_the_lab_at_start(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_VLLM", "rael")
    with pytest.raises(ValueError, match="LAB_VLLM='rael': use real or fake"):
        start_lab(tmp_path)
    result = subprocess.run([sys.executable, "-m", "lab", "--state-dir", str(tmp_path / "cli"), "up",
                             "--port", str(free_port())], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, LAB_VLLM="rael", PYTHONPATH=TOOLS))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "The lab cannot start: LAB_VLLM='rael': use real or fake" in result.stderr
    assert not os.path.exists(tmp_path / "cli" / "lab.pid"), "nothing was started"


def test_the_real_vllm_gets_only_the_slow_model_faults_delay(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_VLLM", "real")
    lab = start_lab(tmp_path, load_delay=0.5)
    try:
        monkeypatch.delenv("LAB_VLLM")  # chosen at the lab's start, for its whole life
        assert lab.describe()["vllm"] == "real"
        assert lab.load_delay("vllm-qwen") is None, "the real vLLM's load is its own, no lab delay on top"
        assert call(lab, "POST", "/lab/faults/slow-model", {"model": "vllm-r1", "seconds": 7})[0] == 200
        assert lab.load_delay("vllm-r1") == 7
    finally:
        lab.stop()
    fake = start_lab(tmp_path / "fake", load_delay=0.5)
    try:
        assert (fake.describe()["vllm"], fake.load_delay("vllm-qwen")) == ("fake", 0.5)
    finally:
        fake.stop()


# -- the round trip on the real vLLM -------------------------------------------------------------


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    base = tmp_path_factory.mktemp("real-lab")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAB_VLLM", "real")
        lab = start_lab(base, load_delay=0.5)  # the default delay must not reach the real vLLM
    os.makedirs(str(base / "tmp"))
    env = {"LAB_STATE_DIR": lab.state_dir, "TMPDIR": str(base / "tmp")}
    try:
        began = time.monotonic()
        result = ansible_playbook("site.yml", env=env)
        TIMES["site.yml"] = round(time.monotonic() - began, 1)
        assert result.returncode == 0, result.stdout[-3000:]
        yield {"lab": lab, "env": env}
    finally:
        lab.stop()
        print("\nreal vLLM lab times (s): %s" % json.dumps(TIMES))
        assert os.listdir(lab.pids.directory) == [], "every process the lab started has stopped"


@pytest.mark.real_vllm
def test_site_yml_converges_the_lab_on_the_real_vllm(converged):
    lab = converged["lab"]
    assert lab.describe()["vllm"] == "real"
    served_by_the_real_vllm(lab, "ml")
    status = gpu_mode(converged["env"], "status")
    assert (status["mode"], status["changed"], status["ready"]) == ("ml", False, True)


@pytest.mark.real_vllm
def test_the_switch_round_trip_on_the_real_vllm(converged):
    lab, env = converged["lab"], converged["env"]
    began = time.monotonic()
    for mode, previous in (("r1", "ml"), ("gaming", "r1"), ("ml", "gaming")):
        result = gpu_mode(env, mode)
        assert not result.get("failed"), result.get("msg")
        assert (result["changed"], result["mode"], result["previous_mode"], result["rolled_back"]) == (
            True, mode, previous, False)
        assert result["invocation"]["module_args"]["verify_timeout"] == 60  # the module's default
        TIMES["%s module timings" % mode] = {k: result["timings"].get(k) for k in ("rollout", "verify", "total")}
        if mode == "gaming":
            assert result["model"] is None
            assert result["verified"]["vllm_pods"] == 0
            assert result["verified"]["litellm"]["answered_by"] == "ollama-qwen"
            assert vllm_pods(lab) == []
        else:
            assert result["model"] == SERVED[mode]
            assert result["verified"]["vllm_models"] == [SERVED[mode]]
            assert result["verified"]["litellm"]["answered_by"] == SERVED[mode]
            served_by_the_real_vllm(lab, mode)
    TIMES["round trip"] = round(time.monotonic() - began, 1)
    again = gpu_mode(env, "ml")
    assert (again["changed"], again["mode"]) == (False, "ml"), "the round trip ends where it began"
