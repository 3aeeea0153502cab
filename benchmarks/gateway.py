#!/usr/bin/env python3
"""Gateway benchmark: the LiteLLM config the litellm role renders and the
reference system's config, side by side in ONE run, on the REAL proxy (the
pinned litellm), in front of the same FAKE upstreams on loopback.

Measured for each config:
- proxy overhead: latency through the proxy minus latency straight to the
  FAKE vLLM (p50, p99), sequential and with 16 concurrent clients; both
  proxies run at once and are measured in alternating rounds, so that they
  share the machine's conditions;
- failover with vLLM refusing connections, and with vLLM accepting but never
  answering: the first request, then the steady state (and, for comparison,
  the fallback tier asked directly through the same proxy);
- failed client requests while vLLM is killed in the middle of 1,000 requests
  at concurrency 16;
- how long a failing parallel model takes to return its error, and how long
  a vLLM model the GPU mode does not load takes to be refused.
Both proxies are warmed first (requests to every tier), as a readiness
warm-up would. These upstreams answer at once (the lab's ``fast`` profile):
what is measured is the proxy's own cost.

Then the same two configs under real model timing (the lab's ``realistic``
profile; benchmarks/gateway_realistic.py): requests abandoned to the CPU tier
while vLLM is healthy, Paperless-AI-like latencies with vLLM healthy and dead,
failover refused and hanging, and who answers after a switch back to ``ml``.

Usage: python benchmarks/gateway.py [--out benchmarks/results/gateway.json] [--quick] [--only fast|realistic]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import platform
import sys
import tempfile
import threading
import time

import yaml

from lab import ROOT
from testkit.gateway_rig import MASTER_KEY, PROVIDER_KEYS, Gateway, Upstreams, render_gateway
import gateway_realistic
from report import write_report

# The reference system serves vLLM's model under its Hugging Face id; vLLM can
# answer to several names (--served-model-name), so one FAKE serves both.
REFERENCE_VLLM_MODEL = "Qwen/Qwen2.5-7B-Instruct-AWQ"
REQUEST = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def reference_config(upstreams):
    """The hand-built system's LiteLLM config (its stories and README), pointed at the same fakes."""
    bases = upstreams.api_bases
    return {
        "model_list": [
            {"model_name": "vllm-qwen", "litellm_params": {"model": "openai/" + REFERENCE_VLLM_MODEL,
                                                           "api_base": bases["vllm"], "api_key": "sk-none",
                                                           "timeout": 3}},
            {"model_name": "ollama-qwen", "litellm_params": {"model": "ollama/qwen2.5:3b",
                                                             "api_base": bases["ollama"], "timeout": 120}},
            {"model_name": "openai-gpt4o", "litellm_params": {"model": "openai/gpt-4o-mini",
                                                              "api_base": bases["openai"],
                                                              "api_key": "os.environ/OPENAI_API_KEY", "timeout": 30}},
            {"model_name": "vllm-r1", "litellm_params": {"model": "openai/casperhansen/deepseek-r1-distill-qwen-7b-awq",
                                                         "api_base": bases["vllm"], "api_key": "sk-none",
                                                         "timeout": 60}},
            {"model_name": "groq/llama-3.3-70b-versatile", "litellm_params": {
                "model": "groq/llama-3.3-70b-versatile", "api_base": bases["groq"],
                "api_key": "os.environ/GROQ_API_KEY"}},
        ],
        "litellm_settings": {"fallbacks": [{"vllm-qwen": ["ollama-qwen"]}, {"ollama-qwen": ["openai-gpt4o"]}],
                             "callbacks": ["prometheus"]},
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 2, "timeout": 30},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }


class Client:
    """Keep-alive HTTP client, one connection per thread."""

    def __init__(self, port, path, headers=None):
        self.port, self.path, self.headers = port, path, dict(headers or {}, **{"Content-Type": "application/json"})
        self.local = threading.local()

    def post(self, body):
        """(status, seconds, parsed body or None)."""
        data = json.dumps(body)
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            began = time.perf_counter()
            try:
                conn.request("POST", self.path, data, self.headers)
                response = conn.getresponse()
                payload = response.read()
                seconds = time.perf_counter() - began
                try:
                    return response.status, seconds, json.loads(payload)
                except ValueError:
                    return response.status, seconds, None
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    return 0, time.perf_counter() - began, None
        return 0, 0.0, None


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def summary(values):
    return {"n": len(values), "p50_ms": round(percentile(values, 0.5) * 1000, 2),
            "p99_ms": round(percentile(values, 0.99) * 1000, 2), "max_ms": round(max(values) * 1000, 2)}


