"""gpu-mode-switcher: one switch however many requests, its answers, its failures, the idle return
and its HTTP face, against a stub Deployment and a stub switch (the switch itself is gpu_mode's,
tested in test_gpu_switch.py)."""

from __future__ import annotations

import datetime
import http.client
import json
import threading

import pytest

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from ansible_collections.homelab.inference.plugins.module_utils import _gpu_on_demand_switcher as sw
from ansible_collections.homelab.inference.tests.unit.plugins import stdlib_closure
from ansible_collections.homelab.inference.tests.unit.plugins.gpu_switch_stubs import TABLE

ON = {"enabled": True}


class Cluster:
    """The vLLM Deployment as the switch leaves it; a switch blocks until released (a model loading)."""

    def __init__(self, clock, mode="ml", source=None, at=0.0):
        self.clock = clock
        self.mode, self.source, self.at = mode, source, at
        self.reads, self.runs, self.quiet = 0, [], []
        self.release, self.fail = threading.Event(), None

    def read_deployment(self):
        self.reads += 1
        annotations = {}
        if self.source:
            stamp = datetime.datetime.fromtimestamp(self.at, datetime.timezone.utc)
            annotations[_gpu_mode.SETTER_ANNOTATION] = _gpu_mode.setter_annotation(self.source, "x@y/1", stamp)
        return {"metadata": {"labels": {_gpu_mode.MODE_LABEL: self.mode}, "annotations": annotations},
                "spec": {"replicas": 1 if TABLE[self.mode]["vllm_model"] else 0,
                         "template": {"spec": {"containers": [{"name": "vllm", "args": TABLE[self.mode]["args"]}]}}}}

    def run_switch(self, target, quiet):
        self.runs.append(target)
        self.quiet.append(quiet)
        assert self.release.wait(10), "the test never let the switch finish"
        if self.fail:
            raise RuntimeError(self.fail)
        self.mode, self.source, self.at = target, _gpu_mode.ON_DEMAND, self.clock()


class Clock:
    def __init__(self):
        self.now = 100000.0

    def __call__(self):
        return self.now


@pytest.fixture
def rig():
    clock = Clock()
    cluster = Cluster(clock)
    switcher = sw.Switcher(cluster.read_deployment, cluster.run_switch, ON, TABLE, "ml", clock=clock)
    return clock, cluster, switcher


def finish(cluster, switcher):
    cluster.release.set()
    switcher.thread.join(5)
    assert not switcher.thread.is_alive()


def test_twenty_concurrent_requests_share_one_switch(rig):
    clock, cluster, switcher = rig
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(switcher.demand("vllm-r1"))) for dummy in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(answers) == 20 and {a["action"] for a in answers} == {"switch"}
    assert {a["target"] for a in answers} == {"r1"} and all(a["switch"]["to"] == "r1" for a in answers)
    finish(cluster, switcher)
    assert cluster.runs == ["r1"] and switcher.switches == 1
    assert switcher.demand("vllm-r1")["action"] == "serve"


def test_the_drain_settles_only_when_the_mode_left_was_asked_for_within_the_settle_time(rig):
    clock, cluster, switcher = rig
    clock.now += 3  # the switcher's first seconds: it cannot know what is on its way yet
    switcher.demand("vllm-qwen")
    clock.now += 2.9
    switcher.demand("vllm-r1")
    finish(cluster, switcher)
    clock.now += 400
    switcher.read_at, cluster.release = None, threading.Event()
    switcher.demand("vllm-qwen")
    finish(cluster, switcher)
    assert cluster.runs == ["r1", "ml"] and cluster.quiet == [False, True]


def test_a_request_during_the_switch_is_told_how_long_is_left(rig):
    clock, cluster, switcher = rig
    switcher.demand("vllm-r1")
    clock.now += 40
    answer = switcher.demand("vllm-r1")
    assert answer["switch"] == {"to": "r1", "elapsed_seconds": 40.0, "expected_seconds": 180.0}
    assert answer["retry_after"] == 140 and answer["hold_seconds"] == 180 and answer["reply"] == "hold"
    clock.now += 50
    finish(cluster, switcher)
    # The next switch to r1 is expected to take as long as the last one did.
    cluster.mode, cluster.source, switcher.read_at, cluster.release = "ml", None, None, threading.Event()
    switcher.demand("vllm-r1")
    clock.now += 10
    assert switcher.demand("vllm-r1")["switch"]["expected_seconds"] == 90.0
    finish(cluster, switcher)


def test_a_dry_run_says_what_a_request_would_get_and_changes_nothing(rig):
    clock, cluster, switcher = rig
    answer = switcher.demand("vllm-r1", dry_run=True)
    assert (answer["action"], answer["target"], answer["switch"]) == ("switch", "r1", None)
    assert switcher.switching is None and switcher.last_demand == {} and cluster.runs == []


def test_the_deployment_is_read_at_most_once_a_second(rig):
    clock, cluster, switcher = rig
    for dummy in range(5):
        switcher.demand("vllm-qwen")
    assert cluster.reads == 1
    clock.now += 1.0
    switcher.demand("vllm-qwen")
    assert cluster.reads == 2


