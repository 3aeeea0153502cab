"""FAKE NVIDIA dcgm-exporter (image nvcr.io/nvidia/k8s/dcgm-exporter), after release
4.5.3-4.8.2 (github.com/NVIDIA/dcgm-exporter at that tag), for the lab's GPU.

- Command line and environment as pkg/cmd/app.go: ``-f/--collectors``
  (DCGM_EXPORTER_COLLECTORS, default /etc/dcgm-exporter/default-counters.csv),
  ``-a/--address`` (DCGM_EXPORTER_LISTEN, ``:9400``), ``-c/--collect-interval``
  in ms (DCGM_EXPORTER_INTERVAL, 30000), ``-k/--kubernetes``
  (DCGM_EXPORTER_KUBERNETES), ``-o/--use-old-namespace``, ``-n/--no-hostname``,
  ``--kubernetes-enable-pod-uid``, ``--pod-resources-kubelet-socket``; other
  flags are accepted and mean nothing here.
- Start: DCGM's embedded host engine needs the driver (NVML), which only the
  NVIDIA runtime puts into a container. Without it the exporter logs
  ``error starting nv-hostengine: DCGM initialization error`` and exits 1
  (internal/pkg/dcgmprovider/dcgm.go; go-dcgm pkg/dcgm/admin.go startEmbedded).
  The lab hands the FAKE its GPU (``LAB_GPU_STATE``, the file the lab keeps
  current) only in a pod with ``runtimeClassName: nvidia`` on the GPU node.
- ``/metrics`` (internal/pkg/rendermetrics/render_metrics.go): per counter
  ``# HELP``, ``# TYPE`` and one line per GPU with the labels gpu, UUID (uuid
  with -o), pci_bus_id, device, modelName, Hostname (NODE_NAME, else the host
  name; not with -n), then the label counters (DCGM_FI_DRIVER_VERSION) and, with
  Kubernetes mapping on and the kubelet's pod-resources socket mounted, the pod
  holding the GPU as pod, namespace, container (pod_name, pod_namespace,
  container_name with -o; pod_uid with --kubernetes-enable-pod-uid:
  internal/pkg/transformation/kubernetes.go). Counters in field-ID order, as the
  template ranges over them. ``/health`` answers ``OK``.
- Values are DCGM's latest samples, taken every collect interval: the FAKE reads
  the lab's GPU state at most once per interval, at a scrape.

Only the counters the lab's state backs are served: DCGM_FI_DEV_FB_USED (what
the card's processes hold, as the FAKE nvidia-smi reports), DCGM_FI_DEV_FB_FREE
(the rest of the card's memory) and DCGM_FI_DEV_GPU_UTIL: 100 while a vLLM on
the GPU is running a request (its ``vllm:num_requests_running`` gauge, asked at
the sample), else 0 - a decode keeps the GPU's kernels busy, an idle server
does not; a sampled state, not DCGM's average over the period. The default
counters' other lines (clocks, temperature, power, energy, copy and codec
utilisation, XID, PCIe, NVLink, remapped rows, profiling) have no figure in the
lab and are left out, as the exporter leaves out a field the GPU does not
report.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import http.client
import io
import json
import os
import socket
import sys
import threading
import time

from lab.fakes.http import FakeHandler, FakeServer

VERSION = "4.5.3-4.8.2"
DEFAULT_COUNTERS = "/etc/dcgm-exporter/default-counters.csv"
# The counters files the image ships (Dockerfile: COPY etc /etc/dcgm-exporter) that hold the same lines
# for the fields below.
IMAGE_FILES = (DEFAULT_COUNTERS, "/etc/dcgm-exporter/dcp-metrics-included.csv")
SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
# DCGM field IDs (go-dcgm pkg/dcgm/const_fields.go) of what the lab can back.
FIELDS = {"DCGM_FI_DRIVER_VERSION": 1, "DCGM_FI_DEV_GPU_UTIL": 203, "DCGM_FI_DEV_FB_FREE": 251,
          "DCGM_FI_DEV_FB_USED": 252}
# Their lines in etc/default-counters.csv at 4.5.3-4.8.2 (help texts as the exporter prints them).
DEFAULT_LINES = """DCGM_FI_DEV_GPU_UTIL, gauge, GPU utilization (in %).
DCGM_FI_DEV_FB_FREE, gauge, Framebuffer memory free (in MiB).
DCGM_FI_DEV_FB_USED, gauge, Framebuffer memory used (in MiB).
DCGM_FI_DRIVER_VERSION, label, Driver Version
"""
INDEX = b"""<html>
\t\t\t<head><title>GPU Exporter</title></head>
\t\t\t<body>
\t\t\t<h1>GPU Exporter</h1>
\t\t\t<p><a href="./metrics">Metrics</a></p>
\t\t\t<p><a href="./health">Health</a></p>
\t\t\t</body>
\t\t\t</html>"""


def log(level, message, **attrs):
    """log/slog's text handler on stderr, as the exporter configures it (--log-format text)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    extra = "".join(" %s=%s" % (k, json.dumps(v) if " " in str(v) else v) for k, v in attrs.items())
    print("time=%s level=%s msg=%s%s" % (stamp, level, json.dumps(message), extra), file=sys.stderr, flush=True)


