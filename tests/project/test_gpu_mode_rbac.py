"""gpu_mode's RBAC rights are exactly the requests it makes.

The lab is converged with site.yml, then gpu_mode.yml runs through every path
of a switch (status, check mode, a verified no-op, a crashed run's lock taken
over, ml -> r1 -> gaming -> ml, a failed load rolled back) with a kubeconfig
of the gpu-mode ServiceAccount, which the lab authenticates and authorises by
RBAC (tools/lab/api/rbac.py, held to Kubernetes' semantics by
test_lab_rbac.py): the rights are enough. The lab's API records each request,
and every rule the gpu_mode_access role renders, each of its verbs and names,
must have been needed: the rights are no more than enough. With one rule taken
away, the switch fails with the 403 line naming the right."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode_rights
from ansible_collections.homelab.inference.plugins.modules import gpu_mode
from helpers import ansible_playbook, gpu_mode_host, install_gpu_mode_host
from lab.api.rbac import BOOTSTRAP_ROLES, attributes, rule_allows
from lab_fixture import start_lab
from testkit.kube_access import service_account_token, token_kubeconfig

SUBJECT = {"kind": "ServiceAccount", "name": "gpu-mode", "namespace": "ml"}
EXPIRED_LEASE = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "gpu-mode", "namespace": "ml"},
                 "spec": {"holderIdentity": "crashed@host/1", "leaseDurationSeconds": 60,
                          "acquireTime": "2020-01-01T00:00:00.000000Z", "renewTime": "2020-01-01T00:00:00.000000Z"}}


def grants(objects):
    """(namespace the rules apply in, or None for everywhere, rules) for each binding of SUBJECT."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o["rules"]
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    found = []
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding") or SUBJECT not in binding["subjects"]:
            continue
        namespace = binding["metadata"].get("namespace")
        ref = binding["roleRef"]
        rules = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        found.append((namespace if binding["kind"] == "RoleBinding" else None, rules))
    return found


def allowed_by(granted, request):
    """Every (binding, rule) index pair that allows the request."""
    return [(b, r) for b, (namespace, rules) in enumerate(granted) for r, rule in enumerate(rules)
            if (namespace is None or request["namespace"] == namespace) and rule_allows(rule, request)]


