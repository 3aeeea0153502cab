"""The ollama_model module as Ansible runs it: main() through the argument spec, with a stub
Ollama endpoint in place of the API server's service proxy, and what it reports for each path:
pull, load (keep_alive as Ollama's API reads it), remove, the same state again, check and diff
mode, Ollama not running yet, and the failures, each in one line."""

from __future__ import annotations

import datetime
import json

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceError
from ansible_collections.homelab.inference.plugins.modules import ollama_model

# What Ollama v0.13.5 writes as the expiry of a model kept for good (keep_alive -1): centuries on.
FOR_GOOD = "2318-02-27T00:00:00.000000000Z"


class StubOllama:
    """Ollama's API as the module uses it, with models on disk and in memory; every call recorded."""

    label = "service ml/ollama:11434"

    def __init__(self, installed=(), in_memory=None, tags_status=200, pull_lines=None, load_times_out=False):
        self.installed = set(installed)
        self.in_memory = dict(in_memory or {})
        self.tags_status = tags_status
        self.pull_lines = pull_lines
        self.load_times_out = load_times_out
        self.calls = []

    def request_json(self, method, path, body=None, timeout=30):
        self.calls.append((method, path))
        status = self.tags_status.pop(0) if isinstance(self.tags_status, list) else self.tags_status
        if status != 200:
            return status, "no endpoints available for service \"ollama\""
        return 200, {"models": [{"name": n, "model": n} for n in sorted(self.installed)]}

    def request(self, method, path, body=None, timeout=30):
        self.calls.append((method, path, body))
        if path == "/api/ps":
            return 200, json.dumps({"models": [{"name": n, "model": n, "expires_at": e}
                                               for n, e in self.in_memory.items()]})
        if path == "/api/pull":
            lines = self.pull_lines or [{"status": "pulling manifest"}, {"status": "success"}]
            if lines[-1].get("status") == "success":
                self.installed.add(body["model"])
            return 200, "\n".join(json.dumps(line) for line in lines)
        if path == "/api/generate":
            if self.load_times_out:
                raise ServiceError("service ml/ollama:11434 did not answer within %ss" % timeout, timed_out=True)
            self.in_memory[body["model"]] = FOR_GOOD if body.get("keep_alive") == -1 else \
                (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)).isoformat()
            return 200, json.dumps({"model": body["model"], "done": True, "done_reason": "load"})
        if path == "/api/delete":
            self.installed.discard(body["model"])
            return 200, ""
        raise AssertionError("unexpected request %s %s" % (method, path))

    def writes(self):
        return [c for c in self.calls if c[0] in ("POST", "DELETE")]


def run(monkeypatch, capsys, stub, check=False, diff=False, **args):
    """The module's outcome: (failed, result), as Ansible would read them from its output."""
    monkeypatch.setattr(ollama_model, "ServiceEndpoint", lambda *a, **k: stub)
    with patch_module_args(dict(args, _ansible_check_mode=check, _ansible_diff=diff)):
        with pytest.raises(SystemExit):
            ollama_model.main()
    result = json.loads(capsys.readouterr().out)
    return bool(result.get("failed")), result


def test_a_missing_model_is_pulled_and_a_second_run_changes_nothing(monkeypatch, capsys):
    stub = StubOllama(installed=["qwen2.5:3b"])
    failed, result = run(monkeypatch, capsys, stub, name=["qwen2.5:3b", "llama3.2:1b"])
    assert not failed and result["changed"] is True and result["pulled"] == ["llama3.2:1b"]
    assert result["models"] == ["llama3.2:1b", "qwen2.5:3b"]
    assert stub.writes() == [("POST", "/api/pull", {"model": "llama3.2:1b", "stream": True})]
    failed, result = run(monkeypatch, capsys, stub, name=["qwen2.5:3b", "llama3.2:1b"])
    assert not failed and result["changed"] is False and result["pulled"] == []


def test_check_mode_reports_the_pull_and_its_diff_and_writes_nothing(monkeypatch, capsys):
    stub = StubOllama(installed=["qwen2.5:3b"])
    failed, result = run(monkeypatch, capsys, stub, check=True, diff=True, name=["llama3.2:1b"], state="loaded",
                         keep_alive="-1")
    assert not failed and result["changed"] is True
    assert result["pulled"] == ["llama3.2:1b"] and result["loaded"] == ["llama3.2:1b"]
    assert result["diff"] == {"before": {"models": ["qwen2.5:3b"], "running": []},
                              "after": {"models": ["llama3.2:1b", "qwen2.5:3b"], "running": ["llama3.2:1b"]}}
    assert stub.writes() == []


