"""The built collection as a Galaxy user gets it, without the checkout.

The tarball that `ansible-galaxy collection build` makes is installed into an empty
collections path; from a directory outside the checkout, with only an inventory for the lab,
`homelab.inference.site` renders what the checkout's site.yml renders (the example catalog
ships with the collection), converges the lab, and `homelab.inference.gpu_mode` switches it.
The tarball carries the collection and its user README, not the project's tooling."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

from helpers import ansible_playbook
from lab import ROOT
from lab_fixture import start_lab

BIN = os.path.dirname(sys.executable)


def users_environment(**values):
    """The environment of someone who installed the collection: no checkout on the Python path
    (scripts/env.sh puts this checkout's collection there for a developer's shell)."""
    env = dict(os.environ, **values)
    env.pop("PYTHONPATH", None)
    env.pop("ANSIBLE_CONFIG", None)
    return env
# What a Galaxy user must not get: the lab, the project's entry points and the dev tooling.
NOT_SHIPPED = ("tools/", "extensions/molecule/", "molecule/", "benchmarks/", "scripts/", "inventories/",
               "tests/project/", "docs/lab.md", "docs/development-notes.md", "README.md", "pyproject.toml",
               "site.yml", "gpu_mode.yml", "verify.yml", "Makefile", "ansible.cfg")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(collections path, tarball members) of the built collection installed on its own."""
    base = tmp_path_factory.mktemp("galaxy")
    build = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", ROOT, "--output-path",
                            str(base)], capture_output=True, text=True, cwd=str(base), env=users_environment())
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next(str(p) for p in base.iterdir() if p.name.endswith(".tar.gz"))
    with tarfile.open(tarball) as archive:
        members = archive.getnames()
    collections = base / "collections"
    # --no-deps: kubernetes.core comes with the pinned ansible package here, as it would from Galaxy.
    # The empty path as the only configured one: a copy installed elsewhere (molecule links the
    # checkout into ~/.ansible/collections) must not make the install a no-op.
    install = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", tarball, "-p",
                              str(collections), "--no-deps"], capture_output=True, text=True, cwd=str(base),
                             env=users_environment(ANSIBLE_COLLECTIONS_PATH=str(collections)))
    assert install.returncode == 0, install.stdout + install.stderr
    return str(collections), members


@pytest.fixture(scope="module")
def user(installed, tmp_path_factory):
    """A user's directory outside the checkout: an inventory for the lab and nothing else."""
    collections, dummy = installed
    home = tmp_path_factory.mktemp("user")
    shutil.copy(os.path.join(ROOT, "inventories", "lab", "hosts.yml"), str(home / "hosts.yml"))
    shutil.copytree(os.path.join(ROOT, "inventories", "lab", "group_vars"), str(home / "group_vars"))
    lab = start_lab(home, load_delay=0.5)
    # PWD as the user's shell sets it: a relative render_dir is relative to it.
    env = users_environment(ANSIBLE_COLLECTIONS_PATH=collections, LAB_STATE_DIR=lab.state_dir, PWD=str(home),
                            ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")

    def run(*args, callback=None):
        run_env = dict(env, ANSIBLE_STDOUT_CALLBACK=callback) if callback else env
        return subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(home / "hosts.yml"), *args],
                              capture_output=True, text=True, cwd=str(home), env=run_env, timeout=600)

    try:
        yield {"home": home, "run": run, "env": env, "state_dir": lab.state_dir}
    finally:
        lab.stop()


def test_the_tarball_ships_the_collection_and_its_user_readme_not_the_tooling(installed):
    dummy, members = installed
    names = members
    for path in ("roles/catalog/defaults/main.yml", "playbooks/site.yml", "playbooks/gpu_mode.yml",
                 "docs/collection/README.md", "meta/runtime.yml", "plugins/modules/gpu_mode.py"):
        assert path in names, path
    shipped_tooling = [n for n in names if n.startswith(NOT_SHIPPED) or n in NOT_SHIPPED]
    assert shipped_tooling == []


def test_the_installed_readme_is_written_for_collection_users(installed):
    collections, dummy = installed
    installed_at = os.path.join(collections, "ansible_collections", "homelab", "inference")
    with open(os.path.join(installed_at, "MANIFEST.json")) as handle:
        readme_path = json.load(handle)["collection_info"]["readme"]
    with open(os.path.join(installed_at, readme_path)) as handle:
        readme = handle.read()
    assert "ansible-playbook -i inventory homelab.inference.site" in readme
    assert "ansible-playbook -i inventory homelab.inference.gpu_mode -e mode=r1" in readme
    assert "make demo" not in readme and "make test" not in readme and "docs/lab.md" not in readme


def test_the_playbooks_come_from_the_installed_collection(user, installed):
    collections, dummy = installed
    listing = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "list", "homelab.inference",
                              "--format", "json"], capture_output=True, text=True, cwd=str(user["home"]),
                             env=user["env"])
    assert listing.returncode == 0, listing.stderr
    assert list(json.loads(listing.stdout)) == [os.path.join(collections, "ansible_collections")]


def test_site_renders_what_the_checkout_renders(user, tmp_path):
    ours = tmp_path / "checkout"
    # The same lab state: the same generated secrets, so the same Secret checksums.
    ansible_playbook("site.yml", "--tags", "render", "-e", "render_dir=%s" % ours,
                     env={"LAB_STATE_DIR": user["state_dir"]}, check=True)
    result = user["run"]("homelab.inference.site", "--tags", "render", "-e", "render_dir=rendered")
    assert result.returncode == 0, result.stdout[-3000:]
    theirs = user["home"] / "rendered"
    assert sorted(os.listdir(str(theirs))) == sorted(os.listdir(str(ours)))
    match, mismatch, errors = filecmp.cmpfiles(str(ours), str(theirs), os.listdir(str(ours)), shallow=False)
    assert (mismatch, errors) == ([], [])


def test_site_converges_the_lab_and_gpu_mode_switches_it(user):
    converge = user["run"]("homelab.inference.site", "--skip-tags", "verify")
    assert converge.returncode == 0, converge.stdout[-3000:]
    assert re.search(r"localhost\s+:\s+ok=\d+\s+changed=[1-9]", converge.stdout)
    switch = user["run"]("homelab.inference.gpu_mode", "-e", "mode=r1", callback="ansible.posix.json")
    assert switch.returncode == 0, switch.stdout[-3000:]
    report = json.loads(switch.stdout[switch.stdout.index("{"):])
    task = next(t for t in report["plays"][0]["tasks"] if t["task"]["name"].startswith("Switch the GPU to"))
    result = task["hosts"]["localhost"]
    assert (result["changed"], result["mode"], result["previous_mode"]) == (True, "r1", "ml")
    assert result["verified"]["vllm_models"] == ["vllm-r1"]
    assert result["verified"]["litellm"]["answered_by"] == "vllm-r1"