def discovery_allows(request):
    """Kubernetes' default system:discovery ClusterRole, bound to every authenticated user."""
    return any(rule_allows(rule, request) for rule in BOOTSTRAP_ROLES["system:discovery"])


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The objects the gpu_mode_access role renders when enabled (in the deploy play site.yml imports)."""
    target = tmp_path_factory.mktemp("render")
    ansible_playbook("playbooks/deploy.yml", "--tags", "render", "-e", "render_dir=%s" % target,
                     "-e", "gpu_mode_access_enabled=true", check=True)
    with open(os.path.join(str(target), "gpu-mode-access.yaml")) as handle:
        return [o for o in yaml.safe_load_all(handle) if o]


def host_command_runs(base, lab, env, token):
    """The gpu_mode_host role installed into a directory with ``token``, then its gpu-mode command run as on
    the GPU worker through each path of a switch."""
    root = base / "host"
    runs = {"install": install_gpu_mode_host(root, lab.state_dir, env, token=token),
            "reinstall": install_gpu_mode_host(root, lab.state_dir, env, token=token), "root": root}
    runs["status"] = gpu_mode_host(root, "status")
    runs["check"] = gpu_mode_host(root, "r1", "--check")
    runs["r1"] = gpu_mode_host(root, "r1", "--json")
    runs["ml"] = gpu_mode_host(root, "ml")
    runs["bad"] = gpu_mode_host(root, "turbo")
    lab.faults["fail_models"]["vllm-r1"] = "oom"
    runs["failed"] = gpu_mode_host(root, "r1")
    lab.faults["fail_models"].pop("vllm-r1")
    runs["after"] = gpu_mode_host(root, "status")
    return runs


def without_rule(lab, resource, run):
    """``run()``'s result with the gpu-mode Role's rule on ``resource`` taken away, then put back."""
    role = next(r for r in lab.store.list("roles", "ml")
                if any(resource in rule.get("resources", []) for rule in r["rules"]) and r["metadata"]["name"]
                in {b["roleRef"]["name"] for b in lab.store.list("rolebindings", "ml") if SUBJECT in b["subjects"]})
    kept = role["rules"]
    lab.store.put("roles", dict(role, rules=[rule for rule in kept if resource not in rule.get("resources", [])]))
    try:
        return {"result": run(), "removed": [rule for rule in kept if resource in rule.get("resources", [])],
                "deployment": lab.store.get("deployments", "ml", "vllm-server")}
    finally:
        lab.store.put("roles", dict(lab.store.get("roles", "ml", role["metadata"]["name"]), rules=kept))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Every request gpu_mode.yml made on a converged lab, through each path of a switch."""
    base = tmp_path_factory.mktemp("rbac")
    lab = start_lab(base, load_delay=0.5)
    for name in ("tmp", "converge-tmp"):
        os.makedirs(str(base / name))
    # gpu_mode.yml's own TMPDIR: the kubernetes client keeps its discovery cache there, so its
    # first run reads discovery as a fresh controller would.
    env = {"LAB_STATE_DIR": lab.state_dir, "TMPDIR": str(base / "tmp"),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"}

    def gpu_mode(mode, *extra):
        # As the gpu-mode ServiceAccount: the lab refuses what its rights do not allow.
        result = ansible_playbook("gpu_mode.yml", "-e", "mode=%s" % mode, "-e", "inference_kubeconfig=%s" % scoped,
                                  *extra, env=env)
        report = json.loads(result.stdout[result.stdout.index("{"):])
        task = next(t for t in report["plays"][0]["tasks"] if t["task"]["name"].startswith("Switch the GPU to"))
        return task["hosts"]["localhost"]

    converge_env = dict(env, ANSIBLE_STDOUT_CALLBACK="default", TMPDIR=str(base / "converge-tmp"))
    try:
        # The stack gpu_mode switches (verify.yml's checks are not the point here), then the role again
        # on its own: the molecule lab scenario proves a whole second site.yml changes nothing.
        converge = ansible_playbook("site.yml", "--skip-tags", "verify", "-e", "gpu_mode_access_enabled=true",
                                    env=converge_env)
        assert converge.returncode == 0, converge.stdout[-3000:]
        again = ansible_playbook("site.yml", "--tags", "gpu_mode_access", "-e", "gpu_mode_access_enabled=true",
                                 env=converge_env)
        # Tokens of the gpu-mode ServiceAccount (as `kubectl create token` gets them), before the recording.
        scoped = token_kubeconfig(lab.state_dir, service_account_token(lab.state_dir, "ml", "gpu-mode"),
                                  base / "gpu-mode.kubeconfig")
        host_token = service_account_token(lab.state_dir, "ml", "gpu-mode")
        applied = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
                   for plural in ("serviceaccounts", "roles", "rolebindings", "clusterroles", "clusterrolebindings")
                   for o in lab.store.list(plural)}
        lab.api.request_log = []
        outcomes = {"status": gpu_mode("status"), "check": gpu_mode("r1", "--check"), "noop": gpu_mode("ml")}
        lab.store.create("leases", json.loads(json.dumps(EXPIRED_LEASE)))  # a crashed run's lock
        for mode in ("r1", "gaming", "ml"):
            outcomes[mode] = gpu_mode(mode)
        lab.faults["fail_models"]["vllm-r1"] = "oom"
        outcomes["failed"] = gpu_mode("r1")
        lab.faults["fail_models"].pop("vllm-r1")
        outcomes["after"] = gpu_mode("status")
        # vLLM's GPU memory outlives it (the lab's leak fault): gaming fails naming the process, and
        # passes once the memory is freed.
        lab.faults["gpu_leak"] = True
        outcomes["leaked"] = gpu_mode("gaming")
        lab.faults["gpu_leak"], lab.gpu_leaks = False, []
        outcomes["freed"] = gpu_mode("gaming")
        outcomes["back"] = gpu_mode("ml")
        outcomes["host"] = host_command_runs(base, lab, env, host_token)
        log, lab.api.request_log = lab.api.request_log, None
        outcomes["without_lock_rule"] = without_rule(lab, "leases", lambda: gpu_mode("r1"))
        yield {"log": log, "outcomes": outcomes, "again": again, "applied": applied,
               "events": [e["reason"] for e in sorted(lab.store.list("events", "ml"),
                                                       key=lambda e: e["metadata"]["name"])]}
    finally:
        lab.stop()


