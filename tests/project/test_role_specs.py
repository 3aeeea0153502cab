"""Argument specs are the roles' contract: every role has one, defaults never
drift from it, variables carry the role's prefix, and the generated docs are
current."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT

ROLES = sorted(os.listdir(os.path.join(ROOT, "roles")))


def load(*parts):
    path = os.path.join(ROOT, *parts)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize("role", ROLES)
def test_role_has_an_argument_spec(role):
    specs = load("roles", role, "meta", "argument_specs.yml")
    assert specs and specs["argument_specs"]["main"]["short_description"]


# Roles whose defaults are one whole example (the catalog's: a hundred lines of models and modes), which the
# spec documents by reference instead of repeating it as each option's default.
EXAMPLE_DEFAULTS = {"catalog"}


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_spec_agree(role):
    main = load("roles", role, "meta", "argument_specs.yml")["argument_specs"]["main"]
    options = main.get("options", {})
    defaults = load("roles", role, "defaults", "main.yml") or {}
    if role in EXAMPLE_DEFAULTS:
        assert sorted(defaults) == sorted(options)
        assert not any("default" in spec or spec.get("required") for spec in options.values())
        assert "defaults/main.yml" in " ".join(main["description"])
        return
    with_default = {name: spec["default"] for name, spec in options.items() if "default" in spec}
    assert defaults == with_default
    for name, spec in options.items():
        assert "description" in spec, "%s: %s has no description" % (role, name)
        assert spec.get("required") or "default" in spec, "%s: %s is neither required nor defaulted" % (role, name)


@pytest.mark.parametrize("role", ROLES)
def test_role_variables_carry_the_role_prefix(role):
    options = load("roles", role, "meta", "argument_specs.yml")["argument_specs"]["main"].get("options", {})
    # The catalog role validates the shared catalog, named for the collection.
    prefix = "inference_" if role == "catalog" else role + "_"
    assert all(name.startswith(prefix) for name in options), sorted(options)


def test_generated_docs_are_current():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
