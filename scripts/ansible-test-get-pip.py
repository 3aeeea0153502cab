"""Offline stand-in for get-pip.py, for ansible-test's per-test virtualenvs.

ansible-test bootstraps pip in each venv it makes by running get-pip.py,
downloaded from a host that may be unreachable; it uses a cached copy first.
This stand-in bootstraps pip with ensurepip, then installs what it was asked
for through the machine's own pip configuration (index, certificates).
"""

import os
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
# ensurepip points PIP_CONFIG_FILE at /dev/null for itself; a child pip that
# inherited it would ignore the machine's index and certificates.
env = {k: v for k, v in os.environ.items() if k != "PIP_CONFIG_FILE"}
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args], env=env)