def test_the_role_applies_its_objects_and_applying_them_again_changes_nothing(recorded, shipped):
    again = recorded["again"]
    assert again.returncode == 0 and re.search(r"localhost\s+:.* changed=0 ", again.stdout), again.stdout[-2000:]
    assert "homelab.inference.manifest : Apply the objects of gpu-mode-access" in again.stdout
    for obj in shipped:
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        assert key in recorded["applied"], key
        stored = recorded["applied"][key]
        assert stored.get("rules") == obj.get("rules") and stored.get("subjects") == obj.get("subjects"), key


def test_the_scenario_went_through_every_path_of_a_switch(recorded):
    outcomes = recorded["outcomes"]
    assert (outcomes["status"]["mode"], outcomes["status"]["changed"]) == ("ml", False)
    assert outcomes["check"]["changed"] is True and outcomes["check"]["mode"] == "r1"
    assert outcomes["noop"]["changed"] is False and outcomes["noop"]["verified"]["vllm_models"] == ["vllm-qwen"]
    for mode, previous in (("r1", "ml"), ("gaming", "r1"), ("ml", "gaming")):
        assert outcomes[mode]["changed"] is True and not outcomes[mode].get("failed"), outcomes[mode]
        assert outcomes[mode]["previous_mode"] == previous
    assert outcomes["gaming"]["verified"]["gpu_holders"] == []
    assert outcomes["failed"]["failed"] is True and outcomes["failed"]["rolled_back"] is True
    assert outcomes["failed"]["msg"].endswith("rolled back to ml (verified)"), outcomes["failed"]["msg"]
    assert outcomes["after"]["mode"] == "ml"
    assert outcomes["gaming"]["verified"]["gpu_memory"] == {"used_mib": 1, "max_mib": 1024, "processes": []}
    leaked = outcomes["leaked"]
    assert leaked["failed"] is True and leaked["rolled_back"] is False and leaked["mode"] == "gaming", leaked
    assert re.fullmatch(r"switch to gaming failed: the GPU is not free: \d+ MiB used, at most 1024 allowed "
                        r"\(gpu_free_max_mib\), held by VLLM::EngineCore \(pid \d+, \d+ MiB\); left in gaming with "
                        r"vLLM stopped, not rolled back \(vLLM could not load beside that memory\): end that process "
                        r"or restart the GPU node", leaked["msg"]), leaked["msg"]
    assert outcomes["freed"]["changed"] is False and not outcomes["freed"].get("failed"), outcomes["freed"]
    assert outcomes["freed"]["verified"]["gpu_memory"]["used_mib"] == 1
    assert outcomes["back"]["mode"] == "ml" and outcomes["back"]["previous_mode"] == "gaming"
    # Each switch made or tried, in order, as an Event on the Deployment (not the no-op, check or status runs).
    # Then the host command's: r1, ml, and r1 failed and rolled back.
    assert recorded["events"] == ["GpuModeSwitched"] * 3 + ["GpuModeRolledBack", "GpuModeSwitchFailed",
                                                            "GpuModeSwitched"] + ["GpuModeSwitched"] * 2 + [
        "GpuModeRolledBack"], recorded["events"]


def test_the_host_command_installs_once_and_keeps_its_credentials_to_root(recorded):
    runs = recorded["outcomes"]["host"]
    assert runs["install"].returncode == 0, runs["install"].stdout[-3000:]
    again = runs["reinstall"]
    assert again.returncode == 0 and re.search(r"localhost\s+:.* changed=0 ", again.stdout), again.stdout[-2000:]
    etc = runs["root"] / "etc"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in etc.iterdir()} == {
        "gpu-mode.json": "0o644", "gpu-mode.token": "0o600", "gpu-mode.litellm-key": "0o600"}
    config = (etc / "gpu-mode.json").read_text()
    secrets = [(etc / "gpu-mode.token").read_text().strip(), (etc / "gpu-mode.litellm-key").read_text().strip()]
    assert len(secrets[0]) == 43 and secrets[1].startswith("sk-")  # a TokenRequest's token, the gateway key
    for secret in secrets:
        assert secret not in config and secret not in runs["install"].stdout
    # It ran on the system Python (HOST_PATH); that it needs nothing beyond the standard library is
    # test_kube_rest.py's test_the_host_code_is_closed_and_needs_only_the_standard_library.


