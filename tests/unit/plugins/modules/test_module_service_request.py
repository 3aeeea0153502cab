"""The service_request module as Ansible runs it: main() through the argument spec, with a stub
Service in place of the API server's service proxy: one request, several at once (each answer in
order, the slowest bounding the task, an unanswered one reported in its place), the key never
returned, and body and requests refused together."""

from __future__ import annotations

import json
import threading
import time

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceError
from ansible_collections.homelab.inference.plugins.modules import service_request

KEY = "sk-stub-master-key-0123456789"


class StubGateway:
    """LiteLLM's chat completions as the module sees them: each model answers after its delay;
    ``silent`` models time out. Records the requests and how many were in flight at once."""

    label = "service ml/litellm:4000"

    def __init__(self, delays=None, silent=()):
        self.delays = delays or {}
        self.silent = set(silent)
        self.connected = 0
        self.calls = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()

    def connect(self):
        self.connected += 1

    def exchange(self, method, path, body=None, timeout=30, headers=None, follow_redirects=True):
        with self.lock:
            self.calls.append((method, path, body, timeout, headers))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            model = (body or {}).get("model")
            time.sleep(self.delays.get(model, 0))
            if model in self.silent:
                raise ServiceError("%s did not answer within %ss" % (self.label, timeout), timed_out=True)
            return 200, json.dumps({"model": model}), {"x-litellm-model-group": model}
        finally:
            with self.lock:
                self.in_flight -= 1


def run(monkeypatch, capsys, stub, **args):
    monkeypatch.setattr(service_request, "ServiceEndpoint", lambda *a, **k: stub)
    base = dict(namespace="ml", service="litellm", port=4000, path="/v1/chat/completions", method="POST")
    with patch_module_args(dict(base, **args)):
        with pytest.raises(SystemExit):
            service_request.main()
    output = capsys.readouterr().out
    return json.loads(output), output


def chat(model, timeout=None):
    return {"body": {"model": model, "max_tokens": 1}, "timeout": timeout}


def test_one_request_returns_its_answer_and_never_the_key(monkeypatch, capsys):
    stub = StubGateway()
    result, output = run(monkeypatch, capsys, stub, body={"model": "vllm-qwen"}, api_key=KEY, timeout=7)
    assert result["changed"] is False and result["status"] == 200
    assert result["json"] == {"model": "vllm-qwen"} and result["headers"]["x-litellm-model-group"] == "vllm-qwen"
    assert stub.calls[0][3] == 7 and stub.calls[0][4] == {"x-litellm-api-key": "Bearer " + KEY}
    assert KEY not in output


def test_several_requests_go_out_together_and_come_back_in_order(monkeypatch, capsys):
    stub = StubGateway(delays={"vllm-qwen": 0.6, "ollama-qwen": 0.6, "openai-gpt4o": 0.6})
    result, output = run(monkeypatch, capsys, stub, api_key=KEY, timeout=30,
                         requests=[chat("vllm-qwen", 70), chat("ollama-qwen"), chat("openai-gpt4o", 40)])
    # All three were in flight at once (each answer takes 0.6 s, so one after the other never overlap),
    # on one client set up before the threads.
    assert stub.most_in_flight == 3 and stub.connected == 1
    assert [a["json"]["model"] for a in result["answers"]] == ["vllm-qwen", "ollama-qwen", "openai-gpt4o"]
    # Each request's own timeout, the module's where it gives none.
    assert sorted(c[3] for c in stub.calls) == [30, 40, 70]
    assert "status" not in result and KEY not in output


def test_an_unanswered_request_is_an_answer_not_a_failed_task(monkeypatch, capsys):
    stub = StubGateway(silent=["ollama-qwen"])
    result, dummy = run(monkeypatch, capsys, stub, requests=[chat("vllm-qwen"), chat("ollama-qwen", 5)])
    assert not result.get("failed")
    assert result["answers"][0]["status"] == 200
    assert result["answers"][1] == {"failed": True, "timed_out": True,
                                    "msg": "service ml/litellm:4000 did not answer within 5s"}


def test_body_and_requests_together_are_refused(monkeypatch, capsys):
    stub = StubGateway()
    result, dummy = run(monkeypatch, capsys, stub, body={"model": "x"}, requests=[chat("y")])
    assert result["failed"] and "mutually exclusive" in result["msg"] and "body" in result["msg"]
    assert stub.calls == []
