"""homelab.inference.ollama_model against a FAKE Ollama over real HTTP."""

from __future__ import annotations

import json
import socket
import urllib.request

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


# -- state=loaded: the model in memory, kept there for keep_alive ---------------------------

def ps(ollama):
    """Ollama's own list of the models in memory."""
    with urllib.request.urlopen(ollama.url + "/api/ps", timeout=10) as response:
        return {m["name"]: m for m in json.loads(response.read())["models"]}


def test_loaded_pulls_and_loads_then_a_second_run_changes_nothing(ollama, capsys):
    first = run_module(ollama_model.main, capsys, name=["qwen2.5:3b", "llama3.2:1b"], state="loaded",
                       keep_alive="-1", url=ollama.url)
    assert first["changed"] is True and not first.get("failed"), first
    assert first["pulled"] == ["llama3.2:1b"]
    assert first["loaded"] == ["qwen2.5:3b", "llama3.2:1b"]
    assert first["running"] == ["llama3.2:1b", "qwen2.5:3b"]
    assert sorted(ps(ollama)) == ["llama3.2:1b", "qwen2.5:3b"]
    loads = ollama.hits.get("POST /api/generate")
    assert loads == 2

    second = run_module(ollama_model.main, capsys, name=["qwen2.5:3b", "llama3.2:1b"], state="loaded",
                        keep_alive="-1", url=ollama.url)
    assert second["changed"] is False, second
    assert (second["pulled"], second["loaded"]) == ([], [])
    assert ollama.hits.get("POST /api/generate") == loads, "a loaded model is not loaded again"
    assert ollama.hits.get("GET /api/ps", 0) >= 2


def test_loaded_in_check_mode_reports_and_loads_nothing(ollama, capsys):
    result = run_module(ollama_model.main, capsys, name=["qwen2.5:3b"], state="loaded", keep_alive="24h",
                        url=ollama.url, _ansible_check_mode=True, _ansible_diff=True)
    assert result["changed"] is True
    assert result["loaded"] == ["qwen2.5:3b"]
    assert result["diff"] == {"before": {"models": ["qwen2.5:3b"], "running": []},
                              "after": {"models": ["qwen2.5:3b"], "running": ["qwen2.5:3b"]}}
    assert "POST /api/generate" not in ollama.hits
    assert ps(ollama) == {}


def test_a_model_kept_for_good_is_loaded_again_with_a_duration_the_catalog_asks(ollama, capsys):
    forever = run_module(ollama_model.main, capsys, name=["qwen2.5:3b"], state="loaded", keep_alive="-1",
                         url=ollama.url)
    assert forever["loaded"] == ["qwen2.5:3b"]
    shorter = run_module(ollama_model.main, capsys, name=["qwen2.5:3b"], state="loaded", keep_alive="24h",
                         url=ollama.url)
    assert shorter["changed"] is True and shorter["loaded"] == ["qwen2.5:3b"], shorter
    again = run_module(ollama_model.main, capsys, name=["qwen2.5:3b"], state="loaded", keep_alive="24h",
                       url=ollama.url)
    assert again["changed"] is False, again


def test_a_bad_keep_alive_is_one_line_and_no_request(ollama, capsys):
    result = run_module(ollama_model.main, capsys, name=["qwen2.5:3b"], state="loaded", keep_alive="forever",
                        url=ollama.url)
    assert result["failed"] is True
    assert result["msg"] == ("keep_alive: 'forever' is not an Ollama duration; use -1 to keep the model loaded for "
                             "good, or a duration such as 24h, 30m or 3600 (seconds)")
    assert ollama.hits == {}
    result = run_module(ollama_model.main, capsys, name=["qwen2.5:3b"], keep_alive="-1", url=ollama.url)
    assert result["msg"] == "keep_alive: only state=loaded takes it; remove it or set state: loaded"


def test_a_load_longer_than_load_timeout_fails_with_one_clear_line(capsys):
    server = FakeOllama(models=["qwen2.5:3b"], cold_load=3).start()
    try:
        result = run_module(ollama_model.main, capsys, name=["qwen2.5:3b"], state="loaded", keep_alive="-1",
                            load_timeout=1, url=server.url)
    finally:
        server.stop()
    assert result["failed"] is True
    assert result["msg"] == ("loading qwen2.5:3b on %s did not finish within 1s (load_timeout); a cold load on a CPU "
                             "takes minutes: raise load_timeout" % server.url)
