# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``gpu-mode-switcher``: on-demand GPU modes inside the cluster, run from the official Python
image with this code shipped as a ConfigMap (standard library only).

The gateway asks it, for each request for a vLLM model, ``POST /v1/demand {"model": ...}``. It
answers from the catalog's policy (_gpu_on_demand): serve, switch (a switch to the model's mode
is started, or the one under way is joined: one switch however many requests), or refuse with
the reason and when to retry. The switch itself is gpu_mode's (_gpu_mode_run.execute): the same
Lease, drain, patch, wait and verification, recorded as an on-demand switch. A mode it entered
returns to the default after the policy's idle time without a demand for it."""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys
import threading
import time

from ansible_collections.homelab.inference.plugins.module_utils import (
    _gpu_mode, _gpu_mode_run, _gpu_on_demand, _kube_incluster)
from ansible_collections.homelab.inference.plugins.module_utils._kube_incluster import InClusterError
from ansible_collections.homelab.inference.plugins.module_utils._kube_rest import switch_endpoints

CONFIG = "/etc/gpu-mode-switcher/config.json"
ROLE = "homelab.inference.gpu_on_demand"
TICK_SECONDS = 10.0  # the idle return is checked at least this often
READ_TTL = 1.0  # seconds a read of the Deployment answers the requests that follow it


class SwitcherError(InClusterError):
    """A problem of the switcher's pod, its configuration or the API; one line naming the fix."""


class InClusterApi(_kube_incluster.InClusterApi):
    component = "the switcher"
    role = ROLE


