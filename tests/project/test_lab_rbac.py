"""The lab's API authenticates and authorises as k3s's kube-apiserver v1.31 does, held to
Kubernetes' documented semantics ("Authenticating", "Using RBAC Authorization",
"Service Accounts" in the Kubernetes docs) and to the real Status bodies
(k8s.io/apiserver responsewriters/errors.go, apimachinery NewForbidden). Requests
go to the lab's TLS endpoint with a token, raw or through the real kubectl."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from lab_fixture import call, start_lab, wait_for
from testkit.kube_access import service_account_token, token_kubeconfig

RBAC = "/apis/rbac.authorization.k8s.io/v1"
UNAUTHORIZED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("rbac"))
    for name in ("team-a", "team-b"):
        assert call(lab, "POST", "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})[0] == 201
    yield lab
    lab.stop()


def as_token(lab, token, method, path, body=None, content_type="application/json"):
    """(status, parsed body) of a request to the lab's TLS endpoint with ``token`` (None: no credentials; with a
    space: the whole Authorization header)."""
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = token if " " in token else "Bearer " + token
    request = urllib.request.Request("https://%s:%d%s" % (lab.api_service + (path,)), method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    context = ssl.create_default_context(cafile=lab.ca_file)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read()
    return status, json.loads(text) if text.startswith(b"{") else text.decode()


def account(lab, namespace, name):
    """A new ServiceAccount and a token for it."""
    assert call(lab, "POST", "/api/v1/namespaces/%s/serviceaccounts" % namespace,
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})[0] == 201
    return service_account_token(lab.state_dir, namespace, name)


def role(lab, kind, name, rules, namespace=None):
    path = "%s%s/%ss" % (RBAC, "/namespaces/%s" % namespace if namespace else "", kind.lower())
    metadata = dict({"name": name}, **({"namespace": namespace} if namespace else {}))
    status, body = call(lab, "POST", path, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                                            "metadata": metadata, "rules": rules})
    assert status == 201, body


def bind(lab, kind, name, role_kind, role_name, subjects, namespace=None):
    path = "%s%s/%ss" % (RBAC, "/namespaces/%s" % namespace if namespace else "", kind.lower())
    metadata = dict({"name": name}, **({"namespace": namespace} if namespace else {}))
    status, body = call(lab, "POST", path, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata, "subjects": subjects,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role_name}})
    assert status == 201, body


def sa(name, namespace):
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def forbidden(message, name="", group="", kind=""):
    details = {k: v for k, v in (("name", name), ("group", group), ("kind", kind)) if v}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "Forbidden", "details": details, "code": 403}


def test_requests_without_valid_credentials_get_the_401_status(lab):
    token = account(lab, "team-a", "valid")
    assert as_token(lab, None, "GET", "/version") == (401, UNAUTHORIZED)   # --anonymous-auth=false, as k3s
    assert as_token(lab, "not-a-token", "GET", "/version") == (401, UNAUTHORIZED)
    assert as_token(lab, "Bearer ", "GET", "/version") == (401, UNAUTHORIZED)
    assert as_token(lab, "Basic dXNlcjpwYXNz", "GET", "/version") == (401, UNAUTHORIZED)
    assert as_token(lab, "bearer " + token, "GET", "/version")[0] == 200   # the scheme is matched in any case
    # The plain port checks a token it is given; only a request without one is the insecure port's.
    assert call(lab, "GET", "/version")[0] == 200
    request = urllib.request.Request("http://127.0.0.1:%d/version" % lab.port,
                                     headers={"Authorization": "Bearer not-a-token"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert (refused.value.code, json.load(refused.value)) == (401, UNAUTHORIZED)


def test_the_admin_token_is_in_system_masters_and_may_do_anything(lab):
    for path in ("/api/v1/nodes", "/api/v1/secrets", RBAC + "/clusterroles"):
        assert as_token(lab, lab.admin_token, "GET", path)[0] == 200, path
    with open(os.path.join(lab.state_dir, "kubeconfig")) as handle:
        assert lab.admin_token in handle.read()
    assert oct(os.stat(os.path.join(lab.state_dir, "kubeconfig")).st_mode & 0o777) == "0o600"


def test_a_service_account_without_bindings_may_only_discover(lab):
    token = account(lab, "team-a", "nobody")
    user = "system:serviceaccount:team-a:nobody"
    for path in ("/api", "/apis", "/api/v1", "/apis/apps/v1", "/version", "/healthz", "/readyz", "/openapi/v3"):
        assert as_token(lab, token, "GET", path)[0] == 200, path
    assert as_token(lab, token, "GET", "/api/v1/namespaces/team-a/pods") == (403, forbidden(
        'pods is forbidden: User "%s" cannot list resource "pods" in API group "" in the namespace "team-a"'
        % user, kind="pods"))
    assert as_token(lab, token, "GET", "/apis/apps/v1/namespaces/team-a/deployments/web") == (403, forbidden(
        'deployments.apps "web" is forbidden: User "%s" cannot get resource "deployments" in API group "apps" in '
        'the namespace "team-a"' % user, name="web", group="apps", kind="deployments"))
    assert as_token(lab, token, "GET", "/api/v1/nodes") == (403, forbidden(
        'nodes is forbidden: User "%s" cannot list resource "nodes" in API group "" at the cluster scope' % user,
        kind="nodes"))
    assert as_token(lab, token, "GET", "/metrics") == (403, forbidden(
        'forbidden: User "%s" cannot get path "/metrics"' % user))
    # The verb follows the HTTP method (PUT is update, a collection's DELETE deletecollection, ?watch=1 watch).
    for method, path, verb in (("PUT", "/api/v1/namespaces/team-a/configmaps/c", "update"),
                               ("PATCH", "/api/v1/namespaces/team-a/configmaps/c", "patch"),
                               ("DELETE", "/api/v1/namespaces/team-a/configmaps", "deletecollection"),
                               ("GET", "/api/v1/namespaces/team-a/configmaps?watch=1", "watch"),
                               ("POST", "/api/v1/namespaces/team-a/configmaps", "create")):
        status, body = as_token(lab, token, method, path, {} if method in ("PUT", "PATCH", "POST") else None)
        assert status == 403 and ' cannot %s resource "configmaps" ' % verb in body["message"], (method, body)


def test_a_role_binding_grants_its_role_in_its_namespace_only(lab):
    token = account(lab, "team-a", "reader")
    role(lab, "Role", "pod-reader", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
         namespace="team-a")
    bind(lab, "RoleBinding", "read-pods", "Role", "pod-reader", [sa("reader", "team-a")], namespace="team-a")
    assert as_token(lab, token, "GET", "/api/v1/namespaces/team-a/pods")[0] == 200
    assert as_token(lab, token, "GET", "/api/v1/namespaces/team-b/pods")[0] == 403
    assert as_token(lab, token, "GET", "/api/v1/pods")[0] == 403   # all namespaces is the cluster scope
    assert as_token(lab, token, "DELETE", "/api/v1/namespaces/team-a/pods/p")[0] == 403


def test_a_cluster_role_grants_in_the_namespace_of_a_role_binding_or_everywhere_by_a_cluster_binding(lab):
    local, everywhere = account(lab, "team-b", "local"), account(lab, "team-b", "everywhere")
    role(lab, "ClusterRole", "secret-reader", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}])
    bind(lab, "RoleBinding", "local-secrets", "ClusterRole", "secret-reader", [sa("local", "team-b")],
         namespace="team-b")
    bind(lab, "ClusterRoleBinding", "all-secrets", "ClusterRole", "secret-reader", [sa("everywhere", "team-b")])
    assert as_token(lab, local, "GET", "/api/v1/namespaces/team-b/secrets")[0] == 200
    assert as_token(lab, local, "GET", "/api/v1/namespaces/team-a/secrets")[0] == 403
    assert as_token(lab, local, "GET", "/api/v1/secrets")[0] == 403
    for path in ("/api/v1/namespaces/team-a/secrets", "/api/v1/namespaces/team-b/secrets", "/api/v1/secrets"):
        assert as_token(lab, everywhere, "GET", path)[0] == 200, path


def test_resource_names_narrow_get_and_patch_but_never_allow_list_or_create(lab):
    token = account(lab, "team-a", "named")
    call(lab, "POST", "/api/v1/namespaces/team-a/configmaps",
         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mine"}, "data": {"a": "1"}})
    role(lab, "Role", "one-configmap", [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["mine"],
                                         "verbs": ["get", "list", "patch", "create"]}], namespace="team-a")
    bind(lab, "RoleBinding", "one-configmap", "Role", "one-configmap", [sa("named", "team-a")], namespace="team-a")
    base = "/api/v1/namespaces/team-a/configmaps"
    assert as_token(lab, token, "GET", base + "/mine")[0] == 200
    assert as_token(lab, token, "PATCH", base + "/mine", {"data": {"a": "2"}}, "application/merge-patch+json")[0] == 200
    assert as_token(lab, token, "GET", base + "/other")[0] == 403
    assert as_token(lab, token, "GET", base)[0] == 403
    # A list narrowed to the one name by a field selector is authorised with that name (requestinfo.go).
    assert as_token(lab, token, "GET", base + "?fieldSelector=metadata.name%3Dmine")[0] == 200
    assert as_token(lab, token, "POST", base, {"apiVersion": "v1", "kind": "ConfigMap",
                                               "metadata": {"name": "mine2"}})[0] == 403


def test_a_subresource_is_granted_only_by_its_own_name(lab):
    token = account(lab, "team-a", "scaler")
    call(lab, "POST", "/apis/apps/v1/namespaces/team-a/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    role(lab, "Role", "scaler", [{"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]},
                                 {"apiGroups": [""], "resources": ["*/status"], "verbs": ["get"]}],
         namespace="team-a")
    bind(lab, "RoleBinding", "scaler", "Role", "scaler", [sa("scaler", "team-a")], namespace="team-a")
    deployment = "/apis/apps/v1/namespaces/team-a/deployments/web"
    assert as_token(lab, token, "GET", deployment + "/scale")[0] == 200
    status, body = as_token(lab, token, "GET", deployment)
    assert status == 403 and 'cannot get resource "deployments" in API group "apps"' in body["message"]
    # "*/status" matches any resource's status: authorised, so the answer is the missing pod's 404.
    assert as_token(lab, token, "GET", "/api/v1/namespaces/team-a/pods/p/status")[0] == 404
    status, body = as_token(lab, token, "GET", "/api/v1/namespaces/team-a/pods/p/log")
    assert status == 403 and '"pods/log"' in body["message"]


def test_group_subjects_and_a_binding_to_a_missing_role(lab):
    token = account(lab, "team-b", "member")
    role(lab, "ClusterRole", "lease-reader", [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                               "verbs": ["list"]}])
    bind(lab, "RoleBinding", "team-b-accounts", "ClusterRole", "lease-reader",
         [{"kind": "Group", "name": "system:serviceaccounts:team-b", "apiGroup": "rbac.authorization.k8s.io"}],
         namespace="team-b")
    assert as_token(lab, token, "GET", "/apis/coordination.k8s.io/v1/namespaces/team-b/leases")[0] == 200
    bind(lab, "RoleBinding", "dangling", "Role", "gone", [sa("member", "team-b")], namespace="team-b")
    status, body = as_token(lab, token, "GET", "/api/v1/namespaces/team-b/services")
    assert (status, body["message"]) == (403, (
        'services is forbidden: User "system:serviceaccount:team-b:member" cannot list resource "services" in API '
        'group "" in the namespace "team-b": RBAC: role.rbac.authorization.k8s.io "gone" not found'))


def test_tokens_stop_working_with_their_service_account_secret_or_expiry(lab):
    requested = account(lab, "team-a", "short-lived")
    assert as_token(lab, requested, "GET", "/version")[0] == 200
    status, body = call(lab, "POST", "/api/v1/namespaces/team-a/serviceaccounts/short-lived/token",
                        {"spec": {"expirationSeconds": 60}})
    assert (status, body["message"]) == (422, (
        'TokenRequest.authentication.k8s.io "short-lived" is invalid: spec.expirationSeconds: Invalid value: 60: '
        'may not specify a duration less than 10 minutes'))
    assert call(lab, "POST", "/api/v1/namespaces/team-a/serviceaccounts/nobody-here/token", {"spec": {}})[0] == 404
    # A Secret of type kubernetes.io/service-account-token is filled in by the token controller.
    call(lab, "POST", "/api/v1/namespaces/team-a/secrets", {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "long-lived", "annotations": {"kubernetes.io/service-account.name": "short-lived"}}})
    secret = wait_for(lambda: (call(lab, "GET", "/api/v1/namespaces/team-a/secrets/long-lived")[1].get("data")
                               or {}).get("token") and call(lab, "GET",
                                                            "/api/v1/namespaces/team-a/secrets/long-lived")[1])
    assert sorted(secret["data"]) == ["ca.crt", "namespace", "token"]
    kept = base64.b64decode(secret["data"]["token"]).decode()
    assert as_token(lab, kept, "GET", "/version")[0] == 200
    assert call(lab, "DELETE", "/api/v1/namespaces/team-a/secrets/long-lived")[0] == 200
    assert as_token(lab, kept, "GET", "/version") == (401, UNAUTHORIZED)
    # Deleting the ServiceAccount ends its requested tokens.
    assert call(lab, "DELETE", "/api/v1/namespaces/team-a/serviceaccounts/short-lived")[0] == 200
    assert as_token(lab, requested, "GET", "/version") == (401, UNAUTHORIZED)


def test_an_expired_token_is_refused(lab):
    token = account(lab, "team-b", "expiring")
    path = os.path.join(lab.state_dir, "secrets", "requested-tokens.json")
    with open(path) as handle:
        issued = json.load(handle)
    issued[token]["expires"] = time.time() - 1
    with open(path, "w") as handle:
        json.dump(issued, handle)
    assert as_token(lab, token, "GET", "/version") == (401, UNAUTHORIZED)


def test_kubectl_sees_the_same_answers(lab, tmp_path):
    token = account(lab, "team-a", "kubectl")
    role(lab, "Role", "cm-reader", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
         namespace="team-a")
    bind(lab, "RoleBinding", "kubectl", "Role", "cm-reader", [sa("kubectl", "team-a")], namespace="team-a")
    kubeconfig = token_kubeconfig(lab.state_dir, token, tmp_path / "kubeconfig")

    def kubectl(*args, config=kubeconfig):
        return subprocess.run(["kubectl", "--kubeconfig", config, *args], capture_output=True, text=True,
                              timeout=60, check=False)
    assert kubectl("auth", "can-i", "list", "configmaps", "-n", "team-a").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "list", "configmaps", "-n", "team-b").stdout.strip() == "no"
    assert kubectl("get", "configmaps", "-n", "team-a").returncode == 0
    denied = kubectl("get", "secrets", "-n", "team-a")
    assert denied.returncode != 0 and denied.stderr.strip() == (
        'Error from server (Forbidden): secrets is forbidden: User "system:serviceaccount:team-a:kubectl" cannot '
        'list resource "secrets" in API group "" in the namespace "team-a"')
    # A SubjectAccessReview answers for the user it names, with the binding that allowed it.
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "system:serviceaccount:team-a:kubectl",
                       "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a", "system:authenticated"],
                       "resourceAttributes": {"namespace": "team-a", "verb": "list", "resource": "configmaps"}}}
    status, answer = call(lab, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    assert (status, answer["status"]["allowed"]) == (201, True)
    assert answer["status"]["reason"] == ('RBAC: allowed by RoleBinding "kubectl/team-a" of Role "cm-reader" to '
                                          'ServiceAccount "kubectl/team-a"')
    review["spec"]["resourceAttributes"]["verb"] = "delete"
    assert call(lab, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)[1]["status"] == {
        "allowed": False}
