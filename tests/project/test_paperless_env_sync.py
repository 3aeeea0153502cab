"""The init container's script keeps the managed keys in Paperless-AI's
persistent /app/data/.env authoritative, even when a stale .env exists, and
writes them so that the app reads them back unchanged.

The script is taken from the rendered ConfigMap and run with the real sh, in
the environment the pod would give it (the rendered ConfigMap, Secret values
and MANAGED_KEYS). The file is read back with the app's own parser
(services/setupService.js loadConfig, v3.0.9, as the lab's FAKE Paperless-AI
reproduces it) and with dotenv's (config/config.js loads the same file)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml

from helpers import ansible_playbook
from lab.workloads.paperless_ai import dotenv_parse, load_config

API_KEY = "sk-test-key-123"
PAPERLESS_TOKEN = "0123456789abcdef0123456789abcdef01234567"
PAPERLESS_URL = "http://paperless.docs.svc.cluster.local:8000/api"
ACCESS_KEY = "pai-access-key-456"


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    target = tmp_path_factory.mktemp("render")
    ansible_playbook("site.yml", "--tags", "render", "-e", "render_dir=%s" % target,
                     "-e", "paperless_ai_api_key=%s" % API_KEY,
                     "-e", "paperless_ai_paperless_url=%s" % PAPERLESS_URL,
                     "-e", "paperless_ai_paperless_token=%s" % PAPERLESS_TOKEN,
                     "-e", "paperless_ai_paperless_username=paperless-ai",
                     "-e", "paperless_ai_access_key=%s" % ACCESS_KEY,
                     "-e", '{"paperless_ai_env": {"SCAN_INTERVAL": "*/5 * * * *"}}',
                     "-e", json.dumps({"litellm_client_keys": [{"name": "paperless-ai", "keys": [API_KEY],
                                                                "models": ["vllm-qwen"]}]}),
                     check=True)
    with open(target / "paperless-ai.yaml") as handle:
        objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(handle) if o}
    init = objects[("Deployment", "paperless-ai")]["spec"]["template"]["spec"]["initContainers"][0]
    env = dict(objects[("ConfigMap", "paperless-ai")]["data"])
    # the rendered Secret is redacted; the pod gets the real values
    env.update(CUSTOM_API_KEY=API_KEY, PAPERLESS_API_TOKEN=PAPERLESS_TOKEN, API_KEY=ACCESS_KEY)
    env.update({e["name"]: e["value"] for e in init["env"]})
    return {"script": objects[("ConfigMap", "paperless-ai-env-sync")]["data"]["sync-env.sh"], "env": env}


def run_sync(pod, data_dir, **overrides):
    script = data_dir.parent / "sync-env.sh"
    script.write_text(pod["script"])
    env = {"PATH": os.environ["PATH"], "PAPERLESS_AI_ENV_FILE": str(data_dir / ".env"), **pod["env"], **overrides}
    return subprocess.run([shutil.which("sh"), str(script)], env=env, capture_output=True, text=True, timeout=30)


def read_env_file(path):
    """What Paperless-AI's setup check and validation read: loadConfig, no unquoting."""
    return load_config(path.read_text())


# An .env left by Paperless-AI's own setup wizard (saveConfig: KEY=value, the
# system prompt between backticks over several lines) and edited by hand.
STALE = """PAPERLESS_API_URL=http://paperless:8000/api
PAPERLESS_API_TOKEN=old-token
AI_PROVIDER=ollama
export CUSTOM_MODEL="Qwen/Qwen2.5-7B-Instruct-AWQ"
  CUSTOM_BASE_URL = http://vllm-api.ml.svc.cluster.local:8000/v1
CUSTOM_API_KEY='sk-old'
SCAN_INTERVAL=*/30 * * * *
TOKEN_LIMIT=128000
TAGS=invoice,receipt
SYSTEM_PROMPT=`You are a document analysis AI.
Keep titles short.
`"""


def test_managed_keys_win_over_a_stale_env_file(pod, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / ".env").write_text(STALE)
    result = run_sync(pod, data)
    assert result.returncode == 0, result.stderr
    values = read_env_file(data / ".env")
    # exactly what the pod was given, as the app's own reader sees it
    assert values["AI_PROVIDER"] == "custom"
    assert values["CUSTOM_MODEL"] == "vllm-qwen"
    assert values["CUSTOM_BASE_URL"] == "http://litellm.ml.svc.cluster.local:4000/v1"
    assert values["CUSTOM_API_KEY"] == API_KEY
    assert values["PAPERLESS_API_URL"] == PAPERLESS_URL
    assert values["PAPERLESS_API_TOKEN"] == PAPERLESS_TOKEN
    assert values["PAPERLESS_USERNAME"] == "paperless-ai"
    assert values["API_KEY"] == ACCESS_KEY
    assert values["SCAN_INTERVAL"] == "*/5 * * * *"
    assert values["TOKEN_LIMIT"] == pod["env"]["TOKEN_LIMIT"]
    # dotenv (config/config.js) reads the managed keys the same way
    parsed = dotenv_parse((data / ".env").read_text())
    for key in pod["env"]["MANAGED_KEYS"].split():
        assert parsed[key] == values[key] == pod["env"][key], key
    # what the user set in the web UI and the role does not manage stays
    assert values["TAGS"] == "invoice,receipt"
    assert parsed["SYSTEM_PROMPT"] == "You are a document analysis AI.\nKeep titles short.\n"
    text = (data / ".env").read_text()
    assert "sk-old" not in text and "ollama" not in text and "vllm-api" not in text and "old-token" not in text
    assert "'" not in text and '"' not in text
    assert oct((data / ".env").stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in data.iterdir()] == [".env"], "no temporary file may be left behind"