def test_the_host_command_switches_as_the_module_does(recorded):
    outcomes = recorded["outcomes"]
    runs = outcomes["host"]
    # The module's summary line and the command's are one function's.
    assert outcomes["status"]["summary"] == "GPU mode: ml (vllm-qwen), unchanged"
    assert (runs["status"].returncode, runs["status"].stdout) == (0, "GPU mode: ml (vllm-qwen), unchanged\n")
    assert outcomes["check"]["summary"] == "Would switch the GPU: r1 (vllm-r1), was ml"
    assert runs["check"].stdout == "Would switch the GPU: r1 (vllm-r1), was ml\n", runs["check"]
    summary, result = runs["r1"].stdout.splitlines()
    assert runs["r1"].returncode == 0 and runs["r1"].stderr == "", runs["r1"]
    assert re.fullmatch(r"GPU mode: r1 \(vllm-r1\), was ml, in [\d.]+ s; verified: vllm_models, litellm", summary)
    assert re.fullmatch(r"GPU mode: ml \(vllm-qwen\), was gaming, in [\d.]+ s; verified: vllm_models, litellm",
                        outcomes["back"]["summary"])
    result = json.loads(result)
    assert result["verified"]["litellm"]["answered_by"] == "vllm-r1" and result["drained"] >= 0
    assert set(result["timings"]) >= {"lock", "drain", "patch", "rollout", "verify", "total"}
    assert re.fullmatch(r"GPU mode: ml \(vllm-qwen\), was r1, in [\d.]+ s; verified: vllm_models, litellm\n",
                        runs["ml"].stdout), runs["ml"]
    # Bad input: one line naming the field and the fix, and nothing asked of the cluster.
    assert (runs["bad"].returncode, runs["bad"].stdout) == (2, "")
    assert runs["bad"].stderr == "gpu-mode: mode: 'turbo' is not a mode; use one of gaming, ml, r1, or status\n"
    failed = runs["failed"]
    assert failed.returncode == 1 and failed.stdout == "", failed
    assert re.fullmatch(r"gpu-mode: switch to r1 failed: pod vllm-server-\S+ .*was OOMKilled \(exit code 137\); "
                        r"rolled back to ml \(verified\)\n", failed.stderr), failed.stderr
    assert runs["after"].stdout == "GPU mode: ml (vllm-qwen), unchanged\n"


def test_without_one_rule_the_switch_fails_with_the_403_line_naming_the_right(recorded):
    removed = recorded["outcomes"]["without_lock_rule"]
    result = removed["result"]
    assert result["failed"] is True and removed["removed"], removed
    assert re.fullmatch(r"reading Lease ml/gpu-mode at https://127\.\d+\.0\.1:\d+: 403 Forbidden for "
                        r"system:serviceaccount:ml:gpu-mode; "
                        r'grant get on leases\.coordination\.k8s\.io "gpu-mode" in namespace ml '
                        r"\(all the rights gpu_mode needs: role homelab\.inference\.gpu_mode_access, "
                        r"docs/gpu_mode\.md\)", result["msg"]), result["msg"]
    # Refused before it changed anything: still ml, as before.
    assert removed["deployment"]["metadata"]["labels"]["homelab.inference/gpu-mode"] == "ml"


def test_every_request_is_allowed_by_the_shipped_rules(recorded, shipped):
    granted = grants(shipped)
    assert granted, "no binding grants the ServiceAccount anything"
    denied = []
    for method, path, query in recorded["log"]:
        request = attributes(method, path, query)
        if request["resource"] and not allowed_by(granted, request):
            denied.append("%s %s?%s -> %s" % (method, path, query, request))
    assert denied == []


