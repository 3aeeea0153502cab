"""The REAL LiteLLM proxy on the config the litellm role renders, in front of the
REAL vLLM (vLLM CPU 0.32.0 on the lab's tiny models, tools/lab/workloads/vllm_real.py)
started with exactly the args the vllm role renders for a mode; Ollama and the
cloud tiers are the FAKEs of tools/testkit/gateway_rig.py.

One real vLLM at a time, on one port the rendered config points at: ml first,
killed (SIGKILL to its process group: the API server and its engine core) for
the fallback, then r1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from helpers import ROOT
from lab import tiny_model
from testkit.gateway_rig import Gateway, Upstreams, free_port, render_gateway, streamed_text
from real_vllm import READY_TIMEOUT, role_args

pytestmark = pytest.mark.real_vllm

SERVED = {"ml": "vllm-qwen", "r1": "vllm-r1"}
TIMES = {}


class RealVllm:
    """At most one REAL vLLM, always on ``port``."""

    def __init__(self, port, log_dir):
        self.port, self.log_dir = port, log_dir
        self.process, self.mode = None, None

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def ensure(self, mode):
        if self.process is not None and self.process.poll() is None and self.mode == mode:
            return
        self.kill()
        args = role_args(mode)
        args = args[:args.index("--port")] + ["--port", str(self.port), "--host", "127.0.0.1"]
        log_path = os.path.join(self.log_dir, "vllm-%s.log" % mode)
        with open(log_path, "w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "lab.workloads.vllm_real"] + args, cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.mode = mode
        began = time.monotonic()
        while True:
            if self.process.poll() is not None:
                pytest.fail("vLLM exited with %s:\n%s" % (self.process.returncode, _tail(log_path)))
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() - began > READY_TIMEOUT:
                pytest.fail("vLLM not ready in %d s:\n%s" % (READY_TIMEOUT, _tail(log_path)))
            time.sleep(0.5)
        TIMES.setdefault("vllm start", []).append(round(time.monotonic() - began, 1))

    def kill(self):
        """SIGKILL to the whole process group (the API server and vLLM's engine core process)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 30
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.process, self.mode = None, None


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _tail(path):
    with open(path) as source:
        return source.read()[-4000:]


@pytest.fixture(scope="module")
def upstreams():
    servers = Upstreams()
    servers.vllm.stop()  # the FAKE vLLM: not used here, the real one stands on its own port
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    server = RealVllm(free_port(), str(tmp_path_factory.mktemp("real-vllm")))
    yield server
    server.kill()
    print("\ngateway on the real vLLM, times (s): %s" % json.dumps(TIMES))


@pytest.fixture(scope="module")
def rendered(upstreams, vllm, tmp_path_factory):
    bases = dict(upstreams.api_bases, vllm="%s/v1" % vllm.base)
    return render_gateway(tmp_path_factory.mktemp("gateway-real-vllm"), upstreams, litellm_api_bases=bases)


@pytest.fixture
def gateway(rendered):
    """A fresh proxy per test: no cooldown of one test reaches the next."""
    config_dir, env, _ = rendered
    proxy = Gateway(config_dir, env).start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_vllm_qwen_is_answered_by_the_real_vllm(vllm, gateway, upstreams, stream):
    vllm.ensure("ml")
    upstreams.ollama.reset_counters()
    status, answer, headers, seconds = gateway.chat("vllm-qwen", stream=stream)
    assert status == 200, answer
    assert headers["x-litellm-model-group"] == "vllm-qwen"
    text = streamed_text(answer) if stream else answer["choices"][0]["message"]["content"]
    # max_tokens 16 (the rig's request) covers the tiny model's whole fixed answer
    assert text.strip() == tiny_model.ANSWER
    assert upstreams.chat_hits()["ollama"] == 0
    TIMES["vllm-qwen %s" % ("stream" if stream else "plain")] = round(seconds, 2)


def test_vllm_r1_while_vllm_serves_ml_gets_the_clear_mode_error(vllm, gateway):
    vllm.ensure("ml")
    # vLLM's own 404 for it, which LiteLLM's failure hook turns into the mode's message
    request = urllib.request.Request(vllm.base + "/v1/chat/completions", headers={"content-type": "application/json"},
                                     data=json.dumps({"model": "vllm-r1", "messages": [
                                         {"role": "user", "content": "hi"}]}).encode())
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=30)
    assert raised.value.code == 404
    assert json.loads(raised.value.read())["error"]["message"] == (
        "The model `vllm-r1` does not exist. Valid aliases: vllm-qwen.")
    status, answer, _, _ = gateway.chat("vllm-r1")
    assert status == 404, answer
    assert answer["error"]["message"] == (
        "Model vllm-r1 is not loaded: the GPU is in mode 'ml' (serving vllm-qwen); it is served in mode 'r1': "
        "switch with `ansible-playbook gpu_mode.yml -e mode=r1`, or ask for model 'default', which always answers.")
    assert gateway.chat("vllm-r1")[0] == 404, "the same clear error again, not a cooldown's 429"
    assert gateway.chat("vllm-qwen")[0] == 200, "vllm-qwen is still served"


def test_a_killed_real_vllm_falls_back_to_ollama(vllm, gateway, upstreams):
    vllm.ensure("ml")
    assert gateway.chat("vllm-qwen")[2]["x-litellm-model-group"] == "vllm-qwen"
    vllm.kill()
    upstreams.ollama.reset_counters()
    for stream in (False, True):
        for model in ("vllm-qwen", "default"):
            status, answer, headers, seconds = gateway.chat(model, stream=stream)
            assert status == 200, answer
            assert headers["x-litellm-model-group"] == "ollama-qwen"
            text = streamed_text(answer) if stream else answer["choices"][0]["message"]["content"]
            assert text.strip() == "Hello from the fake Ollama model."
            TIMES["fallback %s %s" % (model, "stream" if stream else "plain")] = round(seconds, 2)
    assert upstreams.chat_hits()["ollama"] == 4


def test_r1_reasoning_comes_back_through_litellm_as_reasoning_content(vllm, gateway):
    vllm.ensure("r1")
    # vLLM 0.32.0 names the field `reasoning` (the deepseek_r1 parser's output) ...
    request = urllib.request.Request(vllm.base + "/v1/chat/completions", headers={"content-type": "application/json"},
                                     data=json.dumps({"model": "vllm-r1", "messages": [
                                         {"role": "user", "content": "hi"}]}).encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        direct = json.load(response)["choices"][0]["message"]
    assert direct["reasoning"].strip() == tiny_model.R1_REASONING
    assert "reasoning_content" not in direct
    # ... and LiteLLM hands it to clients as reasoning_content, the answer without it.
    status, headers, text, _ = gateway.request("POST", "/v1/chat/completions", {
        "model": "vllm-r1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64})
    assert status == 200, text
    assert headers["x-litellm-model-group"] == "vllm-r1"
    message = json.loads(text)["choices"][0]["message"]
    assert message["reasoning_content"].strip() == tiny_model.R1_REASONING
    assert message["content"].strip() == tiny_model.R1_ANSWER
    # vllm-qwen is not loaded in r1 mode: it falls back down the chain
    status, answer, headers, _ = gateway.chat("vllm-qwen")
    assert (status, headers["x-litellm-model-group"]) == (200, "ollama-qwen")
