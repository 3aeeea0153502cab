"""verify.yml's judgements: each problem is one failed row whose line names the fix; keys are never copied."""

from __future__ import annotations

import pytest

from ansible_collections.homelab.inference.plugins.plugin_utils import _verify

REQUIREMENT = {"image": "docker.io/vllm/vllm-openai:v0.32.0", "tag": "v0.32.0", "cuda": "13.0.3",
               "min_driver": "580.65.06"}
MODELS = [
    {"name": "vllm-qwen", "backend": "vllm", "timeout": 60},
    {"name": "ollama-qwen", "backend": "ollama", "timeout": 120},
    {"name": "openai-gpt4o", "backend": "openai", "timeout": 30},
    {"name": "vllm-r1", "backend": "vllm", "timeout": 60},
    {"name": "groq/llama", "backend": "groq", "parallel": True},
    {"name": "gemini/flash", "backend": "gemini", "parallel": True},
]
CHAIN = ["vllm-qwen", "ollama-qwen", "openai-gpt4o"]


def node(name="lab-gpu", gpus="1"):
    return {"metadata": {"name": name}, "status": {"allocatable": {"nvidia.com/gpu": gpus}}}


def pod(name, node_name="lab-gpu", gpus=1, phase="Running", namespace="ml"):
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node_name, "containers": [{"name": "c", "resources": {"limits": limits}}]},
            "status": {"phase": phase}}


def answer(status=200, group=None, message=None, elapsed=0.2):
    body = {"error": {"message": message}} if message else {"choices": []}
    return {"status": status, "headers": {"x-litellm-model-group": group} if group else {}, "json": body,
            "text": "", "elapsed": elapsed}


def test_the_gpu_node_must_advertise_the_gpu():
    assert _verify.gpu_node([node()], [], "nvidia.com/gpu=true")["status"] == "ok"
    crashing = pod("nvidia-device-plugin-x", gpus=0, namespace="kube-system")
    crashing["status"]["containerStatuses"] = [{"state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                                "lastState": {"terminated": {"exitCode": 1}}}]
    failed = _verify.gpu_node([node(gpus="0")], [crashing], "nvidia.com/gpu=true")
    assert failed["status"] == "fail"
    assert "lab-gpu advertises no nvidia.com/gpu" in failed["detail"]
    assert "nvidia-device-plugin-x: CrashLoopBackOff (last exit code 1)" in failed["detail"]
    assert "device plugin's log" in failed["fix"]
    assert _verify.gpu_node([], [], "nvidia.com/gpu=true")["detail"] == "no node is labelled nvidia.com/gpu=true"


def test_who_holds_the_gpu():
    pods = [pod("vllm-server-1"), pod("done", phase="Succeeded"), pod("cpu", gpus=0), pod("other", node_name="x")]
    assert _verify.gpu_holders([node()], pods) == {"holders": ["ml/vllm-server-1"], "free": 0}
    assert _verify.gpu_holders([node()], pods[1:]) == {"holders": [], "free": 1}


@pytest.mark.parametrize("version, status", [("580.95.05", "ok"), ("580.65.06", "ok"), ("590.44.01", "ok"),
                                             ("580.65.05", "fail"), ("570.124.06", "fail"),
                                             ("535.261.03", "fail")])
def test_the_driver_against_the_images_cuda(version, status):
    result = _verify.driver(REQUIREMENT, {"status": {"phase": "Succeeded"}},
                            "%s, NVIDIA GeForce RTX 3060, 1 MiB, 12288 MiB\n" % version)
    assert result["status"] == status
    assert "CUDA 13.0.3 of vllm-openai:v0.32.0 needs 580.65.06 or later" in result["detail"]
    if status == "fail":
        assert result["detail"].startswith("driver %s (NVIDIA GeForce RTX 3060) is too old" % version)
        assert "nvidia_driver_branch to 580 or later" in result["fix"]


def test_a_gpu_pod_that_could_not_run_nvidia_smi_says_why():
    failed = {"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {
        "reason": "StartError", "exitCode": 128, "message": 'exec: "nvidia-smi": executable file not found'}}}]}}
    result = _verify.driver(REQUIREMENT, failed, "")
    assert result["status"] == "fail"
    assert "(StartError, exit code 128)" in result["detail"] and "nvidia-smi" in result["detail"]
    assert "container toolkit" in result["fix"]
    assert "No devices were found" in _verify.driver(REQUIREMENT, {}, "No devices were found\n")["detail"]


def test_a_busy_gpu_skips_the_driver_check_and_says_how_to_include_it():
    skipped = _verify.driver_skipped(["ml/vllm-server-1"])
    assert skipped["status"] == "skip" and "ml/vllm-server-1" in skipped["detail"]
    assert "mode=gaming" in skipped["fix"]
    assert "no GPU is advertised" in _verify.driver_skipped([])["detail"]