def parse(argv):
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="dcgm-exporter", allow_abbrev=False)
    parser.add_argument("-f", "--collectors", default=env("DCGM_EXPORTER_COLLECTORS", DEFAULT_COUNTERS))
    parser.add_argument("-a", "--address", default=env("DCGM_EXPORTER_LISTEN", ":9400"))
    parser.add_argument("-c", "--collect-interval", type=int, default=int(env("DCGM_EXPORTER_INTERVAL", "30000")))
    parser.add_argument("-k", "--kubernetes", action="store_true", default=_true(env("DCGM_EXPORTER_KUBERNETES")))
    parser.add_argument("-o", "--use-old-namespace", action="store_true",
                        default=_true(env("DCGM_EXPORTER_USE_OLD_NAMESPACE")))
    parser.add_argument("-n", "--no-hostname", action="store_true", default=_true(env("DCGM_EXPORTER_NO_HOSTNAME")))
    parser.add_argument("--kubernetes-enable-pod-uid", action="store_true",
                        default=_true(env("DCGM_EXPORTER_KUBERNETES_ENABLE_POD_UID")))
    parser.add_argument("--pod-resources-kubelet-socket", default=env("DCGM_POD_RESOURCES_KUBELET_SOCKET", SOCKET))
    args, _ignored = parser.parse_known_args(argv)
    return args


def _true(value):
    return (value or "").lower() in ("1", "t", "true")


def counters(path):
    """(metric counters, label counters) of a collectors file: (name, type, help), the fields the lab backs."""
    if path in IMAGE_FILES and not os.path.exists(path):
        text = DEFAULT_LINES  # the image's own file (a mounted one takes its place)
    else:
        with open(path) as handle:
            text = handle.read()
    rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(text))
            if row and not row[0].lstrip().startswith("#")]
    backed = sorted((r for r in rows if len(r) == 3 and r[0] in FIELDS), key=lambda r: FIELDS[r[0]])
    return [r for r in backed if r[1] != "label"], [r for r in backed if r[1] == "label"]


class Sampler:
    """DCGM's latest values: read from the lab's GPU state at most once per collect interval."""

    def __init__(self, state_file, interval_ms):
        self.state_file, self.interval = state_file, max(interval_ms, 1) / 1000.0
        self.lock = threading.Lock()
        self.taken, self.card = None, None

    def sample(self):
        with self.lock:
            if self.taken is None or time.monotonic() - self.taken >= self.interval:
                with open(self.state_file) as handle:
                    card = json.load(handle)["gpus"][0]
                card["util"] = 100 if any(running(p.get("serves")) for p in card["processes"]) else 0
                self.card, self.taken = card, time.monotonic()
            return self.card


def running(endpoint):
    """Requests a vLLM is running now, by its own gauge (0 when it does not answer: loading or gone)."""
    if not endpoint:
        return 0
    host, _, port = endpoint.rpartition(":")
    try:
        connection = http.client.HTTPConnection(host, int(port), timeout=1)
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode("utf-8", "replace")
        connection.close()
    except (OSError, http.client.HTTPException):
        return 0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:num_requests_running"))


