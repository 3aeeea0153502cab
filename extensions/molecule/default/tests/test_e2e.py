"""End-to-end proof on the running lab, after check, converge and idempotence."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import re
import threading
import time
import urllib.error
import urllib.request

import yaml

from lab import TOOLS
from conftest import (PORT, ROOT, STATE, api, decoded_secret, deployment, gpu_mode, litellm, master_key,
                      paperless_ai_key, playbook, service_url)

CATALOG = os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")


def pods(namespace, selector):
    return api("GET", "/api/v1/namespaces/%s/pods?labelSelector=%s" % (namespace, selector))[1]["items"]


# -- what converge made ----------------------------------------------------------------

def test_every_object_is_present_with_its_checksums():
    for namespace, name in (("ml", "vllm-server"), ("ml", "ollama"), ("ml", "litellm"), ("docs", "paperless-ai")):
        obj = deployment(namespace, name)
        assert obj["status"].get("availableReplicas") == 1, name
    for namespace, name in (("ml", "litellm"), ("docs", "paperless-ai")):
        annotations = deployment(namespace, name)["spec"]["template"]["metadata"]["annotations"]
        assert len(annotations["checksum/config"]) == 64 and len(annotations["checksum/secret"]) == 64
    daemonset = api("GET", "/apis/apps/v1/namespaces/kube-system/daemonsets/nvidia-device-plugin")[1]
    assert daemonset["status"]["numberReady"] == 1
    assert api("GET", "/apis/node.k8s.io/v1/runtimeclasses/nvidia")[0] == 200
    for namespace in ("ml", "docs"):
        labels = api("GET", "/api/v1/namespaces/%s" % namespace)[1]["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "homelab-inference"


def test_the_real_litellm_serves_the_rendered_config():
    with open(CATALOG) as handle:
        catalog = yaml.safe_load(handle)
    status, body, _ = litellm("GET", "/v1/models")
    assert status == 200
    # The converged lab is in ml: a vLLM model of another mode, outside the chain, is not listed.
    other_modes = {m["vllm_model"] for name, m in catalog["inference_gpu_modes"].items() if name != "ml"}
    hidden = other_modes - set(catalog["inference_fallback_chain"]) - {None}
    assert hidden == {"vllm-r1"}
    assert sorted(m["id"] for m in body["data"]) == sorted(
        {m["name"] for m in catalog["inference_models"]} - hidden | {"default"})
    status, body, headers = litellm("POST", "/v1/chat/completions",
                                    {"model": "default", "messages": [{"role": "user", "content": "hi"}]})
    # `default` is the chain head's alias: answered by vLLM itself, not by a fallback tier.
    assert status == 200 and headers["x-litellm-model-group"] == "default"
    assert headers["x-litellm-attempted-fallbacks"] == "0"
    assert body["choices"][0]["message"]["content"] == "Hello from the fake model."


def test_paperless_used_litellm_with_the_managed_model_and_key_despite_a_stale_env():
    """The FAKE Paperless-AI reads its .env as v3.0.9 does (no unquoting), validates against the lab's
    FAKE Paperless-ngx and LiteLLM, marks itself configured and classifies within the derived budget."""
    from lab.workloads.paperless_ai import load_config
    spec = importlib.util.spec_from_file_location("_catalog", os.path.join(ROOT, "plugins/module_utils/_catalog.py"))
    _catalog = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(_catalog)
    volume = os.path.join(STATE, "volumes", "pvc", "docs", "paperless-ai")
    report_path = os.path.join(volume, "lab-client-report.json")
    deadline, report = time.monotonic() + 90, {}
    while time.monotonic() < deadline:
        if os.path.exists(report_path):
            with open(report_path) as handle:
                report = json.load(handle)
            documents = (report.get("scan") or {}).get("documents") or []
            if len(documents) == 2 and all("request" in d or "error" in d for d in documents):
                break
        time.sleep(0.5)
    # Paperless-AI calls the gateway with its own client key, which may call the chain's models only.
    key_hash = hashlib.sha256(paperless_ai_key().encode()).hexdigest()
    assert paperless_ai_key() != master_key()
    assert report["configured"] is True, report
    validation = report["validations"][-1]
    assert validation["paperless"] == {"url": "http://paperless.docs.svc.cluster.local:8000/api/documents/",
                                       "status": 200}
    assert validation["custom"]["base_url"] == "http://litellm.ml.svc.cluster.local:4000/v1"
    assert validation["custom"]["model"] == "vllm-qwen" and validation["custom"]["status"] == 200
    assert validation["custom"]["api_key_sha256"] == key_hash
    with open(CATALOG) as handle:
        catalog = yaml.safe_load(handle)
    context, _ = _catalog.usable_context(catalog["inference_models"], catalog["inference_fallback_chain"], "vllm-qwen")
    budget = _catalog.paperless_ai_budget(context, 1000)
    assert report["scan"]["user_id"] is not None
    for document in report["scan"]["documents"]:
        request = document["request"]
        assert request["base_url"] == "http://litellm.ml.svc.cluster.local:4000/v1"
        assert request["model"] == "vllm-qwen" and request["api_key_sha256"] == key_hash
        assert request["status"] == 200 and request["answered_by"] == "vllm-qwen"
        assert (document["token_limit"], document["response_tokens"]) == (budget["token_limit"],
                                                                           budget["response_tokens"])
        assert document["estimated_request_tokens"] + document["response_tokens"] <= document["token_limit"]
    long_document = report["scan"]["documents"][1]
    assert long_document["sent_chars"] < long_document["content_chars"], "the long document is cut to the budget"
    with open(os.path.join(volume, ".env")) as handle:
        env_file = handle.read()
    values = load_config(env_file)
    assert values["CUSTOM_API_KEY"] == paperless_ai_key() and values["AI_PROVIDER"] == "custom"
    assert values["TOKEN_LIMIT"] == str(budget["token_limit"])
    assert values["TAGS"] == "invoice,receipt", "settings the role does not manage are kept"
    assert "sk-stale" not in env_file and "ollama" not in env_file


def test_paperless_ai_answers_its_own_health_and_its_configured_state():
    status, body = api("GET", "/api/v1/namespaces/docs/services/paperless-ai:3000/proxy/health")
    assert status == 200 and body == {"status": "healthy"}
    # Whether it validated its settings shows only behind its API key (x-api-key): 200 when
    # configured, 302 to /setup when not (and 302 to /login without the key).
    with open(os.path.join(STATE, "secrets", "paperless_ai_access_key")) as handle:
        access_key = handle.read().split()[0]
    url = "http://127.0.0.1:%d/api/v1/namespaces/docs/services/paperless-ai:3000/proxy/api/processing-status" % PORT

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    with opener.open(urllib.request.Request(url, headers={"x-api-key": access_key}), timeout=60) as response:
        assert response.status == 200 and json.loads(response.read())["isProcessing"] is False
    try:
        opener.open(url, timeout=60)
        raise AssertionError("no key must not pass")
    except urllib.error.HTTPError as err:
        # Through the API server's proxy the redirect keeps to the proxy's path (kube-apiserver rewrites it).
        assert err.code == 302
        assert err.headers["Location"] == ("http://127.0.0.1:%d/api/v1/namespaces/docs/services/paperless-ai:3000"
                                           "/proxy/login" % PORT)


# -- GPU modes ---------------------------------------------------------------------------

def test_gpu_mode_round_trip_each_switch_verified_through_litellm(in_ml_mode):
    # Also the real_vllm scenario's round trip (the REAL vLLM CPU build); the ten switches below, under
    # load, check each switch the same way.
    for mode in ("r1", "gaming", "ml"):
        code, result, output = gpu_mode(mode)
        assert code == 0, output[-3000:]
        assert result["changed"] is True and result["mode"] == mode
        verified(result, mode)
        if mode == "r1":
            status, body, _ = litellm("POST", "/v1/chat/completions",
                                      {"model": "vllm-r1", "messages": [{"role": "user", "content": "hi"}]})
            message = body["choices"][0]["message"]
            assert status == 200 and message["reasoning_content"] and "</think>" not in message["content"]


class ClientLoad:
    """Clients of the gateway at a fixed concurrency, streamed and non-streamed requests in turn for the chain's
    head (vllm-qwen, which falls back to the CPU tier while vLLM does not serve it); each request's outcome."""

    def __init__(self, concurrency=8):
        self.concurrency, self.results, self.stop = concurrency, [], threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(n,), daemon=True) for n in range(concurrency)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(120)

    def client(self, number):
        streamed = bool(number % 2)
        while not self.stop.is_set():
            began = time.monotonic()
            outcome = self.ask(streamed)
            self.results.append(dict(outcome, streamed=streamed, began=began, ended=time.monotonic()))
            streamed = not streamed

    @staticmethod
    def ask(streamed):
        body = {"model": "vllm-qwen", "max_tokens": 4, "stream": streamed,
                "messages": [{"role": "user", "content": "Summarise the GPU switch in one line."}]}
        request = urllib.request.Request(service_url("litellm") + "/v1/chat/completions", method="POST",
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": "Bearer " + master_key()})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                group = response.headers.get("x-litellm-model-group")
                if not streamed:
                    json.loads(response.read())
                    return {"status": response.status, "group": group, "complete": True}
                done = finished = False
                for line in response:
                    line = line.decode().strip()
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: ") and '"finish_reason":"' in line.replace(" ", ""):
                        finished = True
                return {"status": response.status, "group": group, "complete": done and finished}
        except urllib.error.HTTPError as err:
            return {"status": err.code, "group": None, "complete": False, "error": err.read()[:300]}
        except OSError as err:
            return {"status": None, "group": None, "complete": False, "error": str(err)}


def vllm_shutdowns():
    try:
        with open(os.path.join(STATE, "observations", "vllm-shutdowns.jsonl")) as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except OSError:
        return []


def verified(result, mode):
    """What gpu_mode proved of a switch: vLLM and LiteLLM serve the mode's model, or the GPU is free and the
    CPU tier answers."""
    model = {"ml": "vllm-qwen", "r1": "vllm-r1", "gaming": None}[mode]
    assert result["model"] == model, result
    if model:
        assert result["verified"]["vllm_models"] == [model]
        assert result["verified"]["litellm"]["answered_by"] == model
    else:
        assert result["verified"]["vllm_pods"] == 0 and result["verified"]["gpu_holders"] == []
        assert result["verified"]["litellm"]["answered_by"] == "ollama-qwen"


def test_ten_switches_under_load_go_unnoticed_by_clients(in_ml_mode):
    # Each switch, verified through vLLM and LiteLLM, drains vLLM before replacing it (the Service first,
    # then the pod once idle), and the gateway routes to vLLM again as soon as a verified pod answers its probe.
    sequence = ["r1", "ml", "gaming", "ml", "r1", "gaming", "r1", "ml", "gaming", "ml"]
    shutdowns_before = len(vllm_shutdowns())
    back_in_ml = []   # (from, to): while vLLM was verified serving vllm-qwen again
    with ClientLoad(concurrency=8) as load:
        time.sleep(1)
        for mode in sequence:
            code, result, output = gpu_mode(mode)
            assert code == 0 and result["changed"] is True and result["mode"] == mode, output[-3000:]
            print("%s -> %s: drained %s, %s" % (result["previous_mode"], mode, result.get("drained"), result["timings"]))
            verified(result, mode)
            if mode == "ml":
                returned = time.monotonic()
                time.sleep(1.5)
                back_in_ml.append((returned, time.monotonic()))
    results = load.results
    failed = [r for r in results if r["status"] != 200]
    cut = [r for r in results if r["streamed"] and r["status"] == 200 and not r["complete"]]
    reached_terminating = sum(s["running"] for s in vllm_shutdowns()[shutdowns_before:])
    cpu_after_return = [r for r in results for start, end in back_in_ml
                        if start <= r["began"] <= end and r["group"] != "vllm-qwen"]
    counts = {"requests": len(results), "failed": len(failed), "cut_streams": len(cut),
              "reached_a_terminating_vllm": reached_terminating, "cpu_tier_after_return_to_ml": len(cpu_after_return),
              "answered_by": {g: sum(1 for r in results if r["group"] == g) for g in {r["group"] for r in results}}}
    print("10 switches under load:", json.dumps(counts))
    assert counts["requests"] > 100 and {"vllm-qwen", "ollama-qwen"} <= set(counts["answered_by"]), counts
    assert (counts["failed"], counts["cut_streams"], counts["reached_a_terminating_vllm"],
            counts["cpu_tier_after_return_to_ml"]) == (0, 0, 0, 0), (counts, failed[:3], cut[:3],
                                                                    cpu_after_return[:3])


def test_the_same_mode_again_status_and_check_mode_change_nothing():
    before = deployment("ml", "vllm-server")["metadata"]["resourceVersion"]
    code, result, _ = gpu_mode("ml")
    assert code == 0 and result["changed"] is False and result["verified"]["vllm_models"] == ["vllm-qwen"]
    code, result, _ = gpu_mode("status")
    assert code == 0 and result["changed"] is False and result["mode"] == "ml" and result["ready"] is True
    code, result, _ = gpu_mode("r1", "--check", "--diff")
    assert code == 0 and result["changed"] is True
    assert result["diff"] == {"before": {"mode": "ml", "model": "vllm-qwen"},
                              "after": {"mode": "r1", "model": "vllm-r1"}}
    assert deployment("ml", "vllm-server")["metadata"]["resourceVersion"] == before


def test_site_check_mode_on_the_converged_lab_changes_nothing():
    versions = {name: deployment("ml", name)["metadata"]["resourceVersion"] for name in ("vllm-server", "litellm")}
    code, tasks, output = playbook("site.yml", "--check", json_output=False)
    assert code == 0, output[-3000:]
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0 ", output), output[-1500:]
    assert {name: deployment("ml", name)["metadata"]["resourceVersion"] for name in versions} == versions


def test_a_failed_model_load_fails_with_the_pods_reason_and_rolls_back(in_ml_mode):
    subprocess.run([sys.executable, "-m", "lab", "--state-dir", STATE, "fault", "fail-model", "vllm-r1", "--kind",
                    "oom"], cwd=ROOT, check=True, env=dict(os.environ, PYTHONPATH=TOOLS), capture_output=True)
    try:
        code, result, output = gpu_mode("r1")
    finally:
        subprocess.run([sys.executable, "-m", "lab", "--state-dir", STATE, "fault", "fail-model", "vllm-r1",
                        "--kind", "none"], cwd=ROOT, check=True, env=dict(os.environ, PYTHONPATH=TOOLS),
                       capture_output=True)
    assert code != 0
    assert result["msg"].startswith("switch to r1 failed: pod vllm-server-")
    assert "was OOMKilled (exit code 137); rolled back to ml (verified)" in result["msg"]
    assert result["rolled_back"] is True and result["verified"]["vllm_models"] == ["vllm-qwen"]
    code, result, _ = gpu_mode("status")
    assert result["mode"] == "ml" and result["ready"] is True


def test_two_runs_at_once_serialise_on_the_lock(in_ml_mode):
    outcomes = {}

    def run(mode):
        outcomes[mode] = gpu_mode(mode)

    threads = [threading.Thread(target=run, args=(mode,)) for mode in ("r1", "gaming")]
    lease = "/apis/coordination.k8s.io/v1/namespaces/ml/leases/gpu-mode"
    # The second run starts once the first holds the lock, and the first holds it through an 8 s
    # R1 load: a fixed 0.3 s head start let a slow ansible-playbook start on a busy machine miss
    # the whole first switch (both ran, neither waited).
    api("POST", "/lab/faults/slow-model", {"model": "vllm-r1", "seconds": 8})
    try:
        threads[0].start()
        deadline = time.monotonic() + 60
        while api("GET", lease)[0] != 200 and threads[0].is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert api("GET", lease)[0] == 200, "the first run took the lock"
        threads[1].start()
        for thread in threads:
            thread.join()
    finally:
        api("POST", "/lab/faults/slow-model", {"model": "vllm-r1", "seconds": None})
    lock_waits = []
    for mode, (code, result, output) in outcomes.items():
        if code == 0:
            lock_waits.append(result["timings"].get("lock", 0))
        else:
            assert "another gpu_mode run holds the lock ml/gpu-mode" in result["msg"], output[-2000:]
    assert max(lock_waits) > 0.5 or len(lock_waits) == 1, outcomes
    code, status, _ = gpu_mode("status")
    assert status["mode"] in ("r1", "gaming") and status["ready"] is True
    assert api("GET", "/apis/coordination.k8s.io/v1/namespaces/ml/leases/gpu-mode")[0] == 404, "no lock left"


def test_an_api_5xx_burst_during_a_switch_fails_clearly_and_a_rerun_converges(in_ml_mode):
    # Armed now, fired by the switch's own patch: the next 8 API requests answer 500.
    api("POST", "/lab/faults/api", {"mode": "5xx", "requests": 8, "after_patch_of": "deployments"})
    code, result, output = gpu_mode("r1")
    api("POST", "/lab/faults/api", {"mode": None, "requests": 0})
    assert code != 0, output[-3000:]
    assert result["msg"].startswith("switch to r1 failed: "), result["msg"]
    assert "500" in result["msg"] and "\n" not in result["msg"]
    assert api("GET", "/apis/coordination.k8s.io/v1/namespaces/ml/leases/gpu-mode")[0] == 404, "no lock left"
    code, result, output = gpu_mode("r1")
    assert code == 0, output[-3000:]
    assert result["mode"] == "r1" and result["verified"]["vllm_models"] == ["vllm-r1"]


# -- the gateway under faults ------------------------------------------------------------

def test_vllm_killed_during_500_requests_at_concurrency_16_fails_none():
    body = {"model": "vllm-qwen", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    done = []

    def one(index):
        if index == 150:
            api("POST", "/lab/kill", {"namespace": "ml", "app": "vllm"})
        status, _, headers = litellm("POST", "/v1/chat/completions", body)
        done.append(index)
        return status, headers.get("x-litellm-model-group")

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(500)))
    failed = [r for r in results if r[0] != 200]
    assert failed == []
    # Both tiers answered (the kill did reach vLLM), and none past Ollama: a healthy Ollama is never skipped.
    assert {group for _, group in results} == {"vllm-qwen", "ollama-qwen"}