def test_a_refusal_says_why_and_when(rig):
    clock, cluster, switcher = rig
    cluster.mode, cluster.source = "gaming", _gpu_mode.OPERATOR
    answer = switcher.demand("vllm-r1")
    assert answer == {"action": "refuse", "target": "r1", "mode": "gaming", "retry_after": None, "switch": None,
                      "reason": "GPU in gaming mode; on-demand switching is off for gaming", "hold_seconds": 180,
                      "reply": "hold"}
    assert cluster.runs == []


def test_a_failed_switch_is_not_tried_again_at_every_request(rig):
    clock, cluster, switcher = rig
    cluster.fail = "switch to r1 failed: vLLM exited (OOMKilled); rolled back to ml (verified)"
    switcher.demand("vllm-r1")
    finish(cluster, switcher)
    clock.now += 20
    answer = switcher.demand("vllm-r1")
    assert answer["action"] == "refuse" and answer["retry_after"] == 280
    assert answer["reason"] == ("the last switch to mode 'r1' failed 20s ago (switch to r1 failed: vLLM exited "
                                "(OOMKilled); rolled back to ml (verified))")
    clock.now += 280
    cluster.fail, cluster.release = None, threading.Event()
    assert switcher.demand("vllm-r1")["action"] == "switch"
    finish(cluster, switcher)
    assert cluster.runs == ["r1", "r1"] and switcher.status()["failed"] == {}


def test_a_mode_entered_on_demand_returns_to_the_default_when_unused(rig):
    clock, cluster, switcher = rig
    switcher.demand("vllm-r1")
    finish(cluster, switcher)
    assert switcher.tick() == sw.TICK_SECONDS  # just entered: nothing to do
    clock.now += 600
    switcher.demand("vllm-r1")  # still in use
    clock.now += 899
    switcher.read_at = None
    assert switcher.tick() == 1
    clock.now += 1
    cluster.release = threading.Event()
    assert switcher.tick() == sw.TICK_SECONDS and switcher.switching == {"to": "ml", "started": clock.now}
    finish(cluster, switcher)
    assert cluster.runs == ["r1", "ml"]


def test_a_restarted_switcher_counts_idle_time_from_its_start(rig):
    clock, cluster, dummy = rig
    cluster.mode, cluster.source, cluster.at = "r1", _gpu_mode.ON_DEMAND, clock.now - 5000
    switcher = sw.Switcher(cluster.read_deployment, cluster.run_switch, ON, TABLE, "ml", clock=clock)
    assert switcher.tick() == sw.TICK_SECONDS and switcher.switching is None


def test_an_operators_mode_never_returns_by_itself(rig):
    clock, cluster, switcher = rig
    cluster.mode, cluster.source, cluster.at = "r1", _gpu_mode.OPERATOR, clock.now - 5000
    clock.now += 5000
    assert switcher.tick() == sw.TICK_SECONDS and switcher.switching is None


def request(server, method, path, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_the_http_face(rig):
    clock, cluster, switcher = rig
    server = sw.serve(switcher, 0, "127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert request(server, "GET", "/healthz") == (200, {"status": "ok"})
        status, answer = request(server, "POST", "/v1/demand", json.dumps({"model": "vllm-qwen"}))
        assert status == 200 and answer["action"] == "serve" and answer["mode"] == "ml"
        assert request(server, "POST", "/v1/demand", "{") == (
            400, {"error": 'the body must be JSON {"model": "<a model name>"} (and "dry_run": true to ask what a '
                           'request would get)'})
        status, state = request(server, "GET", "/v1/state")
        assert status == 200 and (state["mode"], state["source"], state["switching"]) == ("ml", "install", None)

        def down():
            raise sw.SwitcherError("reading Deployment ml/vllm-server: 403 forbidden; the role "
                                   "homelab.inference.gpu_on_demand grants the switcher's rights")
        switcher.read_deployment, switcher.read_at = down, None
        status, answer = request(server, "POST", "/v1/demand", json.dumps({"model": "vllm-r1"}))
        assert status == 503 and answer["error"].startswith("reading Deployment ml/vllm-server: 403")
    finally:
        server.shutdown()
        server.server_close()


def test_the_configuration_is_checked_as_the_preflight_checks_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"params": {"modes": TABLE}, "default_mode": "ml",
                                "policy": {"enabled": True, "modes": ["turbo"]}}))
    with pytest.raises(sw.SwitcherError) as raised:
        sw.load(str(path))
    assert str(raised.value) == (
        "%s: inference_gpu_on_demand.modes[0]: 'turbo' is not a mode in inference_gpu_modes; use one of gaming, ml, "
        "r1; re-run the role homelab.inference.gpu_on_demand" % path)
    path.write_text(json.dumps({"params": {"modes": TABLE}}))
    with pytest.raises(sw.SwitcherError) as raised:
        sw.load(str(path))
    assert str(raised.value).endswith("needs policy, default_mode; re-run the role homelab.inference.gpu_on_demand")


# What the official Python image gets: the switcher and gpu_mode's own switch, standard library only.
SHIPPED = ["_api_errors.py", "_catalog.py", "_gpu_mode.py", "_gpu_mode_rights.py", "_gpu_mode_run.py",
           "_gpu_on_demand.py", "_gpu_on_demand_switcher.py", "_gpu_switch.py", "_kube_calls.py",
           "_kube_incluster.py", "_kube_rest.py", "_service_endpoint.py"]


def test_the_switcher_runs_on_the_standard_library_alone(tmp_path):
    assert stdlib_closure.foreign_imports(tmp_path, SHIPPED, "_gpu_on_demand_switcher") == (0, "", "[]")
