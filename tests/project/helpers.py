"""Helpers for the project-level tests: the playbooks, the rendered objects and the modules
against FAKE servers from lab/fakes. They need the checkout, not just the
collection artifact."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from lab.playbook import ROOT
from lab.playbook import ansible_playbook as run_playbook


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
