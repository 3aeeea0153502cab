"""Short GPU pods on the lab, as verify.yml runs them: a pod that runs to
completion (restartPolicy Never), the FAKE nvidia-smi the NVIDIA runtime
puts into it, its log through pods/log, and the faults that verify.yml must
catch (an old driver, a device plugin that cannot use the driver)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from lab_fixture import DEVICE_PLUGIN, call, start_lab, vllm_deployment, wait_for

PODS = "/api/v1/namespaces/ml/pods"
QUERY = ["nvidia-smi", "--query-gpu=driver_version,name,memory.used", "--format=csv,noheader,nounits"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("gpu-pods"))
    call(lab, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
    call(lab, "POST", "/apis/apps/v1/namespaces/kube-system/daemonsets", DEVICE_PLUGIN)
    wait_for(lambda: gpu_count(lab) == "1")
    yield lab
    lab.stop()


def gpu_count(lab):
    return call(lab, "GET", "/api/v1/nodes/lab-gpu")[1]["status"]["allocatable"].get("nvidia.com/gpu")


def gpu_pod(name, command=QUERY, runtime="nvidia", gpus=1):
    container = {"name": "smi", "image": "docker.io/vllm/vllm-openai:v0.32.0", "command": command}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    spec = {"restartPolicy": "Never", "containers": [container], "nodeSelector": {"nvidia.com/gpu": "true"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    if runtime:
        spec["runtimeClassName"] = runtime
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ml"}, "spec": spec}


def finished(lab, name):
    def phase():
        pod = call(lab, "GET", "%s/%s" % (PODS, name))[1]
        return pod if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") else None
    return wait_for(phase)


def log(lab, name, query=""):
    url = "http://127.0.0.1:%d%s/%s/log%s" % (lab.port, PODS, name, query)
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def remove(lab, name):
    call(lab, "DELETE", "%s/%s" % (PODS, name))
    wait_for(lambda: call(lab, "GET", "%s/%s" % (PODS, name))[0] == 404)


def test_a_gpu_pod_runs_nvidia_smi_to_completion_and_frees_the_gpu(lab):
    assert call(lab, "POST", PODS, gpu_pod("smi"))[0] == 201
    pod = finished(lab, "smi")
    assert pod["status"]["phase"] == "Succeeded"
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0, "restartPolicy Never: not restarted"
    status, content_type, text = log(lab, "smi")
    assert (status, content_type) == (200, "text/plain")
    assert text.strip() == "580.95.05, NVIDIA GeForce RTX 3060, 1"
    # A finished pod holds no GPU: the next GPU pod is scheduled while it still exists.
    assert call(lab, "POST", PODS, gpu_pod("smi-2"))[0] == 201
    assert finished(lab, "smi-2")["status"]["phase"] == "Succeeded"
    remove(lab, "smi")
    remove(lab, "smi-2")


def test_an_old_driver_is_what_nvidia_smi_reports(lab):
    call(lab, "POST", "/lab/faults/gpu-driver", {"version": "535.261.03"})
    try:
        call(lab, "POST", PODS, gpu_pod("old", command=["nvidia-smi", "--query-gpu=driver_version",
                                                         "--format=csv"]))
        finished(lab, "old")
        assert log(lab, "old")[2].splitlines() == ["driver_version", "535.261.03"]
    finally:
        call(lab, "POST", "/lab/faults/gpu-driver", {"version": None})
        remove(lab, "old")


def test_without_the_nvidia_runtime_the_container_cannot_start(lab):
    call(lab, "POST", PODS, gpu_pod("plain", runtime=None))
    pod = finished(lab, "plain")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (pod["status"]["phase"], terminated["reason"], terminated["exitCode"]) == ("Failed", "StartError", 128)
    assert 'exec: "nvidia-smi": executable file not found in $PATH' in terminated["message"]
    remove(lab, "plain")


def test_without_a_gpu_nvidia_smi_finds_no_device(lab):
    call(lab, "POST", PODS, gpu_pod("nogpu", gpus=0))
    pod = finished(lab, "nogpu")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 6
    assert log(lab, "nogpu")[2].strip() == "No devices were found"
    remove(lab, "nogpu")


def smi(lab, name, query, host_pid=True):
    """nvidia-smi's output in a pod beside whatever holds the GPU: all GPUs by the runtime's
    NVIDIA_VISIBLE_DEVICES=all (no device of its own), the host's processes with hostPID."""
    pod = gpu_pod(name, ["nvidia-smi", query, "--format=csv,noheader,nounits"], gpus=0)
    pod["spec"]["containers"][0]["env"] = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]
    pod["spec"]["hostPID"] = host_pid
    assert call(lab, "POST", PODS, pod)[0] == 201
    assert finished(lab, name)["status"]["phase"] == "Succeeded"
    text = log(lab, name)[2]
    remove(lab, name)
    return text.strip()


