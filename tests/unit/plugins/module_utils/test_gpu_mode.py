from __future__ import annotations

import datetime
import json

import pytest

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode

MODELS = [
    {"name": "vllm-qwen", "backend": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct-AWQ", "context": 8192},
    {"name": "vllm-r1", "backend": "vllm", "model": "r1-awq", "tokenizer": "r1-tok", "reasoning": True,
     "context": 16384},
]
CATALOG_MODES = {"ml": {"vllm_model": "vllm-qwen"}, "r1": {"vllm_model": "vllm-r1"}, "gaming": {"vllm_model": None}}
TABLE = _gpu_mode.mode_table(MODELS, CATALOG_MODES, ["--enforce-eager"], 8000)
NOW = datetime.datetime(2026, 11, 28, 12, 0, 0, tzinfo=datetime.timezone.utc)


def deployment(replicas=1, label="ml", served="vllm-qwen", generation=1, observed=1, status=None, last_applied=None):
    obj = {"metadata": {"name": "vllm-server", "labels": {}, "annotations": {}, "generation": generation},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app.kubernetes.io/name": "vllm"}},
                    "template": {"metadata": {"labels": {}}, "spec": {"containers": [{
                        "name": "vllm", "args": ["--model", "x", "--served-model-name", served],
                        "readinessProbe": {"exec": {"command": ["python3", "-c", "check", served]}}}]}}},
           "status": dict({"observedGeneration": observed, "replicas": replicas, "updatedReplicas": replicas,
                           "availableReplicas": replicas, "readyReplicas": replicas}, **(status or {}))}
    if label:
        obj["metadata"]["labels"][_gpu_mode.MODE_LABEL] = label
    if last_applied is not None:
        obj["metadata"]["annotations"][_gpu_mode.LAST_APPLIED] = last_applied
    return obj


def test_mode_table():
    assert TABLE["ml"] == {"vllm_model": "vllm-qwen", "args": [
        "--model", "Qwen/Qwen2.5-7B-Instruct-AWQ", "--served-model-name", "vllm-qwen", "--max-model-len", "8192",
        "--enforce-eager", "--port", "8000"]}
    # each mode's vLLM is started with its model's context from the catalog
    assert TABLE["r1"]["args"][:10] == ["--model", "r1-awq", "--served-model-name", "vllm-r1", "--tokenizer",
                                        "r1-tok", "--reasoning-parser", "deepseek_r1", "--max-model-len", "16384"]
    assert TABLE["gaming"] == {"vllm_model": None, "args": None}
    assert _gpu_mode.first_model_mode(TABLE) == "ml"


@pytest.mark.parametrize("obj, expected", [
    (None, None),
    ({}, None),
    (deployment(replicas=0, label="ml"), "gaming"),
    (deployment(label="ml"), "ml"),
    (deployment(label="r1", served="vllm-r1"), "r1"),
    # the label disagrees with what is served (an edit by hand): trust the args
    (deployment(label="r1", served="vllm-qwen"), "ml"),
    (deployment(label=None, served="vllm-r1"), "r1"),
    (deployment(label="turbo", served="unknown"), None),
], ids=["missing", "empty", "scaled-to-zero", "labelled-ml", "labelled-r1", "label-contradicted", "unlabelled",
        "unknown"])
def test_mode_of_deployment(obj, expected):
    assert _gpu_mode.mode_of_deployment(obj, CATALOG_MODES) == expected


def test_served_model_name_forms():
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["args"] = ["--served-model-name=vllm-r1"]
    assert _gpu_mode.served_model_name(obj) == "vllm-r1"
    obj["spec"]["template"]["spec"]["containers"][0]["args"] = ["--served-model-name"]
    assert _gpu_mode.served_model_name(obj) is None


def test_zero_replicas_without_a_free_mode_is_unknown():
    assert _gpu_mode.mode_of_deployment(deployment(replicas=0), {"ml": {"vllm_model": "vllm-qwen"}}) is None


