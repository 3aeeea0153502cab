"""Helpers for the project-level tests: the playbooks, the rendered objects and the modules
against FAKE servers from lab/fakes. They need the checkout, not just the
collection artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from ansible.module_utils.testing import patch_module_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def run_module(module_main, capsys, **args):
    """Run a module's main() in-process; return its JSON result (failed or not)."""
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module_main()
    return json.loads(capsys.readouterr().out)


def ansible_playbook(*args, env=None, check=False):
    """Run ansible-playbook from the checkout; returns the CompletedProcess."""
    bindir = os.path.dirname(sys.executable)
    full_env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", **(env or {}))
    result = subprocess.run([os.path.join(bindir, "ansible-playbook"), *args], cwd=ROOT, env=full_env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError("ansible-playbook %s failed:\n%s\n%s" % (" ".join(args), result.stdout, result.stderr))
    return result