def test_a_second_start_leaves_the_file_unchanged(pod, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / ".env").write_text(STALE)
    run_sync(pod, data)
    first = (data / ".env").read_text()
    assert run_sync(pod, data).returncode == 0
    assert (data / ".env").read_text() == first


def test_a_fresh_volume_gets_the_managed_keys(pod, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    assert run_sync(pod, data).returncode == 0
    values = read_env_file(data / ".env")
    assert values["CUSTOM_MODEL"] == "vllm-qwen" and values["CUSTOM_API_KEY"] == API_KEY


UNREADABLE = [
    # value, what the app's reader would have made of it
    ("sk-abc=def", "an '=' cuts the value: loadConfig keeps 'sk-abc'"),
    ("sk-a\nb", "a line break splits the key"),
    ("sk-abc\n", "a trailing line break"),
    ("'sk-abc'", "single quotes are kept by loadConfig, stripped by dotenv"),
    ('"sk-abc"', "double quotes"),
    ("sk`abc", "a backtick opens dotenv's multi-line value"),
    ("sk-abc#1", "dotenv ends an unquoted value at '#'"),
    (" sk-abc", "loadConfig trims"),
    ("sk-abc\t", "loadConfig trims"),
]


@pytest.mark.parametrize("value, why", UNREADABLE, ids=[u[1] for u in UNREADABLE])
def test_a_value_the_app_cannot_read_back_stops_the_pod_and_keeps_the_old_file(pod, tmp_path, value, why):
    data = tmp_path / "data"
    data.mkdir()
    (data / ".env").write_text(STALE)
    result = run_sync(pod, data, PAPERLESS_API_TOKEN=value)
    assert result.returncode != 0, why
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sync-env: the value of PAPERLESS_API_TOKEN "), result.stderr
    assert "set it without" in lines[0]
    assert value.strip().strip("'\"`") not in result.stderr + result.stdout, "no secret in the output"
    assert (data / ".env").read_text() == STALE
    assert [p.name for p in data.iterdir()] == [".env"]


def test_a_managed_key_missing_from_the_pod_is_an_error(pod, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    env = dict(pod, env={k: v for k, v in pod["env"].items() if k != "CUSTOM_MODEL"})
    result = run_sync(env, data)
    assert result.returncode != 0
    assert "CUSTOM_MODEL is managed but not set" in result.stderr


# loadConfig (services/setupService.js, v3.0.9): line.split('='), [key, value]
# destructured (the value ends at its second '='), both trimmed, kept only when
# key and value are non-empty; no unquoting, no 'export', the last line wins.
LOAD_CONFIG = [
    ("A=1", {"A": "1"}),
    ("A=x=y", {"A": "x"}),
    ("A='quoted'", {"A": "'quoted'"}),
    ('A="quoted"', {"A": '"quoted"'}),
    ("  A  =  spaced  ", {"A": "spaced"}),
    ("A=", {}),
    ("A", {}),
    ("=1", {}),
    ("export A=1", {"export A": "1"}),
    ("A=1 # note", {"A": "1 # note"}),
    ("A=1\r", {"A": "1"}),
    ("A=1\nA=2", {"A": "2"}),
    ("P=`two\nB=lines`", {"P": "`two", "B": "lines`"}),
]


@pytest.mark.parametrize("text, expected", LOAD_CONFIG, ids=[repr(t[0]) for t in LOAD_CONFIG])
def test_the_env_reader_is_paperless_ais_load_config(text, expected):
    assert load_config(text) == expected


DOTENV = [
    ("A=1", {"A": "1"}),
    ("export A='q'", {"A": "q"}),
    ('A="a\\nb"', {"A": "a\nb"}),
    ("A=1 # note", {"A": "1"}),
    ("A=1#2", {"A": "1"}),
    ("P=`two\nlines`", {"P": "two\nlines"}),
    ("A=", {"A": ""}),
]


@pytest.mark.parametrize("text, expected", DOTENV, ids=[repr(t[0]) for t in DOTENV])
def test_the_dotenv_reader_is_dotenv_16(text, expected):
    assert dotenv_parse(text) == expected
