"""Pods of the official Python image on the lab, with what the kubelet and the
API give a pod: ConfigMap volumes with ``items`` (subdirectories, missing keys,
``optional``), the ServiceAccount token mount and the API over TLS that
in-cluster clients reach with it, the ServiceAccount admission (a missing
ServiceAccount refuses the pod, and a Deployment's ReplicaSet reports it)."""

from __future__ import annotations

import hashlib
import json
import ssl
import urllib.request

import pytest

from lab_fixture import call, start_lab, wait_for

NS = "runtime"
PODS = "/api/v1/namespaces/%s/pods" % NS
CONFIGMAPS = "/api/v1/namespaces/%s/configmaps" % NS
ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

# The launcher a ConfigMap ships, as an in-cluster exporter's: its own directory on sys.path by its
# container path, the shipped package imported from a subdirectory, the API reached the way client-go's
# rest.InClusterConfig reaches it (environment, token and CA at the automount path, hostname verified).
MAIN = """
import sys
sys.path.insert(0, "/opt/probe")
from lab_probe.client import report
print(report())
"""
CLIENT = """
import hashlib, json, os, ssl, sys, urllib.error, urllib.request

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def get(base, token, path):
    context = ssl.create_default_context(cafile=os.path.join(ACCOUNT, "ca.crt"))
    request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as err:
        return json.load(err)


def report():
    with open(os.path.join(ACCOUNT, "token")) as handle:
        token = handle.read()
    with open(os.path.join(ACCOUNT, "namespace")) as handle:
        namespace = handle.read()
    base = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
    listed = get(base, token, "/api/v1/namespaces")
    by_name = get("https://kubernetes.default.svc:%s" % os.environ["KUBERNETES_SERVICE_PORT"], token,
                  "/api/v1/namespaces/" + namespace)
    return json.dumps({"namespaces": sorted(i["metadata"]["name"] for i in listed["items"]),
                       "by_name": by_name["metadata"]["name"], "namespace": namespace,
                       "secrets": get(base, token, "/api/v1/namespaces/%s/secrets" % namespace),
                       "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                       "shipped": sorted(os.listdir("/opt/probe")),
                       "port_https": os.environ["KUBERNETES_SERVICE_PORT_HTTPS"],
                       "isolated": sys.flags.isolated or sys.flags.ignore_environment})
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("pods-runtime"))
    assert call(lab, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                   "metadata": {"name": NS}})[0] == 201
    yield lab
    lab.stop()


def configmap(name, data):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": data}


def python_pod(name, command, volumes=(), mounts=(), **spec):
    container = {"name": "main", "image": "docker.io/library/python:3.12-slim", "command": command,
                 "volumeMounts": list(mounts)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": dict({"restartPolicy": "Never", "containers": [container], "volumes": list(volumes)}, **spec)}


def finished(lab, name, timeout=30):
    def phase():
        pod = call(lab, "GET", "%s/%s" % (PODS, name))[1]
        return pod if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") else None
    return wait_for(phase, timeout=timeout)


def log(lab, name):
    with urllib.request.urlopen("http://127.0.0.1:%d%s/%s/log" % (lab.port, PODS, name), timeout=10) as response:
        return response.read().decode()


def events(lab, name, reason):
    selector = "involvedObject.name=%s,reason=%s" % (name, reason)
    return call(lab, "GET", "/api/v1/namespaces/%s/events?fieldSelector=%s" % (NS, selector))[1]["items"]


# The pod's ServiceAccount may read namespaces, and nothing else: the lab authorises its token by RBAC.
NAMESPACE_READER = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "namespace-reader"},
     "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "namespace-reader"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "namespace-reader"},
     "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": NS}]}]


def test_a_python_pod_reaches_the_api_over_tls_with_its_token_and_shipped_code(lab):
    for obj in NAMESPACE_READER:
        path = "/apis/rbac.authorization.k8s.io/v1/%ss" % obj["kind"].lower()
        assert call(lab, "POST", path, obj)[0] == 201
    assert call(lab, "POST", CONFIGMAPS, configmap("probe", {"main.py": MAIN, "client.py": CLIENT,
                                                             "unused.txt": "not projected"}))[0] == 201
    volume = {"name": "code", "configMap": {"name": "probe", "items": [
        {"key": "main.py", "path": "main.py"}, {"key": "client.py", "path": "lab_probe/client.py"}]}}
    pod = python_pod("probe", ["python3", "-I", "-B", "/opt/probe/main.py"], [volume],
                     [{"name": "code", "mountPath": "/opt/probe", "readOnly": True}])
    status, created = call(lab, "POST", PODS, pod)
    assert status == 201, created
    # The ServiceAccount admission's mutation, as kube-apiserver stores the pod.
    spec = created["spec"]
    assert (spec["serviceAccountName"], spec["serviceAccount"]) == ("default", "default")
    token_volume = next(v for v in spec["volumes"] if v["name"].startswith("kube-api-access-"))
    assert [sorted(s) for s in token_volume["projected"]["sources"]] == [
        ["serviceAccountToken"], ["configMap"], ["downwardAPI"]]
    assert {"name": token_volume["name"], "readOnly": True, "mountPath": ACCOUNT} in \
        spec["containers"][0]["volumeMounts"]

    pod = finished(lab, "probe")
    assert pod["status"]["phase"] == "Succeeded", log(lab, "probe")
    seen = json.loads(log(lab, "probe").strip().splitlines()[-1])
    assert NS in seen["namespaces"] and "kube-system" in seen["namespaces"]
    assert (seen["by_name"], seen["namespace"]) == (NS, NS)
    assert (seen["secrets"]["code"], seen["secrets"]["message"]) == (403, (
        'secrets is forbidden: User "system:serviceaccount:%s:default" cannot list resource "secrets" in API '
        'group "" in the namespace "%s"' % (NS, NS)))
    assert seen["shipped"] == ["lab_probe", "main.py"], "only the listed keys, at their paths"
    assert seen["port_https"] == str(lab.api_service[1])
    assert not seen["isolated"], "-I is the lab's to emulate, not to pass on (its hooks would go)"
    token = lab.tokens.token(NS, "default")
    assert seen["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    # Stable per state directory: the same account gets the same token again.
    assert lab.tokens.token(NS, "default") == token and lab.tokens.token(NS, "other") != token


def test_the_api_certificate_is_verified_by_name_and_refused_without_the_ca(lab):
    host, port = lab.api_service
    context = ssl.create_default_context(cafile=lab.ca_file)
    admin = urllib.request.Request("https://%s:%d/version" % (host, port),
                                   headers={"Authorization": "Bearer %s" % lab.admin_token})
    with urllib.request.urlopen(admin, context=context, timeout=10) as answer:
        assert json.load(answer)["gitVersion"].startswith("v1.31")
    # k3s runs its API server with --anonymous-auth=false: without a token even /version is refused.
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen("https://%s:%d/version" % (host, port), context=context, timeout=10)
    assert (anonymous.value.code, json.load(anonymous.value)) == (401, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized",
        "reason": "Unauthorized", "code": 401})
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen("https://%s:%d/version" % (host, port), context=ssl.create_default_context(),
                               timeout=10)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    # The plain port and the admin kubeconfig are unchanged.
    assert call(lab, "GET", "/version")[0] == 200


def test_a_missing_item_key_fails_the_mount_until_it_exists_unless_optional(lab):
    call(lab, "POST", CONFIGMAPS, configmap("partial", {"present": "1"}))
    volume = {"name": "cfg", "configMap": {"name": "partial", "items": [{"key": "absent", "path": "a/b.txt"}]}}
    mount = {"name": "cfg", "mountPath": "/cfg"}
    command = ["python3", "-c", "print(open('/cfg/a/b.txt').read())"]
    assert call(lab, "POST", PODS, python_pod("waits", command, [volume], [mount]))[0] == 201
    failed = wait_for(lambda: events(lab, "waits", "FailedMount"))
    assert failed[0]["message"] == ('MountVolume.SetUp failed for volume "cfg" : configmap references '
                                    'non-existent config key: absent')
    assert (failed[0]["type"], failed[0]["source"]["component"]) == ("Warning", "kubelet")
    pod = call(lab, "GET", PODS + "/waits")[1]
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}

    optional = dict(volume, configMap=dict(volume["configMap"], optional=True))
    assert call(lab, "POST", PODS, python_pod("optional", ["python3", "-c", "import os; print(os.listdir('/cfg'))"],
                                             [optional], [mount]))[0] == 201
    assert finished(lab, "optional")["status"]["phase"] == "Succeeded"
    assert log(lab, "optional").strip() == "[]"

    status, _ = call(lab, "PATCH", CONFIGMAPS + "/partial", {"data": {"absent": "there now"}},
                     "application/merge-patch+json")
    assert status == 200
    assert finished(lab, "waits")["status"]["phase"] == "Succeeded"
    assert log(lab, "waits").strip() == "there now"


def test_no_token_without_automount_on_the_pod_or_its_serviceaccount(lab):
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "quiet", "namespace": NS},
               "automountServiceAccountToken": False}
    assert call(lab, "POST", "/api/v1/namespaces/%s/serviceaccounts" % NS, account)[0] == 201
    command = ["python3", "-c", "import os; print(os.environ['KUBERNETES_SERVICE_HOST'])"]
    for name, spec in (("pod-off", {"automountServiceAccountToken": False}),
                       ("account-off", {"serviceAccountName": "quiet"})):
        status, created = call(lab, "POST", PODS, python_pod(name, command, **spec))
        assert status == 201, created
        assert not [v for v in created["spec"].get("volumes") or [] if v["name"].startswith("kube-api-access-")]
        assert all(m["mountPath"] != ACCOUNT for m in created["spec"]["containers"][0]["volumeMounts"])
        assert finished(lab, name)["status"]["phase"] == "Succeeded"
        # The API's address is in every container's environment, mounted token or not (as the kubelet does).
        assert log(lab, name).strip() == lab.api_service[0]
    # The pod's own setting wins over its ServiceAccount's.
    status, created = call(lab, "POST", PODS, python_pod("pod-on", command, serviceAccountName="quiet",
                                                         automountServiceAccountToken=True))
    assert any(v["name"].startswith("kube-api-access-") for v in created["spec"]["volumes"])


def test_a_missing_serviceaccount_refuses_the_pod_and_the_replicaset_says_so(lab):
    status, body = call(lab, "POST", PODS, python_pod("orphan", ["python3", "-c", "pass"],
                                                      serviceAccountName="nobody"))
    assert (status, body["reason"]) == (403, "Forbidden")
    assert body["message"] == ('pods "orphan" is forbidden: error looking up service account %s/nobody: '
                               'serviceaccount "nobody" not found' % NS)
    assert call(lab, "GET", PODS + "/orphan")[0] == 404

    template = python_pod("x", ["python3", "-c", "import time; time.sleep(60)"], serviceAccountName="exporter")
    template["spec"]["restartPolicy"] = "Always"
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "exporter", "namespace": NS},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "exporter"}},
                           "template": {"metadata": {"labels": {"app": "exporter"}}, "spec": template["spec"]}}}
    assert call(lab, "POST", "/apis/apps/v1/namespaces/%s/deployments" % NS, deployment)[0] == 201

    def failure(plural, name):
        obj = call(lab, "GET", "/apis/apps/v1/namespaces/%s/%s/%s" % (NS, plural, name))[1]
        return next((c for c in (obj.get("status") or {}).get("conditions") or []
                     if c["type"] == "ReplicaFailure"), None)

    def replica_set():
        items = call(lab, "GET", "/apis/apps/v1/namespaces/%s/replicasets?labelSelector=app%%3Dexporter" % NS)[1]
        return items["items"][0]["metadata"]["name"] if items["items"] else None

    name = wait_for(replica_set)
    expected = ('pods "%s-" is forbidden: error looking up service account %s/exporter: serviceaccount "exporter" '
                'not found' % (name, NS))
    condition = wait_for(lambda: failure("replicasets", name))
    assert (condition["status"], condition["reason"], condition["message"]) == ("True", "FailedCreate", expected)
    assert wait_for(lambda: failure("deployments", "exporter"))["message"] == expected
    created = wait_for(lambda: events(lab, name, "FailedCreate"))
    assert created[0]["message"] == "Error creating: " + expected
    assert created[0]["source"]["component"] == "replicaset-controller"
    assert not call(lab, "GET", PODS + "?labelSelector=app%3Dexporter")[1]["items"], "no pod was run"

    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "exporter", "namespace": NS}}
    assert call(lab, "POST", "/api/v1/namespaces/%s/serviceaccounts" % NS, account)[0] == 201
    pods = wait_for(lambda: call(lab, "GET", PODS + "?labelSelector=app%3Dexporter")[1]["items"])
    assert pods[0]["metadata"]["generateName"] == name + "-"
    wait_for(lambda: failure("replicasets", name) is None and failure("deployments", "exporter") is None)


def state(lab, name):
    statuses = call(lab, "GET", "%s/%s" % (PODS, name))[1].get("status", {}).get("containerStatuses") or [{}]
    return statuses[0].get("state") or {}


def test_only_the_images_interpreter_runs(lab):
    call(lab, "POST", PODS, python_pod("shell", ["sh", "-c", "echo hi"]))
    waiting = wait_for(lambda: state(lab, "shell").get("waiting", {}).get("reason") == "ErrImagePull"
                       and state(lab, "shell"))
    assert "python, python3, python3.N" in waiting["waiting"]["message"] and "'sh'" in waiting["waiting"]["message"]
    # The image's own python3.N only: 3.12-slim has no python3.11.
    call(lab, "POST", PODS, python_pod("other-version", ["python3.11", "-c", "pass"]))
    terminated = finished(lab, "other-version")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("StartError", 128)
    assert 'exec: "python3.11": executable file not found in $PATH' in terminated["message"]
    call(lab, "POST", PODS, python_pod("same-version", ["/usr/local/bin/python3.12", "-c", "print(6 * 7)"]))
    assert finished(lab, "same-version")["status"]["phase"] == "Succeeded"
    assert log(lab, "same-version").strip() == "42"


def test_run_as_non_root_is_refused_for_a_root_image_unless_a_user_is_given(lab):
    """The kubelet's verifyRunAsNonRoot (v1.31): the python image has no USER, so runAsNonRoot alone
    cannot start; a non-zero runAsUser can; runAsUser 0 breaks the policy. The container's settings
    win over the pod's."""
    nonroot = {"securityContext": {"runAsNonRoot": True}}
    call(lab, "POST", PODS, python_pod("root-image", ["python3", "-c", "pass"], **nonroot))
    waiting = wait_for(lambda: state(lab, "root-image").get("waiting", {}).get("reason") == "CreateContainerConfigError"
                       and state(lab, "root-image"))["waiting"]
    pod = call(lab, "GET", "%s/root-image" % PODS)[1]
    assert waiting["message"] == ('container has runAsNonRoot and image will run as root (pod: "root-image_%s(%s)", '
                                  'container: main)' % (NS, pod["metadata"]["uid"]))
    assert any(e["reason"] == "Failed" and e["message"] == "Error: " + waiting["message"]
               for e in call(lab, "GET", "/api/v1/namespaces/%s/events" % NS)[1]["items"])

    call(lab, "POST", PODS, python_pod("user-given", ["python3", "-c", "pass"],
                                       securityContext={"runAsNonRoot": True, "runAsUser": 1000}))
    assert finished(lab, "user-given")["status"]["phase"] == "Succeeded"

    as_root = python_pod("as-root", ["python3", "-c", "pass"], **nonroot)
    as_root["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
    call(lab, "POST", PODS, as_root)
    waiting = wait_for(lambda: state(lab, "as-root").get("waiting", {}).get("message", "").startswith(
        "container's runAsUser breaks non-root policy") and state(lab, "as-root"))
    assert waiting["waiting"]["reason"] == "CreateContainerConfigError"
