from __future__ import annotations

import datetime
import json

import pytest

from ansible_collections.homelab.inference.plugins.module_utils import _ollama


@pytest.mark.parametrize("name, canonical", [
    ("qwen2.5:3b", "qwen2.5:3b"),
    ("llama3.2", "llama3.2:latest"),
    ("registry.local:5000/team/model", "registry.local:5000/team/model:latest"),
    ("registry.local:5000/team/model:q4", "registry.local:5000/team/model:q4"),
])
def test_canonical(name, canonical):
    assert _ollama.canonical(name) == canonical


def test_installed_reads_tags_answer():
    body = {"models": [{"name": "qwen2.5:3b", "model": "qwen2.5:3b"}, {"model": "llama3.2"}]}
    assert _ollama.installed(body) == ["llama3.2:latest", "qwen2.5:3b"]


@pytest.mark.parametrize("wanted, present, state, todo", [
    (["qwen2.5:3b", "llama3.2:1b"], ["qwen2.5:3b"], "present", ["llama3.2:1b"]),
    (["qwen2.5:3b"], ["qwen2.5:3b"], "present", []),
    (["llama3.2"], ["llama3.2:latest"], "present", []),
    (["a:1", "a:1"], [], "present", ["a:1"]),
    (["qwen2.5:3b", "gone:1"], ["qwen2.5:3b"], "absent", ["qwen2.5:3b"]),
])
def test_plan(wanted, present, state, todo):
    assert _ollama.plan(wanted, present, state) == todo


@pytest.mark.parametrize("lines, ok, message", [
    ([{"status": "pulling manifest"}, {"status": "verifying sha256 digest"}, {"status": "success"}], True, "success"),
    ([{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}], False,
     "pull model manifest: file does not exist"),
    ([{"status": "pulling manifest"}], False, "the pull ended without success (last status: pulling manifest)"),
    ([], False, "the pull ended without success (last status: none)"),
])
def test_pull_outcome(lines, ok, message):
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    assert _ollama.pull_outcome(text) == (ok, message)


def test_pull_outcome_rejects_garbage():
    ok, message = _ollama.pull_outcome("<html>proxy error</html>")
    assert not ok and message.startswith("unreadable pull progress line")


# -- loading ------------------------------------------------------------------------

NOW = datetime.datetime(2026, 11, 28, 12, 0, 0, tzinfo=datetime.timezone.utc)
# Ollama v0.13.5 lists a model kept for good (keep_alive -1: a duration of MaxInt64)
# as expiring some 292 years on (server/routes.go PsHandler: time.Now().Add(sessionDuration)).
FOR_GOOD = "2318-09-11T11:47:16.854775807Z"


@pytest.mark.parametrize("value, sent", [
    ("-1", -1), (-1, -1), ("3600", 3600), (300, 300), ("24h", "24h"), ("-1m", "-1m"), (" 5m ", "5m"), (None, None),
])
def test_keep_alive_json_is_what_ollamas_api_reads(value, sent):
    """api.Duration reads a number as seconds and a string as a Go duration: the string "-1" has no unit and
    is refused, so whole seconds go as a number."""
    assert _ollama.keep_alive_json(value) == sent


def test_running_reads_the_ps_answer():
    body = {"models": [{"name": "qwen2.5:3b", "model": "qwen2.5:3b", "expires_at": FOR_GOOD},
                       {"model": "llama3.2", "expires_at": "2026-11-28T12:04:00.5-07:00"}]}
    assert _ollama.running(body) == {"qwen2.5:3b": FOR_GOOD, "llama3.2:latest": "2026-11-28T12:04:00.5-07:00"}
    assert _ollama.running({}) == {}


@pytest.mark.parametrize("text, expected", [
    (FOR_GOOD, datetime.datetime(2318, 9, 11, 11, 47, 16, 854775, tzinfo=datetime.timezone.utc)),
    ("2026-11-28T12:04:00.5-07:00", datetime.datetime(2026, 11, 28, 19, 4, 0, 500000, tzinfo=datetime.timezone.utc)),
    ("2026-11-28T12:04:00+01:00", datetime.datetime(2026, 11, 28, 11, 4, 0, tzinfo=datetime.timezone.utc)),
    ("0001-01-01T00:00:00Z", datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc)),
    ("soon", None), (None, None), ("", None),
])
def test_parse_expiry(text, expected):
    assert _ollama.parse_expiry(text) == expected


def later(**delta):
    return (NOW + datetime.timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("running, keep_alive, todo", [
    ({}, "-1", ["qwen2.5:3b"]),
    ({"qwen2.5:3b": FOR_GOOD}, "-1", []),
    ({"qwen2.5:3b": FOR_GOOD}, -1, []),
    # loaded by a request with the server's default (5m): loaded again to be kept for good
    ({"qwen2.5:3b": later(minutes=4)}, "-1", ["qwen2.5:3b"]),
    ({"qwen2.5:3b": later(hours=23)}, "24h", []),
    ({"qwen2.5:3b": later(hours=24, seconds=30)}, "24h", []),
    # kept for good, but the catalog says 24h: loaded again with 24h
    ({"qwen2.5:3b": FOR_GOOD}, "24h", ["qwen2.5:3b"]),
    ({"qwen2.5:3b": later(hours=30)}, "86400", ["qwen2.5:3b"]),
    # no keep_alive asked: being loaded is enough
    ({"qwen2.5:3b": later(minutes=1)}, None, []),
    # an expiry that cannot be read is not a reason to load again
    ({"qwen2.5:3b": "soon"}, "-1", []),
    ({"qwen2.5:3b:latest": FOR_GOOD}, "-1", ["qwen2.5:3b"]),
], ids=["cold", "for-good", "for-good-int", "default-expiry", "within-24h", "24h-and-clock-skew", "too-long",
        "too-long-seconds", "no-keep-alive", "unreadable-expiry", "another-model"])
def test_load_plan(running, keep_alive, todo):
    assert _ollama.load_plan(["qwen2.5:3b"], running, keep_alive, NOW) == todo


def test_load_plan_keeps_the_order_asked_and_names_each_model_once():
    assert _ollama.load_plan(["b:1", "a", "b:1", "a:latest"], {}, None, NOW) == ["b:1", "a"]


@pytest.mark.parametrize("status, text, ok, message", [
    (200, '{"model":"qwen2.5:3b","created_at":"2026-01-01T00:00:00Z","response":"","done":true,"done_reason":"load"}',
     True, "loaded"),
    (404, '{"error":"model \'qwen9:1b\' not found"}', False, "model 'qwen9:1b' not found"),
    (500, '{"error":"model requires more system memory (5.1 GiB) than is available (3.9 GiB)"}', False,
     "model requires more system memory (5.1 GiB) than is available (3.9 GiB)"),
    (502, "<html>Bad Gateway</html>\n", False, "502: <html>Bad Gateway</html>"),
    (200, '{"done":false}', False, "Ollama's answer did not say the model is loaded: {\"done\":false}"),
])
def test_load_outcome(status, text, ok, message):
    assert _ollama.load_outcome(status, text) == (ok, message)
