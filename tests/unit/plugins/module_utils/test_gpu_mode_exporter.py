"""The exporter's scrape: what it asks the API for, its answers over HTTP, and one line for each problem."""

from __future__ import annotations

import datetime
import json
import shutil
import threading
import urllib.error
import urllib.parse
import urllib.request

import certifi
import pytest

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode, _gpu_mode_exporter
from ansible_collections.homelab.inference.tests.unit.plugins import stdlib_closure

TABLE = {"ml": {"vllm_model": "qwen"}, "r1": {"vllm_model": "r1"}, "gaming": {"vllm_model": None}}
CONFIG = {"namespace": "ml", "deployment": "vllm-server", "container": "vllm", "modes": TABLE, "port": 0}
DEPLOYMENT = {"metadata": {"name": "vllm-server", "labels": {_gpu_mode.MODE_LABEL: "r1"}},
              "spec": {"replicas": 1, "template": {"spec": {"containers": [
                  {"name": "vllm", "args": ["--served-model-name", "r1"]}]}}}}


class Api:
    """Answers as kube-apiserver would, recording each path asked."""
    host = "https://10.43.0.1:443"

    def __init__(self):
        self.paths, self.events, self.refuse = [], [], None

    def raw(self, method, path, body=None, timeout=30, headers=None, follow_redirects=True):
        self.paths.append((method, path))
        if self.refuse:
            return self.refuse
        if "/deployments/" in path:
            return 200, json.dumps(DEPLOYMENT), {}
        return 200, json.dumps({"kind": "EventList", "items": self.events}), {}


def switched(source, target, second):
    now = datetime.datetime(2026, 12, 1, 10, 0, second, tzinfo=datetime.timezone.utc)
    return _gpu_mode.switch_event({"kind": "Deployment", "name": "vllm-server", "namespace": "ml"}, "GpuModeSwitched",
                                  "m", True, now, _gpu_mode.switch_record(source, target, "x", {"total": 2.0}, 1,
                                                                          "GpuModeSwitched"))


def test_a_scrape_reads_the_deployment_and_only_its_switch_events():
    api = Api()
    exporter = _gpu_mode_exporter.Exporter(api, CONFIG)
    exporter.collect()
    api.events = [switched("ml", "r1", 5)]
    text = exporter.collect()
    assert 'inference_gpu_mode{mode="r1"} 1' in text
    assert 'inference_gpu_mode_switches_total{from="ml",to="r1",result="switched"} 1' in text
    method, path = api.paths[-1]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    assert path.startswith("/api/v1/namespaces/ml/events?") and query["fieldSelector"] == [
        "involvedObject.kind=Deployment,involvedObject.name=vllm-server,source=homelab.inference.gpu_mode"]
    assert api.paths[-2] == ("GET", "/apis/apps/v1/namespaces/ml/deployments/vllm-server")


def test_a_refusal_is_one_line_naming_the_role():
    api = Api()
    api.refuse = (403, json.dumps({"kind": "Status", "message": 'deployments.apps "vllm-server" is forbidden: User '
                                   '"system:serviceaccount:ml:gpu-mode-exporter" cannot get resource'}), {})
    with pytest.raises(_gpu_mode_exporter.ExporterError) as raised:
        _gpu_mode_exporter.Exporter(api, CONFIG).collect()
    assert str(raised.value) == (
        'reading Deployment ml/vllm-server: 403 deployments.apps "vllm-server" is forbidden: User '
        '"system:serviceaccount:ml:gpu-mode-exporter" cannot get resource; the role '
        'homelab.inference.gpu_monitoring grants the exporter\'s rights')


def test_an_answer_that_is_not_json_is_one_line_not_a_crash():
    api = Api()
    api.refuse = (200, "<html>a proxy's login page</html>", {})
    with pytest.raises(_gpu_mode_exporter.ExporterError) as raised:
        _gpu_mode_exporter.Exporter(api, CONFIG).collect()
    assert str(raised.value) == ("reading Deployment ml/vllm-server: the API server at https://10.43.0.1:443 answered "
                                 "200 with no JSON: <html>a proxy's login page</html>")


def test_the_in_cluster_api_needs_the_pod_environment_and_reads_the_token_each_time(tmp_path):
    with pytest.raises(_gpu_mode_exporter.ExporterError) as raised:
        _gpu_mode_exporter.InClusterApi(str(tmp_path), environ={})
    assert "KUBERNETES_SERVICE_HOST" in str(raised.value) and "\n" not in str(raised.value)
    pod = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(_gpu_mode_exporter.ExporterError) as raised:
        _gpu_mode_exporter.InClusterApi(str(tmp_path), environ=pod)
    assert "ca.crt) cannot be read" in str(raised.value)
    shutil.copy(certifi.where(), str(tmp_path / "ca.crt"))  # any CA bundle will do here
    api = _gpu_mode_exporter.InClusterApi(str(tmp_path), environ=pod)
    assert api.host == "https://[fd00::1]:443"
    with pytest.raises(_gpu_mode_exporter.ExporterError):
        api.renew_token()
    (tmp_path / "token").write_text("first\n")
    api.renew_token()
    (tmp_path / "token").write_text("second\n")
    api.renew_token()
    assert api.token == "second"


def test_the_configuration_names_what_is_missing(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"namespace": "ml"}))
    with pytest.raises(_gpu_mode_exporter.ExporterError) as raised:
        _gpu_mode_exporter.load(str(path))
    assert str(raised.value).endswith("needs deployment, modes; re-run the role homelab.inference.gpu_monitoring")


def test_the_http_server_answers_metrics_health_and_a_down_api():
    api = Api()
    server = _gpu_mode_exporter.serve(_gpu_mode_exporter.Exporter(api, CONFIG), 0, "127.0.0.1")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = "http://127.0.0.1:%d" % server.server_address[1]
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
            assert answer.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert b'inference_gpu_mode{mode="r1"} 1' in answer.read()
        with urllib.request.urlopen(base + "/healthz", timeout=5) as answer:
            assert answer.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/other", timeout=5)
        assert missing.value.code == 404
        api.refuse = (401, json.dumps({"kind": "Status", "message": "Unauthorized"}), {})
        with pytest.raises(urllib.error.HTTPError) as down:
            urllib.request.urlopen(base + "/metrics", timeout=5)
        assert down.value.code == 503 and down.value.read().decode().startswith(
            "reading Deployment ml/vllm-server: 401 Unauthorized; the role homelab.inference.gpu_monitoring")
    finally:
        server.shutdown()
        server.server_close()


def test_the_shipped_code_is_closed_and_needs_only_the_standard_library(tmp_path):
    """The files the gpu_monitoring role ships in its ConfigMap import nothing else: the official Python
    image has neither Ansible nor the kubernetes client."""
    files = stdlib_closure.shipped_files("gpu_monitoring", "_gpu_monitoring_code")
    assert stdlib_closure.foreign_imports(tmp_path, files, "_gpu_mode_exporter") == (0, "", "[]")
