"""Helpers for the project-level tests: the playbooks, the rendered objects and the modules
against FAKE servers from tools/lab/fakes. They need the checkout, not just the
collection artifact."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from ansible.module_utils.testing import patch_module_args

from lab import ROOT
from testkit.kube_access import lab_endpoint, service_account_token
from testkit.playbook import ansible_playbook as run_playbook


def run_module(module_main, capsys, **args):
    """Run a module's main() in-process; return its JSON result (failed or not)."""
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module_main()
    return json.loads(capsys.readouterr().out)


def ansible_playbook(*args, env=None, check=False):
    """Run ansible-playbook from the checkout; returns the CompletedProcess."""
    try:
        return run_playbook(*args, env=env, check=check, timeout=600)
    except RuntimeError as err:
        raise AssertionError(str(err)) from None


# The GPU worker's PATH for its gpu-mode command: the system Python, no Ansible, no kubernetes client.
HOST_PATH = "/usr/bin:/bin"


def install_gpu_mode_host(root, state_dir, env, *extra, token=None):
    """The gpu_mode_host role into ``root`` (bin/, lib/, etc/) as on the GPU worker, talking to the lab of
    ``state_dir`` over TLS with a token of the gpu-mode ServiceAccount (the gpu_mode_access role's); the
    systemd unit is left to the gpu_worker scenario, which has systemd. ``token``: the one to install (each
    TokenRequest makes a new one), else a new one."""
    server, ca_file = lab_endpoint(state_dir)
    token = token or service_account_token(state_dir, "ml", "gpu-mode")
    return ansible_playbook(
        "tests/project/playbooks/gpu_mode_host.yml", "--skip-tags", "gpu_mode_host_systemd",
        "-e", "gpu_mode_host_api_server=%s" % server, "-e", "gpu_mode_host_ca_file=%s" % ca_file,
        "-e", "gpu_mode_host_token=%s" % token,
        "-e", "gpu_mode_host_command=%s" % os.path.join(str(root), "bin", "gpu-mode"),
        "-e", "gpu_mode_host_lib_dir=%s" % os.path.join(str(root), "lib"),
        "-e", "gpu_mode_host_config_dir=%s" % os.path.join(str(root), "etc"), *extra,
        env=dict(env, ANSIBLE_STDOUT_CALLBACK="default"))


def gpu_mode_host(root, *args):
    """The installed gpu-mode command run as on the GPU worker: its system Python, isolated, an empty environment."""
    return subprocess.run([os.path.join(str(root), "bin", "gpu-mode"), "--config",
                           os.path.join(str(root), "etc", "gpu-mode.json")] + list(args),
                          env={"PATH": HOST_PATH}, capture_output=True, text=True, timeout=600, check=False)


def gpu_mode_result(env, mode, *extra):
    """Run gpu_mode.yml on a lab (``env`` names its state) and return the switch task's result."""
    result = ansible_playbook("gpu_mode.yml", "-e", "mode=%s" % mode, *extra,
                              env=dict(env, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"))
    report = json.loads(result.stdout[result.stdout.index("{"):])
    task = next(t for t in report["plays"][0]["tasks"] if t["task"]["name"].startswith("Switch the GPU to"))
    return task["hosts"]["localhost"]
