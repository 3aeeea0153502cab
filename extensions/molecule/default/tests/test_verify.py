"""verify.yml on the converged lab: it passes, and each injected problem fails with its own line that names the fix.

(converge and idempotence already ran it as the last play of site.yml.)"""

from __future__ import annotations

import json
import time

from conftest import api, gpu_mode, master_key, playbook

FAILED_TASK = "Fail on the problems found"
SUMMARY_TASK = "Summary"


def verify(*extra):
    """(returncode, failure lines, summary lines, raw output) of verify.yml."""
    code, tasks, output = playbook("verify.yml", *extra)
    failures = tasks.get(FAILED_TASK, {}).get("msg", "")
    summary = tasks.get(SUMMARY_TASK, {}).get("msg", "").splitlines()
    return code, [line for line in failures.splitlines() if line], summary, output


def only_failure(failures, start):
    assert len(failures) == 1, failures
    assert failures[0].startswith(start), failures
    return failures[0]


def gpu_allocatable():
    return api("GET", "/api/v1/nodes/lab-gpu")[1]["status"]["allocatable"].get("nvidia.com/gpu")


def wait(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    raise AssertionError("not within %s s" % timeout)


def test_verify_passes_and_prints_one_table():
    code, failures, summary, output = verify()
    assert code == 0, output[-3000:]
    assert failures == []
    table = "\n".join(summary)
    for check in ("GPU node", "vLLM", "GPU driver", "Ollama models", "LiteLLM -> vllm-qwen",
                  "LiteLLM -> ollama-qwen", "Paperless-AI"):
        assert check in table, table
    assert "answered by vllm-qwen (mode ml" in table
    assert "the GPU is in use by ml/vllm-server-" in table, "in ml mode the driver check is skipped, and says so"
    assert master_key() not in output


def test_in_a_gpu_free_mode_verify_checks_the_driver_and_an_old_one_fails(in_ml_mode):
    code, result, output = gpu_mode("gaming")
    assert code == 0, output[-3000:]
    code, failures, summary, output = verify()
    assert code == 0, output[-3000:]
    assert any("GPU driver" in line and "OK" in line and "driver 580.95.05 (NVIDIA GeForce RTX 3060)" in line
               for line in summary), summary
    assert api("GET", "/api/v1/namespaces/ml/pods/vllm-server-verify-gpu")[0] == 404, "the check pod is gone"
    api("POST", "/lab/faults/gpu-driver", {"version": "535.261.03"})
    try:
        code, failures, summary, output = verify()
    finally:
        api("POST", "/lab/faults/gpu-driver", {"version": None})
    assert code != 0
    line = only_failure(failures, "GPU driver: driver 535.261.03 (NVIDIA GeForce RTX 3060) is too old: CUDA 13.0.3 "
                                  "of vllm-openai:v0.32.0 needs 580.65.06 or later")
    assert "set nvidia_driver_branch to 580 or later" in line


def test_a_placeholder_key_fails_and_is_not_printed():
    placeholder = "gsk_CHANGE-ME"
    code, failures, summary, output = verify("-e", json.dumps({"litellm_provider_keys": {"groq": placeholder}}))
    assert code != 0
    only_failure(failures, "groq key: litellm_provider_keys.groq is still the example placeholder; put the real key")
    assert placeholder not in output


def test_a_missing_ollama_model_fails():
    status, body = api("DELETE", "/api/v1/namespaces/ml/services/ollama:11434/proxy/api/delete",
                       {"model": "llama3.2:1b"})
    assert status == 200, body
    try:
        code, failures, summary, output = verify()
        assert code != 0
        only_failure(failures, "Ollama models: missing llama3.2:1b of qwen2.5:3b, llama3.2:1b; pull them: "
                               "ansible-playbook site.yml --tags ollama")
    finally:
        code, _, output = playbook("site.yml", "--tags", "ollama", json_output=False)
        assert code == 0, output[-3000:]
    assert verify()[0] == 0


def plugin_pods():
    return api("GET", "/api/v1/namespaces/kube-system/pods"
                      "?labelSelector=app.kubernetes.io%2Fname%3Dnvidia-device-plugin")[1]["items"]


def plugin_backing_off(restarts):
    """The device plugin's container waits in CrashLoopBackOff after at least ``restarts`` restarts."""
    statuses = [s for p in plugin_pods() for s in (p.get("status") or {}).get("containerStatuses") or []]
    return any(((s.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
               and s.get("restartCount", 0) >= restarts for s in statuses)


def test_no_gpu_advertised_by_the_node_fails():
    api("POST", "/lab/faults/device-plugin", {"fail": "ERROR_LIBRARY_NOT_FOUND"})
    try:
        wait(lambda: gpu_allocatable() == "0")
        # Between two back-offs the plugin runs for a moment ("restarting", rightly); the lab's kubelet
        # doubles its back-off from 1 s, so after 4 restarts the plugin waits 8 s, longer than verify
        # takes to read it: the state asserted below is the one verify sees.
        wait(lambda: plugin_backing_off(4))
        code, failures, summary, output = verify()
        assert code != 0
        line = only_failure(failures, "GPU node: lab-gpu advertises no nvidia.com/gpu; device plugin "
                                      "nvidia-device-plugin-")
        assert "CrashLoopBackOff" in line and "read the device plugin's log" in line
    finally:
        api("POST", "/lab/faults/device-plugin", {"fail": None})
        # As an operator would: delete the backing-off pod; its DaemonSet starts a fresh one at once
        # instead of after the back-off.
        for pod in plugin_pods():
            api("DELETE", "/api/v1/namespaces/kube-system/pods/%s" % pod["metadata"]["name"])
    wait(lambda: gpu_allocatable() == "1")


def paperless_ai(*extra):
    code, _, output = playbook("site.yml", "--tags", "paperless_ai", *extra, json_output=False)
    assert code == 0, output[-3000:]


def test_paperless_ai_with_a_token_paperless_ngx_refuses_fails_while_it_retries_and_once_it_gave_up():
    # Breaker 5's symptom: Paperless-AI v3.0.9 retries its setup check for 5 minutes (a request that
    # needs the verdict waits), then stays unconfigured. Its /health answers 200 throughout.
    wrong = "0123456789abcdef0123456789abcdef01234567"
    try:
        paperless_ai("-e", "paperless_ai_paperless_token=%s" % wrong)
        code, failures, summary, output = verify("-e", "_paperless_ai_verify_timeout=5")
        assert code != 0
        only_failure(failures, "Paperless-AI: no answer within 5 s: it is still checking its settings")
        assert wrong not in output
        # The lab fast-forwards the retries of the next pod: it gives up as the app does after 5 minutes.
        api("POST", "/lab/faults/paperless-ai-retries", {"attempts": 2, "delay": 0.5})
        paperless_ai("-e", "paperless_ai_paperless_token=%s" % wrong[::-1])
        code, failures, summary, output = verify()
        assert code != 0
        line = only_failure(failures, "Paperless-AI: not configured: its setup check failed, so it scans no document")
        assert "kubectl -n docs logs deploy/paperless-ai" in line and "paperless_ai_paperless_token" in line
    finally:
        api("POST", "/lab/faults/paperless-ai-retries", {})
        paperless_ai()
    code, failures, summary, output = verify()
    assert code == 0, failures
