from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import api_exception

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode_rights
from ansible_collections.homelab.inference.plugins.module_utils._kube_access import KubeAccess, KubeError
from ansible_collections.homelab.inference.plugins.module_utils._api_errors import ServiceForbidden
from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceEndpoint

USER = "system:serviceaccount:ml:gpu-mode"
ROLE_POINTER = "(all the rights gpu_mode needs: role homelab.inference.gpu_mode_access, docs/gpu_mode.md)"


def refusal(kind, name, verb, resource, group, namespace=None):
    """The API server's 403 Status body, as kube-apiserver words it."""
    where = ' in the namespace "%s"' % namespace if namespace else " at the cluster scope"
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden",
            "message": '%s "%s" is forbidden: User "%s" cannot %s resource "%s" in API group "%s"%s'
                       % (kind, name, USER, verb, resource, group, where),
            "details": {"name": name, "kind": kind}, "code": 403}


class Refusing:
    """A dynamic-client resource whose every call gets the API server's 403."""

    def __init__(self, body):
        self.body = body

    def _refuse(self, *args, **kwargs):
        error = ApiException(status=403, reason="Forbidden")
        error.body = json.dumps(self.body)
        error.headers = {"Content-Type": "application/json"}
        raise api_exception(error)

    get = patch = create = replace = delete = _refuse


def kube_refusing(body):
    kube = KubeAccess.__new__(KubeAccess)  # no client: the resources below stand in for it
    kube.host = "https://10.0.0.1:6443"
    kube._deployments = kube._pods = kube._nodes = kube._leases = Refusing(body)
    return kube


LEASE = {"metadata": {"name": "gpu-mode"}}


@pytest.mark.parametrize("call, expected", [
    (lambda k: k.get_deployment("ml", "vllm-server"),
     'reading Deployment ml/vllm-server at https://10.0.0.1:6443: 403 Forbidden for %s; '
     'grant get on deployments.apps "vllm-server" in namespace ml' % USER),
    (lambda k: k.patch_deployment("ml", "vllm-server", {}),
     'patching Deployment ml/vllm-server at https://10.0.0.1:6443: 403 Forbidden for %s; '
     'grant patch on deployments.apps "vllm-server" in namespace ml' % USER),
    (lambda k: k.list_pods("ml", "app=vllm"),
     "listing pods in ml at https://10.0.0.1:6443: 403 Forbidden for %s; grant list on pods in namespace ml" % USER),
    (lambda k: k.nodes("nvidia.com/gpu=true"),
     "listing nodes at https://10.0.0.1:6443: 403 Forbidden for %s; grant list on nodes (cluster-scoped)" % USER),
    (lambda k: k.pods_on_node("lab-gpu"),
     "listing pods on node lab-gpu at https://10.0.0.1:6443: 403 Forbidden for %s; "
     "grant list on pods in all namespaces" % USER),
    (lambda k: k.get_lease("ml", "gpu-mode"),
     'reading Lease ml/gpu-mode at https://10.0.0.1:6443: 403 Forbidden for %s; '
     'grant get on leases.coordination.k8s.io "gpu-mode" in namespace ml' % USER),
    (lambda k: k.create_lease("ml", LEASE),
     "creating Lease ml/gpu-mode at https://10.0.0.1:6443: 403 Forbidden for %s; "
     "grant create on leases.coordination.k8s.io in namespace ml" % USER),
    (lambda k: k.replace_lease("ml", LEASE),
     'updating Lease ml/gpu-mode at https://10.0.0.1:6443: 403 Forbidden for %s; '
     'grant update on leases.coordination.k8s.io "gpu-mode" in namespace ml' % USER),
    (lambda k: k.delete_lease("ml", "gpu-mode"),
     'deleting Lease ml/gpu-mode at https://10.0.0.1:6443: 403 Forbidden for %s; '
     'grant delete on leases.coordination.k8s.io "gpu-mode" in namespace ml' % USER),
], ids=["get_deployment", "patch_deployment", "list_pods", "nodes", "pods_on_node", "get_lease", "create_lease",
        "replace_lease", "delete_lease"])
def test_a_403_names_the_right_the_call_needed_and_the_shipped_role(call, expected):
    kube = kube_refusing(refusal("pods", "", "list", "pods", ""))
    with pytest.raises(KubeError) as raised:
        call(kube)
    assert str(raised.value) == expected + " " + ROLE_POINTER
    assert raised.value.status == 403


def test_a_403_without_the_apis_words_still_names_the_right():
    kube = kube_refusing("forbidden")
    with pytest.raises(KubeError) as raised:
        kube.pods_on_node("lab-gpu")
    assert str(raised.value) == ("listing pods on node lab-gpu at https://10.0.0.1:6443: 403 Forbidden; "
                                 "grant list on pods in all namespaces " + ROLE_POINTER)