def test_the_other_requests_are_api_discovery_which_every_authenticated_user_may_read(recorded):
    others = [attributes(*entry) for entry in recorded["log"]]
    others = [r for r in others if not r["resource"]]
    assert others, "the first run reads discovery"
    assert [r for r in others if not discovery_allows(r)] == []


def test_every_shipped_rule_verb_and_name_was_needed(recorded, shipped):
    """Each (rule, verb, name) allowed some request that no other rule allowed: nothing is granted in excess."""
    granted = grants(shipped)
    requests = [attributes(*entry) for entry in recorded["log"]]
    used = set()
    for request in (r for r in requests if r["resource"]):
        allowing = allowed_by(granted, request)
        if len(allowing) == 1:
            b, r = allowing[0]
            used.add((b, r, request["verb"], request["name"] if granted[b][1][r].get("resourceNames") else None))
    wanted = {(b, r, verb, name) for b, (namespace, rules) in enumerate(granted) for r, rule in enumerate(rules)
              for verb in rule["verbs"] for name in (rule.get("resourceNames") or [None])}
    assert sorted(wanted - used, key=str) == []


def test_the_authorizer_here_denies_what_the_rules_do_not_grant(shipped):
    # Guards the tests above against an authorizer that allows too much.
    granted = grants(shipped)
    for method, path, query in (
            ("GET", "/api/v1/namespaces/ml/secrets/litellm-secrets", ""),
            ("PATCH", "/apis/apps/v1/namespaces/ml/deployments/litellm", ""),
            ("GET", "/apis/apps/v1/namespaces/ml/deployments", ""),
            ("GET", "/apis/apps/v1/namespaces/docs/deployments/vllm-server", ""),
            ("PUT", "/apis/apps/v1/namespaces/ml/deployments/vllm-server/scale", ""),
            ("GET", "/api/v1/nodes/lab-gpu", ""),
            ("DELETE", "/api/v1/namespaces/ml/pods/vllm-server-1", ""),
            ("GET", "/api/v1/namespaces/ml/pods", "watch=true"),
            ("GET", "/api/v1/namespaces/ml/services/litellm%3A4000/proxy/v1%2Fmodels", ""),
            ("POST", "/api/v1/namespaces/ml/services/vllm-api%3A8000/proxy/v1%2Fchat%2Fcompletions", ""),
            ("GET", "/api/v1/namespaces/ml/services/ollama%3A11434/proxy/api%2Ftags", ""),
            ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ml/leases/other", ""),
            ("DELETE", "/apis/coordination.k8s.io/v1/namespaces/ml/leases", "")):
        assert allowed_by(granted, attributes(method, path, query)) == [], (method, path, query)
    assert allowed_by(granted, attributes("POST", "/api/v1/namespaces/ml/services/litellm%3A4000/proxy/"
                                                  "v1%2Fchat%2Fcompletions"))
    assert allowed_by(granted, attributes("GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dlab-gpu"))


def test_request_attributes_follow_kube_apiserver():
    assert attributes("GET", "/api/v1/namespaces/ml/services/vllm-api%3A8000/proxy/v1%2Fmodels") == {
        "resource": True, "verb": "get", "group": "", "resource_name": "services", "subresource": "proxy",
        "namespace": "ml", "name": "vllm-api:8000"}
    assert attributes("GET", "/apis/apps/v1/namespaces/ml/deployments")["verb"] == "list"
    assert attributes("GET", "/api/v1/pods", "watch=1")["verb"] == "watch"
    assert attributes("GET", "/api/v1/nodes", "fieldSelector=metadata.name%3Dlab-gpu")["name"] == "lab-gpu"
    assert attributes("DELETE", "/api/v1/namespaces/ml/pods")["verb"] == "deletecollection"
    assert attributes("GET", "/api/v1/namespaces/ml")["resource_name"] == "namespaces"
    assert attributes("GET", "/apis/apps/v1") == {"resource": False, "verb": "get", "path": "/apis/apps/v1"}


def test_the_rights_assume_the_modules_own_defaults():
    spec = gpu_mode.argument_spec()
    assert _gpu_mode_rights.DEFAULTS == {name: spec[name]["default"] for name in _gpu_mode_rights.DEFAULTS}
