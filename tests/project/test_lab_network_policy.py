"""The lab enforces NetworkPolicy as k3s's embedded kube-router does (tools/lab/network_policy.py),
held to the documented semantics ("Network Policies" in the Kubernetes docs; networking/v1
NetworkPolicySpec) and to kube-router's own exemptions and verdicts: a pod no policy selects
is open; a selected pod takes only what a rule allows; a denied connect is refused at once
(REJECT); traffic from the pod's own node is always let in. Servers are real processes in pods
on the lab's loopback network; clients connect from a pod's address (tools/testkit/pod_network.py)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from lab_fixture import call, start_lab, wait_for
from testkit.pod_network import reach

NETPOL = "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies"
# Two HTTP servers in one process, on the pod's address: "http" (8080) and "metrics" (9090).
SERVER = r"""
import http.server, os, socketserver, threading
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
for port in (8080, 9090):
    server = socketserver.ThreadingTCPServer((os.environ["POD_IP"], port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
threading.Event().wait()
"""
IDLE = "import threading; threading.Event().wait()"


def pod(namespace, name, labels, node, program):
    container = {"name": "main", "image": "docker.io/library/python:3.12-slim", "command": ["python3", "-c", program],
                 "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                 "ports": [{"name": "http", "containerPort": 8080}, {"name": "metrics", "containerPort": 9090}],
                 "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}
    if program == IDLE:
        del container["ports"], container["readinessProbe"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node, "containers": [container],
                     "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("netpol"))
    assert lab.network_policy.enforced, lab.network_policy.reason
    for name in ("web", "guest"):
        assert call(lab, "POST", "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})[0] == 201
    pods = [("web", "server", {"app": "server"}, "lab-gpu", SERVER),          # another node than the API's
            ("web", "local", {"app": "local"}, "lab-server", SERVER),         # the API server's own node
            ("web", "client", {"app": "client"}, "lab-cpu", IDLE),
            ("web", "other", {"app": "other"}, "lab-cpu", IDLE),
            ("guest", "visitor", {"app": "client"}, "lab-cpu", IDLE)]
    for namespace, name, labels, node, program in pods:
        assert call(lab, "POST", "/api/v1/namespaces/%s/pods" % namespace,
                    pod(namespace, name, labels, node, program))[0] == 201
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "server", "namespace": "web"},
               "spec": {"selector": {"app": "server"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}
    assert call(lab, "POST", "/api/v1/namespaces/web/services", service)[0] == 201
    for name in ("server", "local"):
        wait_for(lambda n=name: ready(lab, "web", n), timeout=60)
    client = ip(lab, "web", "client")
    wait_for(lambda: reach(lab.state_dir, client, "server.web.svc.cluster.local", 80) == "open", timeout=30)
    yield lab
    lab.stop()


def ready(lab, namespace, name):
    status = call(lab, "GET", "/api/v1/namespaces/%s/pods/%s" % (namespace, name))[1].get("status") or {}
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


def ip(lab, namespace, name):
    return call(lab, "GET", "/api/v1/namespaces/%s/pods/%s" % (namespace, name))[1]["status"]["podIP"]


@pytest.fixture()
def policies(lab):
    """Creates policies in a test; deletes them, and waits until the lab's rules are gone, after it."""
    made = []

    def create(namespace, name, spec):
        body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        status, answer = call(lab, "POST", NETPOL % namespace, body)
        assert status == 201, answer
        made.append((namespace, name))
        wait_for(lambda: "%s/%s" % (namespace, name) in lab.network_policy.policies, timeout=10)
    yield create
    for namespace, name in made:
        assert call(lab, "DELETE", NETPOL % namespace + "/" + name)[0] == 200
    wait_for(lambda: lab.network_policy.applied is None, timeout=10)


def paths(lab, *pairs):
    """{(source pod, target): outcome} for (source, host, port) triples; source a pod name in web/guest."""
    found = {}
    for source, host, port in pairs:
        namespace, _, name = source.rpartition("/")
        found[(source, host, port)] = reach(lab.state_dir, ip(lab, namespace or "web", name), host, port)
    return found


def server(lab, name="server"):
    return ip(lab, "web", name)


def test_no_policy_leaves_every_path_open(lab):
    assert set(paths(lab, ("client", server(lab), 8080), ("other", server(lab), 9090),
                     ("guest/visitor", "server.web.svc.cluster.local", 80)).values()) == {"open"}
    assert lab.network_policy.applied is None  # nothing installed while no policy exists


def test_ingress_from_selected_pods_on_a_named_port_only(lab, policies):
    policies("web", "server-from-client", {
        "podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": "http"}]}]})
    target = server(lab)
    assert paths(lab, ("client", target, 8080), ("client", "server.web.svc.cluster.local", 80),
                 ("client", target, 9090), ("other", target, 8080), ("other", "server.web.svc.cluster.local", 80),
                 ("guest/visitor", target, 8080)) == {
        ("client", target, 8080): "open",
        ("client", "server.web.svc.cluster.local", 80): "open",
        ("client", target, 9090): "refused",                 # a port no rule names
        ("other", target, 8080): "refused",                  # a pod no peer selects
        ("other", "server.web.svc.cluster.local", 80): "refused",
        ("guest/visitor", target, 8080): "refused"}          # podSelector alone: the policy's namespace only
    # A pod no policy selects stays open to all.
    assert reach(lab.state_dir, ip(lab, "web", "other"), server(lab, "local"), 8080) == "open"