class ProxyApi:
    """The kubernetes client's low-level API as _service_http drives it (kubernetes >= 31)."""

    def __init__(self, status, body):
        self.status, self.body = status, body
        self.rest_client = self
        self.pool_manager = self

    def param_serialize(self, method, resource, **kwargs):
        return (method, resource, {}, None)

    def request(self, *args, **kwargs):  # the client's urllib3 pool
        api = self

        class Response:
            status = api.status
            headers = {"Content-Type": "application/json"}

            @staticmethod
            def read():
                return json.dumps(api.body).encode()

        return Response()


def proxied(status, body, rights_role=None):
    endpoint = ServiceEndpoint(None, "ml", "litellm", 4000, rights_role=rights_role)
    endpoint._api = ProxyApi(status, body)
    return endpoint


def test_the_api_servers_403_on_the_service_proxy_names_the_proxy_right():
    endpoint = proxied(403, refusal("services", "litellm:4000", "create", "services/proxy", "", "ml"),
                       rights_role=_gpu_mode_rights.ROLE)
    with pytest.raises(ServiceForbidden) as raised:
        endpoint.exchange("POST", "/v1/chat/completions", {"model": "vllm-qwen"})
    assert str(raised.value) == ('POST /v1/chat/completions on service ml/litellm:4000: 403 Forbidden for %s; '
                                 'grant create on services/proxy "litellm:4000" in namespace ml %s'
                                 % (USER, ROLE_POINTER))


def test_without_a_rights_role_the_proxy_403_names_no_role():
    endpoint = proxied(403, refusal("services", "litellm:4000", "get", "services/proxy", "", "ml"))
    with pytest.raises(ServiceForbidden) as raised:
        endpoint.request("GET", "/v1/models")
    assert str(raised.value).endswith('grant get on services/proxy "litellm:4000" in namespace ml')


def test_a_403_from_the_backend_itself_is_its_answer():
    endpoint = proxied(403, {"error": {"message": "key not allowed to access model"}})
    status, text = endpoint.request("POST", "/v1/chat/completions", {})
    assert status == 403 and "key not allowed" in text


@pytest.mark.parametrize("method, verb", [("GET", "get"), ("HEAD", "get"), ("POST", "create"), ("PUT", "update"),
                                          ("PATCH", "patch"), ("DELETE", "delete")])
def test_http_methods_map_to_rbac_verbs_as_kube_apiserver_maps_them(method, verb):
    assert _gpu_mode_rights.HTTP_VERBS[method] == verb


def test_the_default_rules():
    assert _gpu_mode_rights.rules() == {
        "cluster": [
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        ],
        "namespaced": [{"namespace": "ml", "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["vllm-server"],
             "verbs": ["get", "patch"]},
            # the GPU-free check pod: created (no name for RBAC to match), then read, its log, removed
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods"], "resourceNames": ["vllm-server-gpu-free-check"],
             "verbs": ["get", "delete"]},
            {"apiGroups": [""], "resources": ["pods/log"], "resourceNames": ["vllm-server-gpu-free-check"],
             "verbs": ["get"]},
            # the drain: the Service pointed at the new mode's pods, the old pod's /metrics (a generated name)
            {"apiGroups": [""], "resources": ["services"], "resourceNames": ["vllm-api"], "verbs": ["get", "patch"]},
            {"apiGroups": [""], "resources": ["pods/proxy"], "verbs": ["get"]},
            # each switch recorded as an Event on the Deployment
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["gpu-mode"],
             "verbs": ["get", "update", "delete"]},
            # RBAC cannot restrict create by name: the name is not known when it decides.
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["services/proxy"], "resourceNames": ["vllm-api:8000"],
             "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["services/proxy"], "resourceNames": ["litellm:4000"],
             "verbs": ["create"]},
        ]}],
    }


def test_litellm_in_its_own_namespace_gets_its_own_role():
    rules = _gpu_mode_rights.rules({"namespace": "gpu", "litellm_namespace": "gateway", "litellm_port": 4001,
                                    "deployment": "vllm", "lock_name": "switch"})
    assert [r["namespace"] for r in rules["namespaced"]] == ["gpu", "gateway"]
    assert rules["namespaced"][1]["rules"] == [{"apiGroups": [""], "resources": ["services/proxy"],
                                                "resourceNames": ["litellm:4001"], "verbs": ["create"]}]
    names = [r.get("resourceNames") for r in rules["namespaced"][0]["rules"]]
    assert names == [["vllm"], None, ["vllm-gpu-free-check"], ["vllm-gpu-free-check"], ["vllm-api"], None, None,
                     ["switch"], None, ["vllm-api:8000"]]


def test_no_litellm_check_needs_no_litellm_right():
    rules = _gpu_mode_rights.rules({"litellm_service": ""})
    assert all("litellm:4000" not in r.get("resourceNames", []) for r in rules["namespaced"][0]["rules"])


def test_every_call_has_a_known_verb_and_scope():
    for name, call in _gpu_mode_rights.CALLS.items():
        assert call.verb in ("get", "list", "create", "update", "patch", "delete"), name
        assert call.scope in (None, "namespace", "litellm_namespace"), name
        # Creating an object and listing carry no name for RBAC to match; a subresource of a named object does.
        assert not (call.name and call.verb in ("create", "list") and "/" not in call.resource), name
