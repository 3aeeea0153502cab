"""homelab.inference.ollama_model against a FAKE Ollama over real HTTP."""

from __future__ import annotations

import socket

import pytest

from ansible_collections.homelab.inference.plugins.modules import ollama_model
from helpers import run_module
from lab.fakes.ollama import FakeOllama


@pytest.fixture
def ollama():
    server = FakeOllama(models=["qwen2.5:3b"]).start()
    yield server
    server.stop()


def test_pulls_only_what_is_missing_then_changes_nothing(ollama, capsys):
    first = run_module(ollama_model.main, capsys, name=["qwen2.5:3b", "llama3.2:1b"], url=ollama.url)
    assert first["changed"] is True
    assert first["pulled"] == ["llama3.2:1b"]
    assert first["models"] == ["llama3.2:1b", "qwen2.5:3b"]
    assert ollama.hits.get("POST /api/pull") == 1

    second = run_module(ollama_model.main, capsys, name=["qwen2.5:3b", "llama3.2:1b"], url=ollama.url)
    assert second["changed"] is False
    assert second["pulled"] == []
    assert ollama.hits.get("POST /api/pull") == 1


def test_check_mode_reports_and_pulls_nothing(ollama, capsys):
    result = run_module(ollama_model.main, capsys, name=["llama3.2:1b"], url=ollama.url,
                        _ansible_check_mode=True, _ansible_diff=True)
    assert result["changed"] is True
    assert result["pulled"] == ["llama3.2:1b"]
    assert result["diff"] == {"before": {"models": ["qwen2.5:3b"]},
                              "after": {"models": ["llama3.2:1b", "qwen2.5:3b"]}}
    assert "POST /api/pull" not in ollama.hits
    assert ollama.models == {"qwen2.5:3b"}


def test_a_model_the_registry_lacks_fails_with_ollamas_reason(ollama, capsys):
    result = run_module(ollama_model.main, capsys, name=["qwen9:1b"], url=ollama.url)
    assert result["failed"] is True
    assert result["msg"] == ("pulling qwen9:1b on %s failed: pull model manifest: file does not exist" % ollama.url)


def test_absent_removes_only_installed_models(ollama, capsys):
    result = run_module(ollama_model.main, capsys, name=["qwen2.5:3b", "never:1"], state="absent", url=ollama.url)
    assert result["changed"] is True
    assert result["removed"] == ["qwen2.5:3b"]
    assert ollama.models == set()


def test_unreachable_ollama_is_one_clear_line(capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_module(ollama_model.main, capsys, name=["qwen2.5:3b"], url="http://127.0.0.1:%d" % port)
    assert result["failed"] is True
    assert result["msg"].startswith("cannot reach http://127.0.0.1:%d: " % port)
    assert "\n" not in result["msg"]
