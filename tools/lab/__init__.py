"""The local lab: a stand-in for a k3s cluster with one GPU worker (see docs/lab.md).

Development tooling, not part of the collection: ``python -m lab`` with ``tools/`` on the
Python path (``. scripts/env.sh``, the Makefile and pyproject.toml's pytest settings put it there)."""

import os

# The folder the lab and the test kit are imported from, and the checkout around it.
TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TOOLS)