def test_loaded_for_good_sends_keep_alive_as_a_number_and_is_not_loaded_again(monkeypatch, capsys):
    stub = StubOllama(installed=["qwen2.5:3b"])
    failed, result = run(monkeypatch, capsys, stub, name=["qwen2.5:3b"], state="loaded", keep_alive="-1")
    assert not failed and result["changed"] is True and result["loaded"] == ["qwen2.5:3b"]
    # Ollama reads the string "-1" as a duration without a unit and refuses it: -1 goes as a number.
    assert stub.writes() == [("POST", "/api/generate", {"model": "qwen2.5:3b", "stream": False, "keep_alive": -1})]
    failed, result = run(monkeypatch, capsys, stub, name=["qwen2.5:3b"], state="loaded", keep_alive="-1")
    assert not failed and result["changed"] is False and result["running"] == ["qwen2.5:3b"]


def test_a_model_loaded_for_minutes_is_loaded_again_when_asked_for_good(monkeypatch, capsys):
    soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=4)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    stub = StubOllama(installed=["qwen2.5:3b"], in_memory={"qwen2.5:3b": soon})
    failed, result = run(monkeypatch, capsys, stub, name=["qwen2.5:3b"], state="loaded", keep_alive="-1")
    assert not failed and result["changed"] is True and result["loaded"] == ["qwen2.5:3b"]


def test_absent_removes_only_what_is_there(monkeypatch, capsys):
    stub = StubOllama(installed=["qwen2.5:3b", "llama3.2:1b"])
    failed, result = run(monkeypatch, capsys, stub, name=["llama3.2:1b", "gone:7b"], state="absent")
    assert not failed and result["changed"] is True and result["removed"] == ["llama3.2:1b"]
    assert stub.writes() == [("DELETE", "/api/delete", {"model": "llama3.2:1b"})]
    assert result["models"] == ["qwen2.5:3b"]


def test_check_mode_before_ollama_runs_reports_everything_with_a_warning(monkeypatch, capsys):
    stub = StubOllama(tags_status=503)
    failed, result = run(monkeypatch, capsys, stub, check=True, name=["qwen2.5:3b"], state="loaded")
    assert not failed and result["changed"] is True
    assert result["pulled"] == ["qwen2.5:3b"] and result["loaded"] == ["qwen2.5:3b"]
    # ansible-core 2.19 reports a warning as a summary object, earlier ones as a string.
    assert "Ollama is not running yet (service ml/ollama:11434 has no ready pod (503: " in json.dumps(result["warnings"])


def test_ollama_not_running_outside_check_mode_fails_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(ollama_model, "NO_POD_GRACE", 0.3)
    monkeypatch.setattr(ollama_model, "NO_POD_RETRY", 0.05)
    stub = StubOllama(tags_status=503)
    failed, result = run(monkeypatch, capsys, stub, name=["qwen2.5:3b"])
    assert failed and result["msg"].startswith("cannot list Ollama's models: ") and "\n" not in result["msg"]
    assert result["msg"].endswith(" for 0.3s") and len(stub.calls) > 2


def test_a_pod_the_proxy_does_not_route_to_yet_is_asked_again(monkeypatch, capsys):
    monkeypatch.setattr(ollama_model, "NO_POD_RETRY", 0.01)
    stub = StubOllama(installed=["qwen2.5:3b"], tags_status=[503, 503, 200])
    failed, result = run(monkeypatch, capsys, stub, name=["qwen2.5:3b"])
    assert not failed and result["changed"] is False and stub.calls == [("GET", "/api/tags")] * 3


def test_keep_alive_without_state_loaded_fails_before_any_request(monkeypatch, capsys):
    stub = StubOllama()
    failed, result = run(monkeypatch, capsys, stub, name=["qwen2.5:3b"], keep_alive="24h")
    assert failed and result["msg"] == "keep_alive: only state=loaded takes it; remove it or set state: loaded"
    assert stub.calls == []


def test_a_failed_pull_names_the_model_and_ollamas_error(monkeypatch, capsys):
    stub = StubOllama(pull_lines=[{"status": "pulling manifest"},
                                  {"error": "pull model manifest: file does not exist"}])
    failed, result = run(monkeypatch, capsys, stub, name=["nosuch:1b"])
    assert failed
    assert result["msg"] == ("pulling nosuch:1b on service ml/ollama:11434 failed: "
                             "pull model manifest: file does not exist")


def test_a_load_that_times_out_says_to_raise_load_timeout(monkeypatch, capsys):
    stub = StubOllama(installed=["qwen2.5:3b"], load_times_out=True)
    failed, result = run(monkeypatch, capsys, stub, name=["qwen2.5:3b"], state="loaded", load_timeout=90)
    assert failed
    assert result["msg"] == ("loading qwen2.5:3b on service ml/ollama:11434 did not finish within 90s (load_timeout); "
                             "a cold load on a CPU takes minutes: raise load_timeout")
