from __future__ import annotations

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