def vllm_running(lab, running=True):
    def check():
        pods = call(lab, "GET", PODS + "?labelSelector=app%3Dvllm")[1]["items"]
        statuses = [s for p in pods for s in p.get("status", {}).get("containerStatuses") or []]
        return any("running" in s["state"] for s in statuses) if running else not pods
    wait_for(check, timeout=60)


def scale_vllm(lab, replicas):
    status, body = call(lab, "PATCH", "/apis/apps/v1/namespaces/ml/deployments/vllm",
                        {"spec": {"replicas": replicas}}, "application/merge-patch+json")
    assert status == 200, body
    vllm_running(lab, running=bool(replicas))


def test_a_running_vllm_holds_its_share_of_gpu_memory_until_it_ends(lab):
    assert call(lab, "POST", "/apis/apps/v1/namespaces/ml/deployments", vllm_deployment())[0] == 201
    try:
        vllm_running(lab)
        assert smi(lab, "mem", "--query-gpu=memory.used") == str(1 + int(12288 * 0.9))
        [app] = smi(lab, "apps", "--query-compute-apps=pid,process_name,used_memory").splitlines()
        assert app.split(", ")[1:] == ["VLLM::EngineCore", str(int(12288 * 0.9))], app
        assert smi(lab, "apps-own", "--query-compute-apps=pid,process_name", host_pid=False) == "", \
            "a container sees only its own PID namespace's processes"
        scale_vllm(lab, 0)
        assert smi(lab, "mem-free", "--query-gpu=memory.used") == "1"
        assert smi(lab, "apps-none", "--query-compute-apps=pid,process_name") == ""
    finally:
        call(lab, "DELETE", "/apis/apps/v1/namespaces/ml/deployments/vllm")
        vllm_running(lab, running=False)


def test_the_leak_fault_keeps_a_vllms_memory_after_it_ends_until_cleared(lab):
    assert call(lab, "POST", "/apis/apps/v1/namespaces/ml/deployments", vllm_deployment())[0] == 201
    try:
        vllm_running(lab)
        assert call(lab, "POST", "/lab/faults/gpu-leak", {"on": True})[0] == 200
        scale_vllm(lab, 0)
        assert smi(lab, "leak-mem", "--query-gpu=memory.used") == str(1 + int(12288 * 0.9))
        [app] = smi(lab, "leak-apps", "--query-compute-apps=process_name,used_gpu_memory").splitlines()
        assert app == "VLLM::EngineCore, %d" % int(12288 * 0.9), app
        assert call(lab, "POST", "/lab/faults/gpu-leak", {"on": False})[0] == 200
        assert smi(lab, "leak-gone", "--query-gpu=memory.used") == "1"
    finally:
        call(lab, "POST", "/lab/faults/gpu-leak", {"on": False})
        call(lab, "DELETE", "/apis/apps/v1/namespaces/ml/deployments/vllm")
        vllm_running(lab, running=False)


def test_pods_log_errors_are_the_api_servers(lab):
    status, content_type, body = log(lab, "missing")
    assert status == 404 and '"pods \\"missing\\" not found"' in body
    two = gpu_pod("two", gpus=0)
    two["spec"]["containers"].append(dict(two["spec"]["containers"][0], name="other"))
    call(lab, "POST", PODS, two)
    finished(lab, "two")
    status, dummy, body = log(lab, "two")
    assert status == 400 and "a container name must be specified for pod two, choose one of: [smi other]" in body
    assert log(lab, "two", "?container=nope")[0] == 400
    assert log(lab, "two", "?container=other&tailLines=1")[2].strip() == "No devices were found"
    # Following a container that has stopped gives its log and ends, as the kubelet's follow does.
    assert log(lab, "two", "?container=other&follow=true")[2].strip() == "No devices were found"
    assert log(lab, "two", "?container=other&timestamps=true")[0] == 501, "not emulated: said loudly"
    remove(lab, "two")


def test_a_device_plugin_that_cannot_use_the_driver_takes_the_gpu_off_the_node(lab):
    call(lab, "POST", "/lab/faults/device-plugin", {"fail": "ERROR_LIBRARY_NOT_FOUND"})
    try:
        wait_for(lambda: gpu_count(lab) == "0")

        seen = set()

        def failed_runs():
            seen.add(gpu_count(lab))
            status = call(lab, "GET", "/api/v1/namespaces/kube-system/pods")[1]["items"][0]["status"]
            container = status["containerStatuses"][0]
            return (container["lastState"].get("terminated", {}).get("exitCode") == 1
                    and container["restartCount"] >= 3)
        wait_for(failed_runs, interval=0.02)  # killed first (137), then every restart fails
        # The plugin never registers without NVML, not even while a restart of it runs.
        assert seen == {"0"}
    finally:
        call(lab, "POST", "/lab/faults/device-plugin", {"fail": None})
    wait_for(lambda: gpu_count(lab) == "1", timeout=40)
