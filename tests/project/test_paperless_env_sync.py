"""The init container's script keeps the managed keys in Paperless-AI's
persistent /app/data/.env authoritative, even when a stale .env exists.

The script is taken from the rendered ConfigMap and run with the real sh, in
the environment the pod would give it (the rendered ConfigMap, Secret values
and MANAGED_KEYS)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from helpers import ansible_playbook

API_KEY = "sk-test-key-123"


@pytest.fixture(scope="module")
def pod(tmp_path_factory):
    target = tmp_path_factory.mktemp("render")
    ansible_playbook("site.yml", "--tags", "render", "-e", "render_dir=%s" % target,
                     "-e", "paperless_ai_api_key=%s" % API_KEY, "-e", '{"paperless_ai_env": {"SCAN_INTERVAL": "*/5 * * * *"}}',
                     check=True)
    with open(target / "paperless-ai.yaml") as handle:
        objects = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(handle) if o}
    init = objects[("Deployment", "paperless-ai")]["spec"]["template"]["spec"]["initContainers"][0]
    env = dict(objects[("ConfigMap", "paperless-ai")]["data"])
    env["CUSTOM_API_KEY"] = API_KEY  # the rendered Secret is redacted; the pod gets the real value
    env.update({e["name"]: e["value"] for e in init["env"]})
    return {"script": objects[("ConfigMap", "paperless-ai-env-sync")]["data"]["sync-env.sh"], "env": env}


def run_sync(pod, data_dir, **overrides):
    script = data_dir.parent / "sync-env.sh"
    script.write_text(pod["script"])
    env = {"PATH": os.environ["PATH"], "PAPERLESS_AI_ENV_FILE": str(data_dir / ".env"), **pod["env"], **overrides}
    return subprocess.run([shutil.which("sh"), str(script)], env=env, capture_output=True, text=True, timeout=30)


def read_env_file(path):
    """Parse .env the way dotenv does for the forms the script writes."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.replace("export ", "").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value  # dotenv: the last assignment wins
    return values


STALE = """# written by Paperless-AI's setup wizard
PAPERLESS_API_URL=http://paperless:8000/api
AI_PROVIDER=ollama
export CUSTOM_MODEL="Qwen/Qwen2.5-7B-Instruct-AWQ"
  CUSTOM_BASE_URL = http://vllm-api.ml.svc.cluster.local:8000/v1
CUSTOM_API_KEY=sk-old
SCAN_INTERVAL=*/30 * * * *
TAGS=invoice,receipt
"""


def test_managed_keys_win_over_a_stale_env_file(pod, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / ".env").write_text(STALE)
    result = run_sync(pod, data)
    assert result.returncode == 0, result.stderr
    values = read_env_file(data / ".env")
    assert values["AI_PROVIDER"] == "custom"
    assert values["CUSTOM_MODEL"] == "vllm-qwen"
    assert values["CUSTOM_BASE_URL"] == "http://litellm.ml.svc.cluster.local:4000/v1"
    assert values["CUSTOM_API_KEY"] == API_KEY
    assert values["SCAN_INTERVAL"] == "*/5 * * * *"
    # what the user set in the web UI and the role does not manage stays
    assert values["PAPERLESS_API_URL"] == "http://paperless:8000/api"
    assert values["TAGS"] == "invoice,receipt"
    text = (data / ".env").read_text()
    assert "sk-old" not in text and "ollama" not in text and "vllm-api" not in text
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
    assert read_env_file(data / ".env")["CUSTOM_MODEL"] == "vllm-qwen"


def test_a_value_dotenv_cannot_hold_stops_the_pod_and_keeps_the_old_file(pod, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / ".env").write_text(STALE)
    result = run_sync(pod, data, CUSTOM_API_KEY="it's")
    assert result.returncode != 0
    assert "CUSTOM_API_KEY holds a single quote" in result.stderr
    assert (data / ".env").read_text() == STALE
    assert [p.name for p in data.iterdir()] == [".env"]


def test_a_managed_key_missing_from_the_pod_is_an_error(pod, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    env = dict(pod, env={k: v for k, v in pod["env"].items() if k != "CUSTOM_MODEL"})
    result = run_sync(env, data)
    assert result.returncode != 0
    assert "CUSTOM_MODEL is managed but not set" in result.stderr
