"""The gateway hook fails loudly and early: the REAL LiteLLM proxy, started on the
rendered config with the hook's settings file missing or invalid, refuses to
start, and its log names the file. (Without the file there would be no health
probes, quotas or key check: starting anyway would hide that.)"""

from __future__ import annotations

import os
import shutil

import pytest

from testkit.gateway_rig import Gateway, Upstreams, render_gateway

SETTINGS = "inference_gateway.json"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    upstreams = Upstreams()
    try:
        yield render_gateway(tmp_path_factory.mktemp("gateway-settings"), upstreams)
    finally:
        upstreams.stop()


@pytest.fixture(params=["fork", "plain"])
def start_mode(request, monkeypatch):
    """Both ways the lab starts a proxy: forked from a zygote (the tests) and as a process (the lab's pods)."""
    monkeypatch.setenv("LAB_LITELLM_FORK", "1" if request.param == "fork" else "0")
    return request.param


def broken_copy(rendered, target, content):
    config_dir, env, _ = rendered
    shutil.copytree(config_dir, str(target), ignore=shutil.ignore_patterns("litellm.log"))
    path = os.path.join(str(target), SETTINGS)
    os.remove(path)
    if content is not None:
        with open(path, "w") as handle:
            handle.write(content)
    return str(target), env, path


@pytest.mark.parametrize("content, why", [(None, "is missing"), ("{not json", "is not valid JSON"),
                                          ('{"models": []}', "is invalid")],
                         ids=["missing", "not-json", "wrong-shape"])
def test_the_proxy_refuses_to_start_naming_the_settings_file(rendered, tmp_path, start_mode, content, why):
    config_dir, env, path = broken_copy(rendered, tmp_path / "etc-litellm", content)
    gateway = Gateway(config_dir, env)
    try:
        with pytest.raises(RuntimeError) as raised:
            gateway.proxy.start(timeout=60)
    finally:
        gateway.stop()
    assert "exited" in str(raised.value), "it failed at start, not by a timeout: %s" % raised.value
    log = gateway.proxy.log_tail(400)
    assert "settings file %s %s" % (path, why) in log, log[-3000:]