def test_namespace_selector_and_pod_selector_in_one_peer_is_an_and(lab, policies):
    policies("web", "server-from-guest-clients", {
        "podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "guest"}},
                               "podSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                                                                     "values": ["client"]}]}}]}]})
    target = server(lab)
    assert reach(lab.state_dir, ip(lab, "guest", "visitor"), target, 9090) == "open"     # no ports: every port
    assert reach(lab.state_dir, ip(lab, "web", "client"), target, 8080) == "refused"     # right labels, wrong namespace


def test_an_empty_ingress_list_isolates_but_the_pods_own_node_and_machine_still_reach_it(lab, policies):
    policies("web", "deny-all", {"podSelector": {}, "policyTypes": ["Ingress"]})
    assert reach(lab.state_dir, ip(lab, "web", "client"), server(lab), 8080) == "refused"
    # kube-router's "source is the pod's local node" exemption: the node's own address, and the machine.
    node = lab.network.node_address("lab-gpu")
    assert reach(lab.state_dir, node, server(lab), 8080) == "open"
    assert reach(lab.state_dir, lab.network.node_address("lab-cpu"), server(lab), 8080) == "refused"
    assert paths(lab, ("client", server(lab, "local"), 8080)) == {("client", server(lab, "local"), 8080): "refused"}


def test_ip_block_with_except(lab, policies):
    client, other = ip(lab, "web", "client"), ip(lab, "web", "other")
    policies("web", "server-from-block", {
        "podSelector": {"matchLabels": {"app": "server"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": lab.network.node_cidr("lab-cpu"), "except": [other + "/32"]}}],
                     "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]}]})
    assert reach(lab.state_dir, client, server(lab), 8080) == "open"        # inside the range of ports
    assert reach(lab.state_dir, client, server(lab), 9090) == "refused"
    assert reach(lab.state_dir, other, server(lab), 8080) == "refused"      # the except


def test_the_api_servers_proxy_comes_from_its_node_and_needs_a_rule_for_pods_elsewhere(lab, policies):
    proxy = "/api/v1/namespaces/web/services/server:80/proxy/"
    policies("web", "server-from-client", {
        "podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]})
    status, answer = through_api(lab, proxy)
    assert status == 503 and "connection refused" in answer.lower(), answer
    # On the API server's own node the same policy lets it in (kube-router's local-node exemption).
    assert through_api(lab, "/api/v1/namespaces/web/pods/local:8080/proxy/") == (200, "ok")
    with open(os.path.join(lab.state_dir, "network.json")) as handle:
        cidrs = json.load(handle)["api_server_cidrs"]
    assert cidrs == [lab.network.node_address("lab-server") + "/32"]
    policies("web", "server-from-api", {"podSelector": {"matchLabels": {"app": "server"}},
                                        "ingress": [{"from": [{"ipBlock": {"cidr": c}} for c in cidrs]}]})
    assert through_api(lab, proxy) == (200, "ok")


def through_api(lab, path):
    """(status, body) of a GET through the lab API's proxy."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (lab.port, path), timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_egress_only_to_what_a_rule_allows(lab, policies):
    outside = lab.external.server("paperless-ngx").server_address
    policies("web", "client-egress", {
        "podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "server"}}}], "ports": [{"port": "http"}]}]})
    client = ip(lab, "web", "client")
    assert reach(lab.state_dir, client, server(lab), 8080) == "open"
    assert reach(lab.state_dir, client, "server.web.svc.cluster.local", 80) == "open"   # through its Service
    assert reach(lab.state_dir, client, server(lab), 9090) == "refused"
    assert reach(lab.state_dir, client, server(lab, "local"), 8080) == "refused"
    assert reach(lab.state_dir, client, outside[0], outside[1]) == "refused"
    assert reach(lab.state_dir, ip(lab, "web", "other"), outside[0], outside[1]) == "open"  # not selected
    policies("web", "client-egress-outside", {
        "podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": outside[1]}]}]})
    assert reach(lab.state_dir, client, outside[0], outside[1]) == "open"


def test_rules_follow_the_pods_and_leave_with_the_lab(tmp_path):
    lab = start_lab(tmp_path)
    chain = "LABNP%d" % lab.slot
    try:
        assert call(lab, "POST", NETPOL % "default", {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "default"}, "spec": {"podSelector": {}}})[0] == 201
        wait_for(lambda: chain in iptables_rules(), timeout=10)
    finally:
        lab.stop()
    assert chain not in iptables_rules()


def iptables_rules():
    return subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=True).stdout
