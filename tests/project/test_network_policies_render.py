"""The deploy roles' NetworkPolicies as `site.yml --tags render` writes them (issue 18, third part): who may
reach vLLM, Ollama and LiteLLM, where Paperless-AI may go, the API server's address from the lab's
network.json or the roles' default, the switches, and the Paperless-ngx peers derived from its URL. Render
only: no lab runs (each render gets a state directory of its own, with or without network.json)."""

from __future__ import annotations

import glob
import json
import os
import re

import kubernetes_validate
import pytest
import yaml

from helpers import ROOT, ansible_playbook

KUBERNETES_VERSION = "1.31.0"
ROLES = ("vllm", "ollama", "litellm", "paperless_ai")
# The rest of site.yml's apps, skipped to keep each render short.
OTHERS = ("nvidia_device_plugin", "namespaces", "gpu_mode_access", "gpu_monitoring", "gpu_on_demand")
API_SERVER = [{"ipBlock": {"cidr": "10.42.0.0/32"}}]   # the roles' default: k3s's first server's flannel address
LITELLM_PODS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ml"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "litellm"}}}
HTTP = [{"port": "http", "protocol": "TCP"}]
CHAT_UI = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "open-webui"}}}


def namespace(name):
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


def render(target, state_dir, *extra, roles=ROLES, inventory=()):
    skipped = [r for r in ROLES if r not in roles] + list(OTHERS)
    return ansible_playbook(*inventory, "site.yml", "--tags", "render", "--skip-tags", ",".join(skipped),
                            "-e", "render_dir=%s" % target, *extra,
                            env={"LAB_STATE_DIR": str(state_dir)}, check=True)


def objects(directory):
    found = []
    for path in sorted(glob.glob(os.path.join(str(directory), "*.yaml"))):
        with open(path) as handle:
            found += [d for d in yaml.safe_load_all(handle) if d]
    return found


def policies(directory):
    return {o["metadata"]["name"]: o for o in objects(directory) if o["kind"] == "NetworkPolicy"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """No lab (no network.json), the optional peers on: monitoring, the IngressRoute, a chat UI."""
    target = tmp_path_factory.mktemp("render")
    render(target, tmp_path_factory.mktemp("state"), "-e", json.dumps({
        "inference_monitoring": True, "litellm_ingress_host": "litellm.home.example.com",
        "litellm_network_policy_ingress_from": [CHAT_UI]}))
    return objects(target)


def by_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_each_policy_is_valid_and_selects_its_deployments_pods_by_the_pods_labels(rendered):
    policies_ = by_kind(rendered, "NetworkPolicy")
    deployments = by_kind(rendered, "Deployment")
    assert sorted(policies_) == ["litellm", "ollama", "paperless-ai", "vllm-server"]
    for name, policy in policies_.items():
        kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
        pod = deployments[name]["spec"]["template"]
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items(), name
        assert selector == deployments[name]["spec"]["selector"]["matchLabels"], name
        assert policy["metadata"]["namespace"] == deployments[name]["metadata"]["namespace"]
        if "Ingress" in policy["spec"]["policyTypes"]:   # the named port is the container's
            names = {p["name"] for c in pod["spec"]["containers"] for p in c["ports"]}
            assert {p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]} <= names, name


def test_vllm_and_ollama_let_in_only_litellm_and_the_api_servers_proxy(rendered):
    policies_ = by_kind(rendered, "NetworkPolicy")
    for name in ("vllm-server", "ollama"):
        spec = policies_[name]["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        assert spec["ingress"] == [{"from": [LITELLM_PODS] + API_SERVER, "ports": HTTP}], name


def test_litellm_lets_in_its_clients_prometheus_traefik_and_the_extra_peers(rendered):
    spec = by_kind(rendered, "NetworkPolicy")["litellm"]["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    paperless_ai = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "docs"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "paperless-ai"}}}
    traefik = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "traefik"}}}
    assert spec["ingress"] == [{"from": [paperless_ai] + API_SERVER + [namespace("monitoring"), traefik, CHAT_UI],
                                "ports": HTTP}]