@pytest.mark.parametrize("obj, done", [
    (deployment(), True),
    (deployment(generation=2, observed=1), False),
    (deployment(status={"availableReplicas": 0}), False),
    (deployment(status={"unavailableReplicas": 1}), False),
    (deployment(replicas=0, status={"replicas": 0, "availableReplicas": 0}), True),
    (deployment(replicas=0, status={"replicas": 1, "availableReplicas": 1}), False),
])
def test_rolled_out(obj, done):
    assert _gpu_mode.rolled_out(obj) is done


def test_switch_patch_to_a_model_mode_changes_args_probe_labels_and_replicas():
    patch = _gpu_mode.switch_patch(deployment(), "r1", TABLE)
    assert patch["metadata"] == {"labels": {_gpu_mode.MODE_LABEL: "r1"},
                                 "annotations": {_gpu_mode.MODEL_ANNOTATION: "vllm-r1"}}
    assert patch["spec"]["replicas"] == 1
    container = patch["spec"]["template"]["spec"]["containers"][0]
    assert container["name"] == "vllm" and container["args"] == TABLE["r1"]["args"]
    assert container["readinessProbe"]["exec"]["command"][-1] == "vllm-r1"
    assert patch["spec"]["template"]["metadata"]["labels"] == {_gpu_mode.MODE_LABEL: "r1"}


def test_switch_patch_to_a_gpu_free_mode_only_scales_and_marks():
    patch = _gpu_mode.switch_patch(deployment(), "gaming", TABLE)
    assert patch["spec"]["replicas"] == 0
    assert "spec" not in patch["spec"]["template"], "the args stay as they are"
    assert patch["metadata"]["annotations"][_gpu_mode.MODEL_ANNOTATION] == ""


def test_switch_patch_keeps_the_last_applied_configuration_in_step():
    applied = json.dumps(deployment())
    patch = _gpu_mode.switch_patch(deployment(last_applied=applied), "r1", TABLE)
    updated = json.loads(patch["metadata"]["annotations"][_gpu_mode.LAST_APPLIED])
    assert updated["metadata"]["labels"][_gpu_mode.MODE_LABEL] == "r1"
    assert updated["spec"]["template"]["spec"]["containers"][0]["args"] == TABLE["r1"]["args"]
    assert updated["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"][-1] == "vllm-r1"
    assert updated["spec"]["replicas"] == 1
    gaming = json.loads(_gpu_mode.updated_last_applied(applied, "gaming", TABLE))
    assert gaming["spec"]["replicas"] == 0
    assert gaming["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "vllm-qwen"
    assert _gpu_mode.updated_last_applied("not json", "r1", TABLE) == "not json"


def pod(name="vllm-server-1", conditions=None, statuses=None, deleting=False, phase="Pending", gpu=None,
        namespace="ml"):
    obj = {"metadata": {"name": name, "namespace": namespace},
           "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpu}} if gpu else {}}]},
           "status": {"phase": phase, "conditions": conditions or [], "containerStatuses": statuses or []}}
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return obj


@pytest.mark.parametrize("obj, reason", [
    (pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                      "message": "0/2 nodes are available: 1 Insufficient nvidia.com/gpu."}]),
     "pod vllm-server-1 is Pending: no GPU free (0/2 nodes are available: 1 Insufficient nvidia.com/gpu.)"),
    (pod(statuses=[{"name": "vllm", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                    "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]),
     "pod vllm-server-1: container vllm was OOMKilled (exit code 137)"),
    (pod(statuses=[{"name": "vllm", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 1,
                                                 "message": "ValueError: model not found\nmore"}}}]),
     "pod vllm-server-1: CrashLoopBackOff: ValueError: model not found"),
    (pod(statuses=[{"name": "vllm", "state": {"waiting": {"reason": "ImagePullBackOff",
                                                          "message": "Back-off pulling image"}}}]),
     "pod vllm-server-1: ImagePullBackOff: Back-off pulling image"),
    (pod(statuses=[{"name": "vllm", "state": {"waiting": {"reason": "ContainerCreating"}}}]), None),
    (pod(statuses=[{"name": "vllm", "state": {"running": {}}, "ready": False}]), None),
], ids=["no-gpu", "oom", "crashloop", "image-pull", "creating", "loading"])
def test_pod_failure(obj, reason):
    assert _gpu_mode.pod_failure(obj) == reason