# -- secrets and configuration changes ---------------------------------------------------

def test_the_verbose_diff_output_of_a_converge_holds_no_secret():
    canary = "sk-CANARY-e2e-7f3a9c"
    keys = {"litellm_provider_keys": {"openai": canary}}
    code, _, output = playbook("site.yml", "-vvv", "--diff", "-e", json.dumps(keys), json_output=False)
    # The lab's FAKE OpenAI accepts only its own key, so the converge's last play, verify, fails on it.
    assert code != 0, output[-3000:]
    assert "openai key: set, but openai-gpt4o (chain tier 3) answered 401: the provider refused the key" in output
    assert "changed=" in output and "TASK [homelab.inference.litellm" in output
    assert decoded_secret("ml", "litellm-secrets")["OPENAI_API_KEY"] == canary, "the canary did reach the cluster"
    # OpenAI's refusal quotes the key's first 3 and last 4 characters; not even that is shown.
    masked = canary[:3] + "*" * (len(canary) - 7) + canary[-4:]
    for needle in (canary, base64.b64encode(canary.encode()).decode(), master_key(), paperless_ai_key(), masked):
        assert needle not in output


def test_a_changed_catalog_timeout_rolls_litellm_and_is_live(tmp_path):
    with open(CATALOG) as handle:
        catalog = yaml.safe_load(handle)
    for model in catalog["inference_models"]:
        if model["name"] == "ollama-qwen":
            model["timeout"] = 77
    overrides = tmp_path / "catalog.json"
    overrides.write_text(json.dumps({"inference_models": catalog["inference_models"]}))
    before = {p["metadata"]["name"] for p in pods("ml", "app.kubernetes.io/name=litellm")}
    # The litellm role alone, as `--tags litellm` runs it: the whole site.yml twice took a minute.
    try:
        code, _, output = playbook("site.yml", "--tags", "litellm", "-e", "@%s" % overrides, json_output=False)
        assert code == 0, output[-3000:]
        # The apply waits for the Deployment, whose status, as on a cluster, no longer counts a pod once it
        # is terminating: the old one may still be on its way out, but no longer in service.
        found = pods("ml", "app.kubernetes.io/name=litellm")
        after = {p["metadata"]["name"] for p in found if not p["metadata"].get("deletionTimestamp")}
        assert after and not after & before, "a new LiteLLM pod replaced the old one"
        status, info, _ = litellm("GET", "/v1/model/info")
        timeouts = {m["model_name"]: m["litellm_params"].get("timeout") for m in info["data"]}
        assert status == 200 and timeouts["ollama-qwen"] == 77
    finally:
        code, _, output = playbook("site.yml", "--tags", "litellm", json_output=False)
        assert code == 0, output[-3000:]
