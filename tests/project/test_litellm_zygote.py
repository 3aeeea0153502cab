"""The forked LiteLLM proxies the tests use behave like ones started by the `litellm` script."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from lab import ROOT, TOOLS, litellm_zygote
from lab.litellm_proxy import LiteLLMProxy
from testkit.gateway_rig import free_port



@pytest.mark.parametrize("fork", ["1", "0"], ids=["forked", "litellm-script"])
def test_a_proxy_whose_config_is_broken_exits_with_its_error_in_the_log(tmp_path, monkeypatch, fork):
    monkeypatch.setenv("LAB_LITELLM_FORK", fork)
    (tmp_path / "config.yaml").write_text("model_list: [\n")  # not YAML
    proxy = LiteLLMProxy(tmp_path, free_port())
    with pytest.raises(RuntimeError, match="litellm exited with [1-9]"):
        proxy.start(timeout=60)
    assert "yaml" in proxy.log_tail(200).lower()


def test_only_runtime_settings_may_differ_between_proxies_of_one_zygote():
    env = dict(os.environ, LITELLM_MASTER_KEY="sk-a", REDIS_HOST="127.0.0.1", HF_HUB_OFFLINE="1")
    assert litellm_zygote.import_env(env) == litellm_zygote.import_env(dict(env, LITELLM_MASTER_KEY="sk-b"))
    assert litellm_zygote.import_env(env) != litellm_zygote.import_env(dict(env, HF_HUB_OFFLINE="0"))
    # pytest's marker of the test under way differs for every test: it must not start a zygote per test.
    assert litellm_zygote.import_env(dict(env, PYTEST_CURRENT_TEST="a.py::one (setup)")) == \
        litellm_zygote.import_env(dict(env, PYTEST_CURRENT_TEST="b.py::two (call)"))


def test_a_zygote_whose_parent_is_gone_exits_at_once(tmp_path):
    """Even when the LiteLLM it imported keeps threads alive (the cost map fetch does)."""
    parent = subprocess.run(
        [sys.executable, "-c", "import subprocess, sys\n"
         "zygote = subprocess.Popen([sys.executable, '-m', 'lab.litellm_zygote', sys.argv[1]],\n"
         "                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
         "assert zygote.stdout.readline() == b'ready\\n'\n"
         "print(zygote.pid)\n", str(tmp_path / "socket")],
        cwd=ROOT, env=dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="False", PYTHONPATH=TOOLS), capture_output=True, text=True,
        check=True, timeout=120)
    pid = int(parent.stdout)
    deadline = time.monotonic() + 5  # the cost map fetch alone retries for ~7 s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    raise AssertionError("the zygote outlived its parent")
