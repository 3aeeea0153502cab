"""Whether code a role ships off the controller (to the GPU host, or into the official Python image)
is closed and needs only Python's standard library: copied alone, its entry point imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FOREIGN = ("ansible", "kubernetes", "urllib3", "yaml", "prometheus_client")


def shipped_files(role, variable):
    with open(os.path.join(ROOT, "roles", role, "vars", "main.yml")) as handle:
        return yaml.safe_load(handle)[variable]


def foreign_imports(tmp_path, files, entry):
    """(exit code, stderr, the foreign top-level packages loaded) when ``entry`` is imported from
    ``files`` alone, copied as the role lays them out."""
    code = tmp_path / "ansible_collections" / "homelab" / "inference" / "plugins" / "module_utils"
    code.mkdir(parents=True)
    for name in files:
        shutil.copy(os.path.join(ROOT, "plugins", "module_utils", name), str(code / name))
    probe = ("import sys; sys.path.insert(0, %r); import ansible_collections.homelab.inference.plugins.module_utils.%s; "
             "print(sorted(m.split('.')[0] for m in sys.modules if m.split('.')[0] in %r))"
             % (str(tmp_path), entry, FOREIGN))
    # -I: no environment, no user site; -S: no site-packages at all (the venv's Ansible is out of reach).
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=False)
    return done.returncode, done.stderr, done.stdout.strip()
