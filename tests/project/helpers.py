"""Helpers for the project-level tests: the playbooks, the rendered objects and the modules
against FAKE servers from tools/lab/fakes. They need the checkout, not just the
collection artifact."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from lab import ROOT
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


def gpu_mode_result(env, mode, *extra):
    """Run gpu_mode.yml on a lab (``env`` names its state) and return the switch task's result."""
    result = ansible_playbook("gpu_mode.yml", "-e", "mode=%s" % mode, *extra,
                              env=dict(env, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json"))
    report = json.loads(result.stdout[result.stdout.index("{"):])
    task = next(t for t in report["plays"][0]["tasks"] if t["task"]["name"].startswith("Switch the GPU to"))
    return task["hosts"]["localhost"]
