"""The host command's standard-library transport (_kube_rest) against a small HTTP server answering as
kube-apiserver does: the paths and methods of each call, and one line for each refusal (401, 403 naming
the missing right, 409, no answer), as the module's kubernetes-client transport words them."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from ansible_collections.homelab.inference.plugins.module_utils._api_errors import (Conflict, KubeError,
                                                                                    ServiceError, ServiceForbidden)
from ansible_collections.homelab.inference.plugins.module_utils._kube_rest import KubeRest, RestEndpoint
from ansible_collections.homelab.inference.tests.unit.plugins import stdlib_closure

USER = "system:serviceaccount:ml:gpu-mode"


class Api(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next of ``answers`` ((status, body) or a callable), recording it."""
    protocol_version = "HTTP/1.1"

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append((self.command, self.path, dict(self.headers), body))
        status, answer = self.server.answers.pop(0)
        data = json.dumps(answer).encode() if not isinstance(answer, bytes) else answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle_one

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    server.seen, server.answers = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client(server, token="sa-token"):
    return KubeRest("http://127.0.0.1:%d" % server.server_address[1], token)


def refusal(kind, name, verb, resource, group, namespace):
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": '%s "%s" is forbidden: User "%s" cannot %s resource "%s" in API group "%s" in the '
                       'namespace "%s"' % (kind, name, USER, verb, resource, group, namespace),
            "details": {"name": name, "kind": kind}}


def test_each_call_goes_where_kube_apiserver_serves_it_with_the_token(api):
    kube = client(api)
    api.answers = [(200, {"metadata": {"name": "vllm-server"}}), (200, {"metadata": {}}),
                   (200, {"items": [{"metadata": {"name": "gpu-1"}}]}), (200, {"items": []}),
                   (200, b"memory.used [MiB]\n1 MiB\n"), (201, {}), (200, {}), (404, {"kind": "Status", "code": 404})]
    assert kube.get_deployment("ml", "vllm-server") == {"metadata": {"name": "vllm-server"}}
    kube.patch_deployment("ml", "vllm-server", {"spec": {"replicas": 1}})
    assert kube.nodes("nvidia.com/gpu=true") == ["gpu-1"]
    assert kube.pods_on_node("gpu-1") == []
    assert kube.read_pod_log("ml", "vllm-server-gpu-free-check", "memory") == "memory.used [MiB]\n1 MiB\n"
    kube.create_lease("ml", {"metadata": {"name": "gpu-mode"}})
    kube.replace_lease("ml", {"metadata": {"name": "gpu-mode"}})
    assert kube.get_lease("ml", "gpu-mode") is None
    assert [seen[:2] for seen in api.seen] == [
        ("GET", "/apis/apps/v1/namespaces/ml/deployments/vllm-server"),
        ("PATCH", "/apis/apps/v1/namespaces/ml/deployments/vllm-server"),
        ("GET", "/api/v1/nodes?labelSelector=nvidia.com%2Fgpu%3Dtrue"),
        ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dgpu-1"),
        ("GET", "/api/v1/namespaces/ml/pods/vllm-server-gpu-free-check/log?container=memory"),
        ("POST", "/apis/coordination.k8s.io/v1/namespaces/ml/leases"),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ml/leases/gpu-mode"),
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/ml/leases/gpu-mode")]
    assert all(seen[2]["Authorization"] == "Bearer sa-token" for seen in api.seen)
    assert api.seen[1][2]["Content-Type"] == "application/strategic-merge-patch+json"
    assert json.loads(api.seen[1][3]) == {"spec": {"replicas": 1}}


def test_refusals_are_one_line_naming_what_to_fix(api):
    kube = client(api)
    host = kube.host
    api.answers = [(401, {"kind": "Status", "code": 401, "message": "Unauthorized"}),
                   (403, refusal("deployments", "vllm-server", "patch", "deployments", "apps", "ml")),
                   (409, {"kind": "Status", "code": 409, "reason": "AlreadyExists",
                          "message": 'leases.coordination.k8s.io "gpu-mode" already exists'})]
    with pytest.raises(KubeError) as raised:
        kube.get_deployment("ml", "vllm-server")
    assert str(raised.value) == ("reading Deployment ml/vllm-server at %s: 401 Unauthorized; check the kubeconfig's "
                                 "credentials or api_key" % host)
    with pytest.raises(KubeError) as raised:
        kube.patch_deployment("ml", "vllm-server", {})
    assert str(raised.value) == (
        'patching Deployment ml/vllm-server at %s: 403 Forbidden for %s; grant patch on deployments.apps '
        '"vllm-server" in namespace ml (all the rights gpu_mode needs: role homelab.inference.gpu_mode_access, '
        'docs/gpu_mode.md)' % (host, USER))
    with pytest.raises(Conflict) as raised:
        kube.create_lease("ml", {"metadata": {"name": "gpu-mode"}})
    assert str(raised.value) == 'creating Lease ml/gpu-mode: 409 leases.coordination.k8s.io "gpu-mode" already exists'


def test_an_unreachable_api_server_is_one_line():
    kube = KubeRest("http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(KubeError) as raised:
        kube.get_deployment("ml", "vllm-server")
    assert str(raised.value).startswith("reading Deployment ml/vllm-server at http://127.0.0.1:9: ")
    assert str(raised.value).endswith("; check the API server address and that it is reachable")
    assert "\n" not in str(raised.value)


def test_the_service_proxy_path_a_refusal_and_a_slow_answer(api):
    kube = client(api)
    litellm = RestEndpoint(kube, "ml", "litellm", 4000, rights_role="homelab.inference.gpu_mode_access")
    api.answers = [(200, {"id": "chat"}),
                   (403, refusal("services", "litellm:4000", "create", "services/proxy", "", "ml"))]
    assert litellm.request_json("POST", "/v1/chat/completions", {"model": "m"}) == (200, {"id": "chat"})
    assert api.seen[0][1] == "/api/v1/namespaces/ml/services/litellm:4000/proxy/v1/chat/completions"
    with pytest.raises(ServiceForbidden) as raised:
        litellm.exchange("POST", "/v1/chat/completions", {"model": "m"})
    assert 'grant create on services/proxy "litellm:4000" in namespace ml' in str(raised.value)
    pod = RestEndpoint(kube, "ml", "vllm-server-1", 8000, kind="pods")
    assert pod.proxy_path == "/api/v1/namespaces/ml/pods/vllm-server-1:8000/proxy/"

    def slow(*args, **kwargs):
        raise TimeoutError("timed out")
    kube.raw = slow
    with pytest.raises(ServiceError) as raised:
        litellm.exchange("GET", "/health", timeout=3)
    assert raised.value.timed_out and "did not answer within 3s" in str(raised.value)


def test_the_host_code_is_closed_and_needs_only_the_standard_library(tmp_path):
    """The files the gpu_mode_host role copies import nothing else: not Ansible, not the kubernetes client."""
    files = stdlib_closure.shipped_files("gpu_mode_host", "_gpu_mode_host_code")
    assert stdlib_closure.foreign_imports(tmp_path, files, "_gpu_mode_cli") == (0, "", "[]")