class Switcher:
    """The on-demand rules over the cluster's state. ``read_deployment()`` gives the vLLM Deployment
    (or raises SwitcherError); ``run_switch(target, quiet)`` makes one whole switch, raising on failure."""

    def __init__(self, read_deployment, run_switch, policy, modes, default_mode, container="vllm",
                 clock=time.time, log=None, settle=_gpu_mode_run.DEFAULTS["drain_settle"]):
        self.read_deployment, self.run_switch = read_deployment, run_switch
        self.settle = settle    # the drain's settle time (see start())
        self.policy = _gpu_on_demand.effective(policy)
        self.modes, self.default_mode, self.container = modes, default_mode, container
        self.clock = clock
        self.log = log or (lambda line: None)
        self.lock = threading.Lock()
        self.started = clock()
        self.switching = None   # {"to": mode, "started": time} while a switch runs
        self.thread = None
        self.last_demand = {}   # mode -> the last time a request asked for its model
        self.failed = {}        # mode -> (time, one line) of the last failed switch to it
        self.took = {}          # mode -> seconds the last switch to it took
        self.switches = 0
        self.deployment, self.read_at = None, None

    def gpu_state(self):
        """The GPU now; the Deployment read at most once a second (every request asks), and again after
        each switch."""
        now = self.clock()
        if self.read_at is None or not 0 <= now - self.read_at < READ_TTL:
            self.deployment, self.read_at = self.read_deployment(), now
        deployment = self.deployment
        mode = _gpu_mode.mode_of_deployment(deployment, self.modes, self.container)
        source, by, at = _gpu_mode.mode_setter(deployment)
        return _gpu_on_demand.GpuState(mode, source, by, at.timestamp() if at else None,
                                       self.switching["to"] if self.switching else None)

    def demand(self, model, dry_run=False):
        """The answer to a request for ``model``: a dict for the gateway (see answer()). ``dry_run``: what a
        request would get, for a listing of the models; nothing is recorded or started."""
        with self.lock:
            now = self.clock()
            state = self.gpu_state()
            if not dry_run:
                for mode in _gpu_on_demand.serving_modes(model, self.modes):
                    self.last_demand[mode] = now
            decision = _gpu_on_demand.decide(self.policy, self.modes, self.default_mode, state, model, now)
            if decision.action == "switch" and self.switching is None:
                failed = self.failed.get(decision.target)
                wait = failed and failed[0] + self.policy["min_dwell_seconds"] - now
                if wait and wait > 0:  # a mode that failed to load is not tried again at every request
                    reason = "the last switch to mode '%s' failed %ds ago (%s)" % (
                        decision.target, now - failed[0], failed[1])
                    decision = decision._replace(action="refuse", retry_after=int(wait + 0.999), reason=reason)
                elif not dry_run:
                    self.start(decision.target, now, state.mode)
            return self.answer(decision, state, now)

    def answer(self, decision, state, now):
        switch = None
        if self.switching:
            elapsed = now - self.switching["started"]
            expected = self.took.get(self.switching["to"], self.policy["hold_seconds"])
            switch = {"to": self.switching["to"], "elapsed_seconds": round(elapsed, 1),
                      "expected_seconds": round(expected, 1)}
        retry_after = decision.retry_after
        if decision.action == "switch" and switch:
            retry_after = max(1, int(switch["expected_seconds"] - switch["elapsed_seconds"] + 0.999))
        return {"action": decision.action, "target": decision.target, "reason": decision.reason,
                "retry_after": retry_after, "mode": state.mode, "hold_seconds": self.policy["hold_seconds"],
                "reply": self.policy["reply"], "switch": switch}

    def start(self, target, now, mode=None):
        """Start the switch to ``target`` from ``mode``. Every request for a vLLM model asks here first, so
        when none asked for ``mode``'s models within the drain's settle time, none can still be on its way
        to vLLM: the drain then stops as soon as vLLM runs nothing (``quiet``)."""
        self.switching = {"to": target, "started": now}
        quiet = now - self.last_demand.get(mode, self.started) >= self.settle
        self.thread = threading.Thread(target=self._run, args=(target, quiet), name="switch-to-%s" % target,
                                       daemon=True)
        self.thread.start()

    def _run(self, target, quiet=False):
        began = self.switching["started"]  # when the demand started it, not when this thread got going
        self.log("switching to %s (on demand%s)" % (target, ", no request on the way" if quiet else ""))
        try:
            self.run_switch(target, quiet)
        except Exception as err:  # pylint: disable=broad-except  # any failure is reported, never kills the pod
            line = " ".join(str(err).split()) or type(err).__name__
            self.log("switch to %s failed: %s" % (target, line))
            with self.lock:
                self.failed[target] = (self.clock(), line)
        else:
            with self.lock:
                self.took[target] = self.clock() - began
                self.failed.pop(target, None)
            self.log("switched to %s in %.1f s" % (target, self.clock() - began))
        finally:
            with self.lock:
                self.switching = None
                self.switches += 1
                self.read_at = None

    def tick(self):
        """The idle return: start it when due; the seconds until the next check."""
        with self.lock:
            now = self.clock()
            if self.switching:
                return TICK_SECONDS
            state = self.gpu_state()
            last = max(self.last_demand.get(state.mode, self.started), self.started)
            wait = _gpu_on_demand.idle_return(self.policy, self.default_mode, state, last, now)
            if wait == 0:
                self.log("mode %s unused for %ds: back to %s" % (state.mode, now - last, self.default_mode))
                self.start(self.default_mode, now, state.mode)
                return TICK_SECONDS
            return TICK_SECONDS if wait is None else min(TICK_SECONDS, max(wait, 0.5))

    def status(self):
        with self.lock:
            state = self.gpu_state()
            return {"mode": state.mode, "source": state.source, "by": state.by, "since": state.since,
                    "switching": dict(self.switching) if self.switching else None, "switches": self.switches,
                    "failed": {mode: {"at": at, "error": line} for mode, (at, line) in self.failed.items()},
                    "policy": self.policy}


