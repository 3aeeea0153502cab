"""Run the project's playbooks from the checkout, with the environment's ansible-playbook."""

from __future__ import annotations

import os
import subprocess
import sys

from lab import ROOT


def ansible_playbook(*args, env=None, check=False, timeout=900):
    """Run ansible-playbook in the checkout (so its ansible.cfg applies); return the CompletedProcess."""
    executable = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    full_env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", **(env or {}))
    result = subprocess.run([executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError("ansible-playbook %s failed:\n%s\n%s" % (" ".join(args), result.stdout[-4000:],
                                                                   result.stderr[-2000:]))
    return result