def test_rollout_progress():
    waiting = deployment(generation=2, observed=2, status={"availableReplicas": 0, "updatedReplicas": 1})
    assert _gpu_mode.rollout_progress(waiting, [pod()]) == ("waiting", "0 of 1 replicas available")
    oom = pod(statuses=[{"name": "vllm", "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                         "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
    assert _gpu_mode.rollout_progress(waiting, [oom])[0] == "failed"
    assert _gpu_mode.rollout_progress(waiting, [dict(oom, metadata=dict(oom["metadata"],
                                                     deletionTimestamp="x"))])[0] == "waiting"
    assert _gpu_mode.rollout_progress(deployment(), [pod(phase="Running")]) == ("done", "rolled out")
    stopped = deployment(replicas=0, status={"replicas": 0, "availableReplicas": 0})
    assert _gpu_mode.rollout_progress(stopped, [pod(deleting=True)]) == ("waiting", "1 pod(s) still terminating")
    assert _gpu_mode.rollout_progress(stopped, []) == ("done", "rolled out")


def test_a_failed_pod_does_not_fail_a_rollout_to_no_replicas():
    # A switch from gaming to ml whose load was OOMKilled rolls back to gaming (replicas 0) before the
    # controller has seen the new count: the OOMKilled pod of the same template is still there.
    stopping = deployment(replicas=0, generation=4, observed=3, status={"replicas": 1, "availableReplicas": 0})
    oom = pod(statuses=[{"name": "vllm", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}])
    assert _gpu_mode.rollout_progress(stopping, [oom]) == ("waiting", "1 pod(s) still stopping")


def test_a_failed_pod_of_the_previous_template_does_not_fail_the_rollout():
    # Right after a switch the Deployment's status already shows the new generation while the old
    # ReplicaSet's pod (here OOMKilled serving r1) is not deleted yet: waiting, not failed.
    switching = deployment(generation=3, observed=3, status={"availableReplicas": 0, "updatedReplicas": 0})
    old = pod(statuses=[{"name": "vllm", "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}])
    old["spec"]["containers"] = [{"name": "vllm", "args": ["--model", "y", "--served-model-name", "vllm-r1"]}]
    assert _gpu_mode.rollout_progress(switching, [old]) == ("waiting", "0 of 1 replicas available")
    serving_qwen = ["--model", "x", "--served-model-name", "vllm-qwen"]
    current = dict(old, spec={"containers": [{"name": "vllm", "args": serving_qwen}]})
    assert _gpu_mode.rollout_progress(switching, [current]) == (
        "failed", "pod vllm-server-1: container vllm was OOMKilled (exit code 137)")


def test_gpu_holders():
    pods = [pod("vllm", gpu="1", phase="Running"), pod("plugin", phase="Running"),
            pod("finished", gpu="1", phase="Succeeded"), pod("game", gpu=1, phase="Running", namespace="games")]
    assert _gpu_mode.gpu_holders(pods) == ["ml/vllm", "games/game"]


@pytest.mark.parametrize("lease, state", [
    (None, ("free", 0.0)),
    ({"spec": {}}, ("free", 0.0)),
    ({"spec": {"holderIdentity": "me"}}, ("mine", 0.0)),
    ({"spec": {"holderIdentity": "other", "renewTime": "2026-11-28T11:59:00.000000Z", "leaseDurationSeconds": 120}},
     ("held", 60.0)),
    ({"spec": {"holderIdentity": "other", "renewTime": "2026-11-28T11:50:00.000000Z", "leaseDurationSeconds": 120}},
     ("expired", 0.0)),
    ({"spec": {"holderIdentity": "other"}}, ("expired", 0.0)),
], ids=["none", "released", "mine", "live", "expired", "no-time"])
def test_lease_state(lease, state):
    assert _gpu_mode.lease_state(lease, "me", NOW) == state


def test_micro_time_round_trips():
    assert _gpu_mode.parse_time(_gpu_mode.micro_time(NOW)) == NOW


@pytest.mark.parametrize("obj, target, stops", [
    (deployment(), "gaming", True),
    (deployment(), "r1", True),
    (deployment(label="r1", served="vllm-r1"), "ml", True),
    (deployment(), "ml", False),
    (deployment(replicas=0), "ml", False),
    (deployment(replicas=0), "gaming", False),
    # serving something no mode names (an edit by hand): any mode stops it
    (deployment(label=None, served="unknown"), "ml", True),
], ids=["ml-gaming", "ml-r1", "r1-ml", "ml-ml", "gaming-ml", "gaming-gaming", "unknown-ml"])
def test_stops_serving(obj, target, stops):
    """Whether a switch takes away the model vLLM serves (then the fallback tier must be warm first)."""
    assert _gpu_mode.stops_serving(obj, target, TABLE) is stops


# -- the drain ----------------------------------------------------------------------------------

def test_the_service_patch_selects_the_target_and_keeps_the_last_applied_in_step():
    applied = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "vllm-api"},
               "spec": {"selector": {"app.kubernetes.io/name": "vllm", _gpu_mode.MODE_LABEL: "ml"}}}
    service = {"metadata": {"annotations": {_gpu_mode.LAST_APPLIED: json.dumps(applied)}},
               "spec": {"selector": dict(applied["spec"]["selector"])}}
    patch = _gpu_mode.service_patch(service, "r1")
    assert patch["spec"] == {"selector": {_gpu_mode.MODE_LABEL: "r1"}}
    after = json.loads(patch["metadata"]["annotations"][_gpu_mode.LAST_APPLIED])
    assert after["spec"]["selector"] == {"app.kubernetes.io/name": "vllm", _gpu_mode.MODE_LABEL: "r1"}
    assert _gpu_mode.service_patch(service, "ml") is None, "already selecting ml: nothing to patch"
    assert _gpu_mode.service_patch({"spec": {"selector": {"app": "vllm"}}}, "ml") == \
        {"spec": {"selector": {_gpu_mode.MODE_LABEL: "ml"}}}


def test_requests_in_vllm_reads_its_scheduler_gauges():
    # As vLLM v0.32.0's /metrics writes them (prometheus_client text format, one sample per engine).
    text = ('# HELP vllm:num_requests_running Number of requests in model execution batches.\n'
            '# TYPE vllm:num_requests_running gauge\n'
            'vllm:num_requests_running{engine="0",model_name="vllm-qwen"} 2.0\n'
            'vllm:num_requests_running{engine="1",model_name="vllm-qwen"} 1.0\n'
            '# TYPE vllm:num_requests_waiting gauge\n'
            'vllm:num_requests_waiting{engine="0",model_name="vllm-qwen"} 4.0\n'
            'vllm:num_requests_waiting_by_reason{engine="0",model_name="vllm-qwen",reason="capacity"} 4.0\n'
            'vllm:num_requests_running_total 9.0\n')
    assert _gpu_mode.requests_in_vllm(text) == 7
    assert _gpu_mode.requests_in_vllm("# nothing here\nprocess_cpu_seconds_total 1.0\n") is None


def test_a_pod_is_in_its_services_endpoints_only_ready_and_not_deleting():
    ready = {"metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert _gpu_mode.pod_ready(ready)
    assert not _gpu_mode.pod_ready({"metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert not _gpu_mode.pod_ready(dict(ready, metadata={"deletionTimestamp": "2026-11-30T00:00:00Z"}))
