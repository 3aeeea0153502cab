"""Helpers for the lab scenario's verification: the lab, its playbooks, LiteLLM."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request

import pytest

from lab import ROOT
from testkit.api_client import api_request
from testkit.playbook import ansible_playbook

STATE = os.environ.get("LAB_STATE_DIR", os.path.join(ROOT, ".lab-molecule"))
PORT = int(os.environ.get("LAB_PORT", "16444"))

# Molecule's own Ansible settings (its inventory, config, paths) must not leak into the
# project's playbooks: they run as a user runs them, with the project's ansible.cfg.
for _name in [n for n in os.environ if n.startswith("ANSIBLE_")]:
    del os.environ[_name]


def api(method, path, body=None, content_type="application/json"):
    return api_request(PORT, method, path, body, content_type)


def master_key():
    with open(os.path.join(STATE, "secrets", "litellm_master_key")) as handle:
        return "sk-" + handle.read().split()[0]


def paperless_ai_key():
    """Paperless-AI's own gateway key (the lab inventory's litellm_client_keys), never the master key."""
    with open(os.path.join(STATE, "secrets", "client_key_paperless_ai")) as handle:
        return handle.read().split()[0]


def service_url(name):
    status = api("GET", "/lab/status")[1]
    found = next(s for s in status["services"] if s["name"] == name)
    return "http://%s:%d" % (found["clusterIP"], found["ports"][0])


def litellm(method, path, body=None, timeout=120):
    """(status, parsed body, headers) of a request to the LiteLLM Service."""
    request = urllib.request.Request(service_url("litellm") + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Bearer " + master_key()})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def playbook(*args, json_output=True):
    """Run a playbook on the lab; (returncode, every task result by task name, raw output)."""
    env = {"LAB_STATE_DIR": STATE}
    if json_output:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    result = ansible_playbook(*args, env=env)
    tasks = {}
    if json_output:
        try:
            report = json.loads(result.stdout[result.stdout.index("{"):])
            for play in report["plays"]:
                for task in play["tasks"]:
                    tasks[task["task"]["name"]] = task["hosts"].get("localhost", {})
        except ValueError:
            pass
    return result.returncode, tasks, result.stdout + result.stderr


def gpu_mode(mode, *extra):
    """Run gpu_mode.yml; (returncode, the module's result)."""
    code, tasks, output = playbook("gpu_mode.yml", "-e", "mode=%s" % mode, *extra)
    result = next((value for name, value in tasks.items() if name.startswith("Switch the GPU to")), {})
    return code, result, output


def deployment(namespace, name):
    return api("GET", "/apis/apps/v1/namespaces/%s/deployments/%s" % (namespace, name))[1]


def decoded_secret(namespace, name):
    data = api("GET", "/api/v1/namespaces/%s/secrets/%s" % (namespace, name))[1].get("data", {})
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


@pytest.fixture
def in_ml_mode():
    """Every test that switches leaves the GPU in ml mode, verified."""
    yield
    code, result, output = gpu_mode("ml")
    assert code == 0, output[-3000:]
