"""Project-level tests: they import the lab and the test kit from tools/ (pyproject.toml's pytest
``pythonpath``), and need the checkout, not just the collection artifact."""

import os

import pytest

from testkit.gateway_rig import Upstreams

# The gateway tests start a fresh REAL LiteLLM proxy per test; fork them from one
# interpreter that has imported LiteLLM already (tools/lab/litellm_zygote.py): ~1 s per
# start instead of ~7 CPU seconds. The lab's LiteLLM pods still start the plain way.
os.environ.setdefault("LAB_LITELLM_FORK", "1")

# `make test` hands these files to two xdist workers a file at a time (--dist loadfile,
# --no-loadscope-reorder). xdist's own order puts the files with the most tests first, which
# left the few that converge a lab in a module fixture (minutes each) for last, where one of
# them could run alone at the end. The costliest start first instead; the seconds are a
# `make test` run's (setup plus calls, two workers beside the molecule lab scenario).
COSTLIEST_FIRST = {
    "test_gpu_mode_rbac.py": 640, "test_gpu_on_demand_lab.py": 520, "test_gpu_mode_reboot.py": 380,
    "test_gpu_monitoring.py": 370, "test_render.py": 300, "test_galaxy_user.py": 180,
    "test_gateway_timing.py": 150, "test_gpu_mode_warm.py": 140, "test_gateway_client_keys.py": 140,
    "test_gateway_quotas.py": 140,
}


def pytest_collection_modifyitems(items):
    # A stable sort: each file's tests stay together and in their order.
    items.sort(key=lambda item: -COSTLIEST_FIRST.get(item.path.name, 0))


@pytest.fixture(scope="module")
def upstreams():
    """The FAKE model servers and cloud providers a gateway test's REAL LiteLLM proxy calls, per module."""
    servers = Upstreams()
    yield servers
    servers.stop()
