# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``gpu-mode-exporter``: the GPU mode switches as Prometheus metrics
(_gpu_mode_metrics), served in the cluster by the role
homelab.inference.gpu_monitoring from the official Python image, this code
shipped as a ConfigMap: standard library only.

At each scrape it reads, as its ServiceAccount, the vLLM Deployment (the mode)
and the switch Events on it; nothing runs between scrapes. Its configuration
(JSON, from the role) names the Deployment, its container, the catalog's mode
table and the port."""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys
import threading
import urllib.parse

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode, _gpu_mode_metrics, _kube_incluster
from ansible_collections.homelab.inference.plugins.module_utils._kube_incluster import InClusterError

CONFIG = "/etc/gpu-mode-exporter/config.json"
ROLE = "homelab.inference.gpu_monitoring"
# The exporter's problems are the pod's: one error type, one line each.
ExporterError = InClusterError


class InClusterApi(_kube_incluster.InClusterApi):
    component = "the exporter"
    role = ROLE


def load(path):
    try:
        with open(path) as handle:
            config = json.load(handle)
    except (OSError, ValueError) as err:
        raise ExporterError("%s cannot be read as JSON (%s); re-run the role %s" % (path, err, ROLE))
    missing = [key for key in ("namespace", "deployment", "modes") if not config.get(key)]
    if missing:
        raise ExporterError("%s: needs %s; re-run the role %s" % (path, ", ".join(missing), ROLE))
    return config


class Exporter:
    def __init__(self, api, config):
        self.api = api
        self.config = config
        self.metrics = _gpu_mode_metrics.SwitchMetrics()
        self.lock = threading.Lock()

    def read(self, doing, path):
        return _kube_incluster.read_json(self.api, doing, path, "the role %s grants the exporter's rights" % ROLE)

    def collect(self):
        """The exposition text now; ExporterError when the API cannot be read."""
        namespace, name = self.config["namespace"], self.config["deployment"]
        renew = getattr(self.api, "renew_token", None)
        with self.lock:
            if renew:
                renew()
            deployment = self.read("reading Deployment %s/%s" % (namespace, name),
                                   "/apis/apps/v1/namespaces/%s/deployments/%s" % (namespace, name))
            selector = "involvedObject.kind=Deployment,involvedObject.name=%s,source=%s" % (
                name, _gpu_mode.EVENT_SOURCE)
            events = self.read("listing the Events of Deployment %s/%s" % (namespace, name),
                               "/api/v1/namespaces/%s/events?%s" % (
                                   namespace, urllib.parse.urlencode({"fieldSelector": selector})))
            self.metrics.observe((events or {}).get("items") or [])
            current = _gpu_mode.mode_of_deployment(deployment, self.config["modes"], self.config.get("container"))
            return _gpu_mode_metrics.render(self.metrics, list(self.config["modes"]), current)


class Handler(http.server.BaseHTTPRequestHandler):
    disable_nagle_algorithm = True   # each answer goes out at once, not after a delayed ACK
    server_version = "gpu-mode-exporter"

    def do_GET(self):
        if self.path.split("?")[0] in ("/healthz", "/"):
            self.answer(200, "ok\n", "text/plain; charset=utf-8")
            return
        if self.path.split("?")[0] != "/metrics":
            self.answer(404, "not found: the metrics are at /metrics\n", "text/plain; charset=utf-8")
            return
        try:
            self.answer(200, self.server.exporter.collect(), _gpu_mode_metrics.CONTENT_TYPE)
        except ExporterError as err:
            # Prometheus marks the target down (up 0); the line says why.
            self.log_message("%s", err)
            self.answer(503, "%s\n" % err, "text/plain; charset=utf-8")

    def answer(self, status, text, content_type):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(exporter, port, host=""):
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.exporter = exporter
    return server


def main(argv=None, api=None):
    parser = argparse.ArgumentParser(prog="gpu-mode-exporter", description="GPU mode switches as Prometheus "
                                     "metrics, from the Events on the vLLM Deployment.")
    parser.add_argument("--config", default=CONFIG, help="the configuration file (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
        exporter = Exporter(api or InClusterApi(), config)
    except ExporterError as err:
        sys.stderr.write("gpu-mode-exporter: %s\n" % err)
        return 2
    try:
        exporter.collect()  # the baseline: switches before the start are not counted
    except ExporterError as err:
        sys.stderr.write("gpu-mode-exporter: warning: %s; the first scrape takes the baseline\n" % err)
    # The pod's IP (the downward API's status.podIP), where the manifest gives it; else every address.
    server = serve(exporter, int(config.get("port", 9102)), os.environ.get("GPU_MODE_EXPORTER_HOST", ""))
    sys.stderr.write("gpu-mode-exporter: serving /metrics on port %s\n" % server.server_address[1])
    sys.stderr.flush()
    server.serve_forever()
    return 0