@pytest.mark.parametrize("value, state", [
    ("", "missing"), (None, "missing"), ("  ", "missing"), ("sk-CHANGE-ME", "placeholder"),
    ("gsk_CHANGE-ME", "placeholder"), ("changeme", "placeholder"), ("<your key>", "placeholder"),
    ("your-api-key", "placeholder"), ("xxxxxxxx", "placeholder"), ("sk-proj-a8Zk3", "set"), ("AIzaSyD-9", "set")])
def test_key_states(value, state):
    assert _verify.key_state(value) == state


def test_secret_errors_name_each_unusable_key_and_never_its_value():
    keys = {"litellm_master_key": "sk-0123456789abcdef0123456789abcdef", "short": "sk-0123456789",
            "empty": " ", "example": "sk-CHANGE-ME-0123456789abcdef0123456789", "client": "any-length-is-fine"}
    errors = _verify.secret_errors(keys, {"litellm_master_key": 32, "short": 32, "example": 32})
    fix = "put a random key in the vault (openssl rand -hex 24 makes one of 48 characters)"
    assert errors == ["short is shorter than 32 characters: " + fix, "empty is empty: " + fix,
                      "example is an example placeholder: " + fix]
    assert not any(value.strip() and value in line for value in keys.values() for line in errors)
    assert _verify.secret_errors({"litellm_master_key": "x" * 31 + "y"}, {"litellm_master_key": 32}) == []
    assert _verify.secret_errors({}) == []


def test_the_plan_asks_the_modes_model_the_tiers_it_can_and_one_model_per_key():
    states = {"openai": "set", "groq": "placeholder", "gemini": "missing"}
    plan = _verify.gateway_plan(MODELS, CHAIN, "vllm-r1", "r1", states)
    assert [(a["name"], a["label"]) for a in plan["ask"]] == [
        ("vllm-r1", "mode r1"), ("ollama-qwen", "chain tier 2"), ("openai-gpt4o", "chain tier 3")]
    assert [(r["check"], r["status"]) for r in plan["rows"]] == [("LiteLLM -> vllm-qwen", "skip")]
    assert "not served in mode r1" in plan["rows"][0]["detail"]
    gaming = _verify.gateway_plan(MODELS, CHAIN, "", "gaming", {"openai": "missing", "groq": "set", "gemini": "set"})
    assert [a["name"] for a in gaming["ask"]] == ["ollama-qwen", "groq/llama", "gemini/flash"]
    # What service_request sends for each: one token, 10 s beyond the model's own timeout.
    assert plan["ask"][1]["request"] == {"body": {"model": "ollama-qwen", "max_tokens": 1,
                                                  "messages": [{"role": "user", "content": "ping"}]}, "timeout": 130}
    assert gaming["ask"][1]["request"]["timeout"] == 40


def test_gateway_rows():
    states = {"openai": "set", "groq": "placeholder", "gemini": "missing"}
    plan = _verify.gateway_plan(MODELS, CHAIN, "vllm-qwen", "ml", states)
    rows = _verify.gateway_rows(MODELS, plan, [answer(group="vllm-qwen"), answer(group="openai-gpt4o"),
                                               answer(group="openai-gpt4o")], states)
    by_check = {r["check"]: r for r in rows}
    assert by_check["LiteLLM -> vllm-qwen"]["status"] == "ok"
    assert by_check["LiteLLM -> ollama-qwen"]["status"] == "fail"
    assert by_check["LiteLLM -> ollama-qwen"]["detail"] == (
        "ollama-qwen did not answer (chain tier 2); openai-gpt4o answered in its place")
    assert by_check["openai key"]["status"] == "ok"
    assert by_check["groq key"]["status"] == "fail" and "placeholder" in by_check["groq key"]["detail"]
    assert by_check["gemini key"]["status"] == "warn" and "gemini/flash cannot answer" in by_check["gemini key"]["detail"]


def test_a_provider_that_refuses_its_key_fails_the_key_not_the_master_key():
    states = {"openai": "set"}
    plan = _verify.gateway_plan(MODELS[:3], CHAIN, "vllm-qwen", "ml", states)
    refused = answer(401, message="litellm.AuthenticationError: AuthenticationError: OpenAIException - Incorrect "
                                  "API key provided")
    rows = _verify.gateway_rows(MODELS[:3], plan, [answer(group="vllm-qwen"), answer(group="ollama-qwen"),
                                                   refused], states)
    key = next(r for r in rows if r["check"] == "openai key")
    assert key["status"] == "fail" and "answered 401: the provider refused the key" in key["detail"]
    assert "Incorrect API key" not in key["detail"], "providers quote part of the key in this message"
    gemini = _verify.model_answer({"name": "gemini/flash", "backend": "gemini"}, answer(
        400, message="litellm.BadRequestError: GeminiException - API key not valid. Please pass a valid API key."),
        "gemini key")
    assert gemini["detail"] == "gemini/flash (gemini key) answered 400: the provider refused the key"
    gateway = _verify.model_answer(MODELS[0], answer(401, message="Authentication Error, Invalid or missing API key"),
                                   "mode ml")
    assert gateway["detail"] == "LiteLLM refused the master key (401)"
    unanswered = _verify.model_answer(MODELS[0], {"failed": True, "msg": "cannot reach the Kubernetes API"}, "mode ml")
    assert unanswered["status"] == "fail" and "cannot reach" in unanswered["detail"]


