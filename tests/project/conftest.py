"""Project-level tests: they import the lab and the test kit from tools/ (pyproject.toml's pytest
``pythonpath``), and need the checkout, not just the collection artifact."""

import os

import pytest

from testkit.gateway_rig import Upstreams

# The gateway tests start a fresh REAL LiteLLM proxy per test; fork them from one
# interpreter that has imported LiteLLM already (tools/lab/litellm_zygote.py): ~1 s per
# start instead of ~7 CPU seconds. The lab's LiteLLM pods still start the plain way.
os.environ.setdefault("LAB_LITELLM_FORK", "1")


@pytest.fixture(scope="module")
def upstreams():
    """The FAKE model servers and cloud providers a gateway test's REAL LiteLLM proxy calls, per module."""
    servers = Upstreams()
    yield servers
    servers.stop()