def test_paperless_ai_reaches_only_dns_litellm_and_paperless_ngx(rendered):
    spec = by_kind(rendered, "NetworkPolicy")["paperless-ai"]["spec"]
    assert spec["policyTypes"] == ["Egress"] and "ingress" not in spec
    dns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
           "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}
    assert spec["egress"] == [
        {"to": [dns], "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
        {"to": [LITELLM_PODS], "ports": HTTP},
        # No lab: the lab inventory's fallback, the namespace the role derives from the Service's name.
        {"to": [namespace("docs")], "ports": [{"port": 8000, "protocol": "TCP"}]}]
    litellm = by_kind(rendered, "Deployment")["litellm"]["spec"]["template"]["spec"]["containers"][0]
    assert "http" in [p["name"] for p in litellm["ports"]]


def test_the_lab_inventory_takes_the_labs_addresses_from_its_network_json(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "network.json").write_text(json.dumps({"api_server_cidrs": ["127.100.0.0/32"],
                                                    "outside_cidrs": ["127.200.0.0/16"]}))
    render(tmp_path / "out", state, roles=("vllm", "paperless_ai"))
    found = policies(tmp_path / "out")
    assert found["vllm-server"]["spec"]["ingress"][0]["from"][1:] == [{"ipBlock": {"cidr": "127.100.0.0/32"}}]
    # The lab's Paperless-ngx is a FAKE outside the cluster, whatever its name says.
    assert found["paperless-ai"]["spec"]["egress"][2] == {"to": [{"ipBlock": {"cidr": "127.200.0.0/16"}}],
                                                          "ports": [{"port": 8000, "protocol": "TCP"}]}


def test_each_switch_turns_its_policy_off(tmp_path):
    render(tmp_path / "out", tmp_path / "state", "-e", json.dumps({"%s_network_policy" % r: False for r in ROLES}))
    found = objects(tmp_path / "out")
    assert not [o for o in found if o["kind"] == "NetworkPolicy"]
    assert len(by_kind(found, "Deployment")) == 4


def test_the_homelab_inventory_derives_the_paperless_ngx_peers_from_its_service_url(tmp_path):
    vault = {name: "CANARY-%s-0c5f1e2a" % name for name in re.findall(
        r"^(vault_\w+):", open(os.path.join(ROOT, "inventories/homelab/group_vars/all/vault.yml.example")).read(),
        re.M)}
    render(tmp_path / "out", tmp_path / "state", "-e", json.dumps(vault), roles=("paperless_ai",),
           inventory=("-i", "inventories/homelab"))
    assert policies(tmp_path / "out")["paperless-ai"]["spec"]["egress"][2] == {
        "to": [namespace("docs")], "ports": [{"port": 8000, "protocol": "TCP"}]}


# paperless_ai_paperless_url -> the role's default peers and port.
DERIVED = [
    ("http://paperless.docs.svc.cluster.local:8000/api", [namespace("docs")], 8000),
    ("http://paperless.archive.svc/api", [namespace("archive")], 80),
    ("https://paperless.archive/api", [namespace("archive")], 443),
    ("https://paperless.example.com/api", [{"ipBlock": {"cidr": "0.0.0.0/0"}}], 443),
    ("http://192.168.1.20:8000/api", [{"ipBlock": {"cidr": "192.168.1.20/32"}}], 8000),
    ("", [], 0),
]


def test_the_paperless_ngx_peers_and_port_derived_from_the_url(tmp_path):
    playbook = tmp_path / "derive.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "vars_files": [os.path.join(ROOT, "roles", "paperless_ai", "defaults", "main.yml")],
        "tasks": [{"name": "Derive", "loop": [url for url, _, _ in DERIVED],
                   "vars": {"paperless_ai_paperless_url": "{{ item }}"},
                   "ansible.builtin.debug": {"msg": {"peers": "{{ paperless_ai_network_policy_paperless_peers }}",
                                                     "port": "{{ paperless_ai_network_policy_paperless_port }}"}}}]}]))
    result = ansible_playbook("-i", "localhost,", "-c", "local", str(playbook),
                              env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}, check=True)
    task = json.loads(result.stdout[result.stdout.index("{"):])["plays"][0]["tasks"][0]
    derived = {r["item"]: (r["msg"]["peers"], r["msg"]["port"]) for r in task["hosts"]["localhost"]["results"]}
    assert derived == {url: (peers, port) for url, peers, port in DERIVED}