def render(card, metric_counters, label_counters, options, hostname):
    uuid_label = "uuid" if options.use_old_namespace else "UUID"
    labels = '%s="%s",pci_bus_id="%s",device="nvidia%d",modelName="%s"' % (
        uuid_label, card["uuid"], card["pci_bus_id"], card["index"], card["name"])
    labels = 'gpu="%d",%s' % (card["index"], labels)
    if hostname:
        labels += ',Hostname="%s"' % hostname
    extra = {name: card["driver_version"] for name, _, _ in label_counters if name == "DCGM_FI_DRIVER_VERSION"}
    if options.pod:
        pod = card["pods"][-1] if card["pods"] else None
        if pod:
            names = ("pod_name", "pod_namespace", "container_name") if options.use_old_namespace else (
                "pod", "namespace", "container")
            extra.update(zip(names, (pod["name"], pod["namespace"], pod["container"])))
            if options.kubernetes_enable_pod_uid:
                extra["pod_uid"] = pod["uid"]
    labels += "".join(',%s="%s"' % item for item in sorted(extra.items()))
    values = {"DCGM_FI_DEV_FB_USED": card["memory_used_mib"],
              "DCGM_FI_DEV_FB_FREE": card["memory_total_mib"] - card["memory_used_mib"],
              "DCGM_FI_DEV_GPU_UTIL": card["util"]}
    return "".join("# HELP %s %s\n# TYPE %s %s\n%s{%s} %d\n" % (name, help_, name, kind, name, labels, values[name])
                   for name, kind, help_ in metric_counters)


class Handler(FakeHandler):
    server_version = "Go-http-client"

    def do_GET(self):
        headers = {"X-Content-Type-Options": "nosniff", "Date": self.date_time_string()}
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            server = self.server
            body = render(server.sampler.sample(), server.metric_counters, server.label_counters, server.options,
                          server.hostname)
            return self.send_body(200, body, "text/plain; charset=utf-8", headers)
        if path == "/health":
            return self.send_body(200, "OK", "text/plain; charset=utf-8", dict(headers, **{
                "X-Registry-Available": "true"}))
        if path == "/":
            return self.send_body(200, INDEX, "text/html; charset=utf-8", headers)
        return self.send_body(404, "404 page not found\n", "text/plain; charset=utf-8", headers)

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET


def main(argv=None):
    options = parse(sys.argv[1:] if argv is None else argv)
    log("INFO", "Starting dcgm-exporter", Version=VERSION)
    try:
        metric_counters, label_counters = counters(options.collectors)
    except OSError as err:
        log("ERROR", "Could not read metrics file '%s'; err: %s" % (options.collectors, err))
        return 1
    log("INFO", "Attempting to initialize DCGM.")
    state = os.environ.get("LAB_GPU_STATE")
    visible = os.environ.get("NVIDIA_VISIBLE_DEVICES", "") not in ("", "void", "none")
    if not state or not visible or not os.path.exists(state):
        log("ERROR", "error starting nv-hostengine: DCGM initialization error")
        return 1
    log("INFO", "DCGM successfully initialized!")
    # Pod mapping needs Kubernetes mode and the kubelet's pod-resources socket in the container (the
    # chart mounts /var/lib/kubelet/pod-resources); without the socket the mapping is skipped.
    options.pod = options.kubernetes and os.path.exists(options.pod_resources_kubelet_socket)
    hostname = None if options.no_hostname else (os.environ.get("NODE_NAME") or os.environ.get("HOSTNAME")
                                                 or socket.gethostname())
    host, _, port = options.address.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = os.environ.get("LAB_POD_IP", "127.0.0.1")  # every address of the pod: its own
    server = FakeServer((host, int(port)), Handler)
    server.sampler = Sampler(state, options.collect_interval)
    server.metric_counters, server.label_counters, server.options, server.hostname = (
        metric_counters, label_counters, options, hostname)
    log("INFO", "Starting webserver")
    log("INFO", "Listening on", address=options.address)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