class Handler(http.server.BaseHTTPRequestHandler):
    disable_nagle_algorithm = True   # each answer goes out at once, not after a delayed ACK
    server_version = "gpu-mode-switcher"

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in ("/healthz", "/"):
            return self.answer(200, {"status": "ok"})
        if path == "/v1/state":
            return self.call(self.server.switcher.status)
        return self.answer(404, {"error": "not found: POST /v1/demand, GET /v1/state, GET /healthz"})

    def do_POST(self):
        if self.path.split("?")[0] != "/v1/demand":
            return self.answer(404, {"error": "not found: POST /v1/demand, GET /v1/state, GET /healthz"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            body = None
        if (not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]
                or not isinstance(body.get("dry_run", False), bool)):
            return self.answer(400, {"error": 'the body must be JSON {"model": "<a model name>"} (and "dry_run": '
                                              'true to ask what a request would get)'})
        return self.call(self.server.switcher.demand, body["model"], body.get("dry_run", False))

    def call(self, method, *args):
        try:
            return self.answer(200, method(*args))
        except InClusterError as err:  # the gateway then answers as it would without the switcher
            self.log_message("%s", err)
            return self.answer(503, {"error": str(err)})

    def answer(self, status, body):
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(switcher, port, host=""):
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.switcher = switcher
    return server


# -- in the cluster -------------------------------------------------------------------

def load(path):
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as err:
        raise SwitcherError("%s cannot be read as JSON (%s); re-run the role %s" % (path, err, ROLE))
    missing = [key for key in ("params", "policy", "default_mode") if not config.get(key)]
    if missing:
        raise SwitcherError("%s: needs %s; re-run the role %s" % (path, ", ".join(missing), ROLE))
    params = dict(_gpu_mode_run.DEFAULTS, vllm_url=None, litellm_url=None, lock_duration=None,
                  litellm_api_key=None, mode=config["default_mode"])
    params.update(config["params"])
    found = _gpu_mode_run.problems(params) + _gpu_on_demand.policy_errors(
        config["policy"], params["modes"], config["default_mode"])
    if found:
        raise SwitcherError("%s: %s; re-run the role %s" % (path, "; ".join(found), ROLE))
    key_file = config.get("litellm_api_key_file")
    if key_file:
        try:
            with open(key_file) as handle:
                params["litellm_api_key"] = handle.readline().strip() or None
        except OSError as err:
            raise SwitcherError("%s cannot be read (%s); the role %s mounts the gateway key there"
                                % (key_file, err.strerror or err, ROLE))
    config["params"] = _gpu_mode_run.with_lock_duration(params)
    return config


def in_cluster(api, config, log):
    """The Switcher of the cluster: the Deployment read, and the switch made, as its ServiceAccount."""
    params = config["params"]

    def read_deployment():
        api.renew_token()
        where = "Deployment %s/%s" % (params["namespace"], params["deployment"])
        deployment = _kube_incluster.read_json(
            api, "reading " + where, "/apis/apps/v1/namespaces/%s/deployments/%s" % (
                params["namespace"], params["deployment"]), "the role %s grants the switcher's rights" % ROLE)
        if deployment is None:
            raise SwitcherError("%s not found: run site.yml first (role homelab.inference.vllm)" % where)
        return deployment

    vllm, litellm, vllm_pod = switch_endpoints(api, params, ROLE)

    def run_switch(target, quiet):
        api.renew_token()
        switch = dict(params, mode=target, drain_settle=0 if quiet else params["drain_settle"])
        result = _gpu_mode_run.execute(api, switch, vllm, litellm, vllm_pod, False,
                                       lambda warning: log("warning: %s" % warning), source=_gpu_mode.ON_DEMAND,
                                       host=os.environ.get("POD_NAME"))
        log(_gpu_mode_run.summary(result))

    return Switcher(read_deployment, run_switch, config["policy"], params["modes"], config["default_mode"],
                    params["container"], log=log, settle=params["drain_settle"])


def main(argv=None, api=None):
    parser = argparse.ArgumentParser(prog="gpu-mode-switcher", description="On-demand GPU modes: a request for a "
                                     "model of another mode switches the GPU, as the catalog's policy allows.")
    parser.add_argument("--config", default=CONFIG, help="the configuration file (default %(default)s)")
    args = parser.parse_args(argv)

    def log(line):
        sys.stderr.write("gpu-mode-switcher: %s\n" % line)
        sys.stderr.flush()
    try:
        config = load(args.config)
        switcher = in_cluster(api or InClusterApi(), config, log)
    except InClusterError as err:
        log(str(err))
        return 2
    server = serve(switcher, int(config.get("port", 9103)), config.get("host", ""))
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log("serving on port %s" % server.server_address[1])
    while True:
        try:
            time.sleep(switcher.tick())
        except InClusterError as err:
            log("idle check: %s" % err)
            time.sleep(TICK_SECONDS)