def test_a_gateway_without_a_ready_pod_is_one_line_not_one_per_model():
    states = {"openai": "set"}
    plan = _verify.gateway_plan(MODELS[:3], CHAIN, "vllm-qwen", "ml", states)
    away = {"status": 503, "json": {"kind": "Status", "code": 503, "reason": "ServiceUnavailable",
                                    "message": 'no endpoints available for service "litellm"'}}
    rows = _verify.gateway_rows(MODELS[:3], plan, [away, away, away], states)
    assert _verify.failures(rows) == [
        "LiteLLM: no answer through the API server's service proxy: no endpoints available for service \"litellm\"; "
        "check LiteLLM's pod (kubectl get pods -A -l app.kubernetes.io/name=litellm) and re-run site.yml --tags litellm"]
    assert {r["check"]: r["status"] for r in rows}["openai key"] == "skip"


def test_ollama_rows():
    assert _verify.ollama_models(["qwen2.5:3b"], [])["status"] == "ok"
    missing = _verify.ollama_models(["qwen2.5:3b", "llama3.2:1b"], ["qwen2.5:3b"])
    assert missing["detail"] == "missing qwen2.5:3b of qwen2.5:3b, llama3.2:1b" and "--tags ollama" in missing["fix"]


@pytest.mark.parametrize("failure", [
    "cannot list Ollama's models: service ml/ollama:11434 has no ready pod (503: no endpoints)",  # ollama_model's
    "service ml/ollama:11434 has no ready pod (503: no endpoints)",
])
def test_an_ollama_that_cannot_list_its_models_is_said_once(failure):
    failed = _verify.ollama_models(["qwen2.5:3b"], [], failure)
    assert failed["status"] == "fail", failed
    assert failed["detail"] == "cannot list Ollama's models: service ml/ollama:11434 has no ready pod (503: no endpoints)"


HEALTHY = {"status": 200, "json": {"status": "healthy"}}


@pytest.mark.parametrize("configured, status, start", [
    ({"status": 200, "json": {"isProcessing": False}}, "ok", "configured"),
    ({"status": 302, "headers": {"location": "http://api/api/v1/namespaces/docs/services/paperless-ai:3000/proxy/setup"}},
     "fail", "not configured: its setup check failed"),
    ({"status": 302, "headers": {"location": "/settings"}}, "fail", "not configured"),
    ({"status": 302, "headers": {"location": "/login"}}, "fail", "it refused paperless_ai_access_key"),
    ({"failed": True, "timed_out": True,
      "msg": "service docs/paperless-ai:3000 did not answer within 30s (through the Kubernetes API's service proxy)"},
     "fail",
     "no answer within 30 s: it is still checking its settings"),
    (None, "warn", "/health answered 200, which Paperless-AI v3.0.9 answers configured or not"),
])
def test_paperless_ai_is_judged_by_a_route_behind_its_key_not_by_health(configured, status, start):
    result = _verify.paperless(HEALTHY, configured, "docs", "paperless-ai", 30)
    assert result["status"] == status and result["detail"].startswith(start), result
    if status == "fail" and "setup check" in start:
        assert "kubectl -n docs logs deploy/paperless-ai" in result["fix"]
    down = _verify.paperless({"status": 503, "text": "no endpoints"}, configured, "docs", "paperless-ai", 30)
    assert down["status"] == "fail" and down["detail"].startswith("/health answered 503")


def test_the_summary_and_the_failure_lines():
    rows = [_verify.row("GPU node", "ok", "fine"), _verify.row("groq key", "fail", "a placeholder", "set it")]
    assert _verify.table(rows)[1:] == ["GPU node  OK    fine", "groq key  FAIL  a placeholder"]
    assert _verify.failures(rows) == ["groq key: a placeholder; set it"]


def test_no_row_holds_a_key():
    secret = "sk-proj-very-secret-123"
    states = _verify.key_states({"openai": secret}, MODELS[:3])
    assert states == {"openai": "set"}
    assert list(_verify.key_states({}, MODELS)) == ["openai", "groq", "gemini"], "the catalog's cloud backends"
    plan = _verify.gateway_plan(MODELS[:3], CHAIN, "vllm-qwen", "ml", states)
    rows = _verify.gateway_rows(MODELS[:3], plan, [answer(group=n) for n in ("vllm-qwen", "ollama-qwen",
                                                                             "openai-gpt4o")], states)
    rows.append(_verify.secret_placeholder("LiteLLM master key", secret, "fix"))
    assert secret not in repr(rows) + repr(plan) + repr(states)