def run_load(client, model, total, concurrency, on_progress=None):
    """Latencies of successful requests and the count of failed ones."""
    latencies, failures, done = [], [], [0]
    lock = threading.Lock()

    def one(_):
        status, seconds, body = client.post(dict(REQUEST, model=model))
        with lock:
            done[0] += 1
            (latencies.append(seconds) if status == 200 else failures.append(status))
            count = done[0]
        if on_progress:
            on_progress(count)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    return latencies, failures


def overhead(direct, proxied):
    return {"direct": summary(direct), "proxied": summary(proxied),
            "overhead_p50_ms": round((percentile(proxied, 0.5) - percentile(direct, 0.5)) * 1000, 2),
            "overhead_p99_ms": round((percentile(proxied, 0.99) - percentile(direct, 0.99)) * 1000, 2)}


def served_by_vllm(client, upstreams, model, timeout=60):
    """Wait until a request for ``model`` reaches vLLM again (a cooldown has run out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = upstreams.vllm.hits.get("chat", 0)
        client.post(dict(REQUEST, model=model))
        if upstreams.vllm.hits.get("chat", 0) > before:
            return True
        time.sleep(0.5)
    return False


def failover(client, upstreams, fault, steady_samples):
    if fault == "refuse":
        upstreams.vllm.stop()
    else:
        upstreams.vllm.behaviour = "hang"
    status, first, body = client.post(dict(REQUEST, model="vllm-qwen"))
    steady = []
    statuses = [status]
    for _ in range(steady_samples):
        status, seconds, _ = client.post(dict(REQUEST, model="vllm-qwen"))
        statuses.append(status)
        steady.append(seconds)
    if fault == "refuse":
        upstreams.restart_vllm(models=["vllm-qwen", REFERENCE_VLLM_MODEL])
    else:
        upstreams.vllm.reset()
    return {"first_request_ms": round(first * 1000, 1), "steady": summary(steady),
            "answered_by_fallback": body is not None and "Ollama" in json.dumps(body),
            "non_200": len([s for s in statuses if s != 200])}


def kill_during_load(client, upstreams, total=1000, concurrency=16):
    kill_at = total * 3 // 10
    killed = threading.Event()

    def progress(count):
        if count >= kill_at and not killed.is_set():
            killed.set()
            upstreams.vllm.stop()

    began = time.perf_counter()
    latencies, failures = run_load(client, "vllm-qwen", total, concurrency, progress)
    elapsed = time.perf_counter() - began
    upstreams.restart_vllm(models=["vllm-qwen", REFERENCE_VLLM_MODEL])
    return {"requests": total, "concurrency": concurrency, "killed_after": kill_at, "failed": len(failures),
            "failed_statuses": sorted(set(failures)), "latency": summary(latencies), "seconds": round(elapsed, 1)}


def client_for(gateway):
    return Client(gateway.proxy.port, "/v1/chat/completions", {"Authorization": "Bearer " + MASTER_KEY})


def warm(client):
    for model in ("vllm-qwen", "ollama-qwen", "openai-gpt4o", "groq/llama-3.3-70b-versatile"):
        for _ in range(5):
            client.post(dict(REQUEST, model=model))


def measure_overheads(clients, upstreams, args):
    """Overhead of every proxy, in alternating rounds against the same FAKE vLLM."""
    direct = Client(upstreams.vllm_port, "/v1/chat/completions")
    samples = {name: {"seq": [], "c16": []} for name in clients}
    samples["direct"] = {"seq": [], "c16": []}
    rounds = args.rounds
    for number in range(rounds):
        print("overhead, round %d of %d" % (number + 1, rounds), file=sys.stderr)
        for name, client in [("direct", direct)] + list(clients.items()):
            samples[name]["seq"] += run_load(client, "vllm-qwen", args.sequential // rounds, 1)[0]
            samples[name]["c16"] += run_load(client, "vllm-qwen", args.concurrent // rounds, 16)[0]
    return {name: {"overhead_sequential": overhead(samples["direct"]["seq"], samples[name]["seq"]),
                   "overhead_concurrency_16": overhead(samples["direct"]["c16"], samples[name]["c16"])}
            for name in clients}


def timed_error(client, model):
    status, seconds, body = client.post(dict(REQUEST, model=model))
    message = ((body or {}).get("error") or {}).get("message", "") if isinstance(body, dict) else ""
    return {"status": status, "ms": round(seconds * 1000, 1), "message": message[:160]}


def measure_faults(name, client, upstreams, args):
    result = {}
    result["fallback_tier_direct"] = summary(run_load(client, "ollama-qwen", args.steady, 1)[0])
    print("[%s] failover, vLLM refusing" % name, file=sys.stderr)
    result["failover_refusing"] = failover(client, upstreams, "refuse", args.steady)
    result["recovered_after_refusing"] = served_by_vllm(client, upstreams, "vllm-qwen")
    print("[%s] failover, vLLM hanging" % name, file=sys.stderr)
    result["failover_hanging"] = failover(client, upstreams, "hang", args.hang_steady)
    result["recovered_after_hanging"] = served_by_vllm(client, upstreams, "vllm-qwen")
    print("[%s] parallel model failing" % name, file=sys.stderr)
    upstreams.groq.behaviour = "error"
    result["parallel_model_failing"] = timed_error(client, "groq/llama-3.3-70b-versatile")
    upstreams.groq.behaviour = "ok"
    print("[%s] r1 model asked in ml mode" % name, file=sys.stderr)
    result["mode_mismatch"] = [timed_error(client, "vllm-r1") for _ in range(2)]
    print("[%s] vLLM killed under load" % name, file=sys.stderr)
    result["kill_under_load"] = kill_during_load(client, upstreams, total=args.kill_total)
    served_by_vllm(client, upstreams, "vllm-qwen")
    return result


def verdicts(ours, reference, hang_bound_s):
    normal = ours["overhead_sequential"]["proxied"]["p50_ms"]
    return {
        "parallel_model_error_le_5s": ours["parallel_model_failing"]["ms"] <= 5000,
        "mode_mismatch_error_le_1s": all(e["status"] == 404 and e["ms"] <= 1000 for e in ours["mode_mismatch"]),
        "first_failover_refusing_le_100ms": ours["failover_refusing"]["first_request_ms"] <= 100,
        "first_failover_hanging_le_probe_bound":
            ours["failover_hanging"]["first_request_ms"] <= hang_bound_s * 1000,
        "steady_refusing_le_normal_plus_10ms": ours["failover_refusing"]["steady"]["p50_ms"] <= normal + 10,
        "steady_hanging_le_normal_plus_10ms": ours["failover_hanging"]["steady"]["p50_ms"] <= normal + 10,
        "overhead_c16_p50_no_worse_than_reference":
            ours["overhead_concurrency_16"]["overhead_p50_ms"] <= reference["overhead_concurrency_16"]["overhead_p50_ms"],
        "zero_failed_through_kill": ours["kill_under_load"]["failed"] == 0,
        "overhead_p50_no_worse_than_reference":
            ours["overhead_sequential"]["overhead_p50_ms"] <= reference["overhead_sequential"]["overhead_p50_ms"],
    }


def reference_dir_for(workdir, name, upstreams):
    directory = os.path.join(workdir, name)
    os.makedirs(directory)
    with open(os.path.join(directory, "config.yaml"), "w") as handle:
        yaml.safe_dump(reference_config(upstreams), handle, sort_keys=False)
    return directory


REFERENCE_ENV = {"LITELLM_MASTER_KEY": MASTER_KEY, "OPENAI_API_KEY": PROVIDER_KEYS["openai"],
                 "GROQ_API_KEY": PROVIDER_KEYS["groq"]}


def run_realistic(args, workdir):
    """Both configs at once, each in front of its own realistically timed FAKE vLLM and Ollama."""
    upstreams = {name: Upstreams(vllm_models=("vllm-qwen", REFERENCE_VLLM_MODEL), profile="realistic")
                 for name in ("rendered", "reference")}
    gateways = {}
    try:
        config_dir, env, _ = render_gateway(os.path.join(workdir, "realistic-rendered"), upstreams["rendered"])
        gateways["rendered"] = Gateway(config_dir, env).start()
        gateways["reference"] = Gateway(reference_dir_for(workdir, "realistic-reference", upstreams["reference"]),
                                        REFERENCE_ENV).start()
        # The proxy's own first-request warm-up; and Ollama's model loaded, as the ollama role leaves it.
        for gateway in gateways.values():
            for model in ("vllm-qwen", "ollama-qwen"):
                gateway_realistic.ask(gateway.proxy.port, MASTER_KEY, gateway_realistic.CHAT_REQUEST, model=model)

        def one(name):
            servers = upstreams[name]
            return gateway_realistic.measure(
                name, gateways[name].proxy.port, MASTER_KEY, servers,
                lambda: servers.restart_vllm(models=["vllm-qwen", REFERENCE_VLLM_MODEL]), args,
                lambda line: print(line, file=sys.stderr))

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = {name: pool.submit(one, name) for name in gateways}
            return {name: future.result() for name, future in futures.items()}
    finally:
        for gateway in gateways.values():
            gateway.stop()
        for servers in upstreams.values():
            servers.stop()


def realistic_verdicts(ours, probe_bound_s):
    refusing = ours["failover_refusing"]
    return {
        "zero_abandoned_to_cpu_while_vllm_healthy":
            set(ours["paperless_vllm_healthy"]["answered_by"]) == {"vllm-qwen"},
        "refused_first_failover_le_100ms_over_the_cpu_tier":
            refusing["first_request_s"] - refusing["cpu_tier_asked_directly"]["p50_s"] <= 0.1,
        "hanging_in_flight_failed_over_within_probe_bound_plus_cpu_answer":
            ours["failover_hanging"]["in_flight_answered_by"] == "ollama-qwen" and
            ours["failover_hanging"]["in_flight_answered_after_hang_s"]
            <= probe_bound_s + refusing["cpu_tier_asked_directly"]["max_s"] + 1,
        "vllm_answers_requests_sent_1s_after_switch_back":
            (ours["switch_back_to_ml"]["first_request_vllm_answered_sent_after_s"] or 1e9) <= 1,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gateway.json"))
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    parser.add_argument("--only", choices=("fast", "realistic"), help="one half of the benchmark")
    args = parser.parse_args()
    args.sequential, args.concurrent, args.steady, args.hang_steady, args.kill_total, args.rounds = (
        (50, 160, 10, 3, 200, 2) if args.quick else (1000, 1600, 50, 10, 1000, 10))
    # Requests the CPU tier answers take minutes each at its real speed: few of them.
    args.paperless_healthy, args.paperless_dead, args.realistic_steady = (4, 1, 3) if args.quick else (12, 2, 10)
    workdir = tempfile.mkdtemp(prefix="gateway-bench-")
    results, realistic, vllm_timeout = {}, {}, None
    if args.only != "realistic":
        results, vllm_timeout = run_fast(args, workdir)
    if args.only != "fast":
        realistic = run_realistic(args, workdir)

    from importlib.metadata import version
    probe_bound = 2 + 2 * 2  # litellm_probe_interval + litellm_probe_failures x litellm_probe_timeout
    report = {
        "benchmark": "gateway",
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "litellm": version("litellm"),
        "quick": args.quick,
    }
    if results:
        report.update({
            "vllm_timeout_s": vllm_timeout,
            "configs": results,
            "targets": {"first_failover_refusing_ms": 100, "first_failover_hanging_ms": (probe_bound + 1) * 1000,
                        "steady_state_over_normal_ms": 10, "failed_requests_through_kill": 0},
            "verdicts": verdicts(results["rendered"], results["reference"], probe_bound + 1),
        })
    if realistic:
        report["realistic"] = {
            "profile": "realistic (tools/lab/timing_profiles.py)",
            "paperless_request": {"prompt_tokens": gateway_realistic.PAPERLESS_PROMPT_TOKENS,
                                  "answer_tokens": gateway_realistic.PAPERLESS_ANSWER_TOKENS, "stream": False},
            "probe_bound_s": probe_bound,
            "configs": realistic,
            "verdicts": realistic_verdicts(realistic["rendered"], probe_bound),
        }
    write_report(report, args.out)


def run_fast(args, workdir):
    upstreams = Upstreams(vllm_models=("vllm-qwen", REFERENCE_VLLM_MODEL))
    results = {}
    try:
        config_dir, env, _ = render_gateway(os.path.join(workdir, "rendered"), upstreams)
        with open(os.path.join(config_dir, "config.yaml")) as handle:
            vllm_timeout = next(d["litellm_params"]["timeout"] for d in yaml.safe_load(handle)["model_list"]
                                if d["model_name"] == "vllm-qwen")
        gateways = {"rendered": Gateway(config_dir, env).start(),
                    "reference": Gateway(reference_dir_for(workdir, "reference", upstreams), REFERENCE_ENV).start()}
        try:
            clients = {name: client_for(gateway) for name, gateway in gateways.items()}
            for client in clients.values():
                warm(client)
            results = measure_overheads(clients, upstreams, args)
            for name, client in clients.items():
                results[name]["proxy_started_in_s"] = round(gateways[name].proxy.started_in, 1)
                results[name].update(measure_faults(name, client, upstreams, args))
        finally:
            for gateway in gateways.values():
                gateway.stop()
    finally:
        upstreams.stop()

    return results, vllm_timeout


if __name__ == "__main__":
    main()
