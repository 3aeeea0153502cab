#!/usr/bin/env python3
"""The stack on the local lab, measured: `lab up`, site.yml's first converge
and idempotent re-run (wall time and task counts), gpu_mode switches (the
module's overhead = its total minus the lab's configured model load delay)
side by side with the reference system's method replayed against the same lab
(scale to 0 and wait, apply the other mode's manifest, poll readyReplicas every
5 s, check /health), the no-op gpu_mode.yml, and `make demo` after set-up.
Each tier is used once before the switches are timed (a warmed gateway).

Usage: python benchmarks/lab_stack.py [--rounds 3] [--load 2] [--skip-demo] [--out benchmarks/results/lab.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.request

import yaml

from lab import ROOT, TOOLS
from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from testkit.playbook import ansible_playbook
from testkit.api_client import api_request
from report import write_report

STATE = os.path.join(ROOT, ".lab-bench")
PORT = 16445
ENV = {"LAB_STATE_DIR": STATE}
SWITCHES = ["r1", "gaming", "ml"]


def lab(*args):
    subprocess.run([sys.executable, "-m", "lab", "--state-dir", STATE, *args], cwd=ROOT, check=True,
                   env=dict(os.environ, PYTHONPATH=TOOLS), capture_output=True)


def api(method, path, body=None, content_type="application/merge-patch+json"):
    return api_request(PORT, method, path, body, content_type)


def timed_playbook(*args, json_output=False):
    env = dict(ENV)
    if json_output:
        env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    began = time.monotonic()
    result = ansible_playbook(*args, env=env)
    seconds = time.monotonic() - began
    if result.returncode:
        raise RuntimeError("ansible-playbook %s failed:\n%s" % (" ".join(args), result.stdout[-3000:]))
    return result.stdout, seconds


def recap(output):
    match = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)\s+skipped=(\d+)", output)
    return dict(zip(("ok", "changed", "failed", "skipped"), map(int, match.groups()))) if match else {}


def gpu_mode(mode):
    output, seconds = timed_playbook("gpu_mode.yml", "-e", "mode=%s" % mode, json_output=True)
    report = json.loads(output[output.index("{"):])
    result = next(t["hosts"]["localhost"] for t in report["plays"][0]["tasks"]
                  if t["task"]["name"].startswith("Switch the GPU to"))
    return result, seconds


def warm_tiers():
    """One chat per tier through LiteLLM, as a long-running gateway has had: the first use of a
    model pays LiteLLM's warm-up and Ollama's cold load, which are not the switch's overhead."""
    with open(os.path.join(STATE, "secrets", "litellm_master_key")) as handle:
        key = "sk-" + handle.read().split()[0]
    service = next(s for s in api("GET", "/lab/status")[1]["services"] if s["name"] == "litellm")
    for model in ("vllm-qwen", "ollama-qwen"):
        request = urllib.request.Request(
            "http://%s:%d/v1/chat/completions" % (service["clusterIP"], service["ports"][0]), method="POST",
            data=json.dumps({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer " + key})
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()


def mode_table():
    with open(os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")) as handle:
        catalog = yaml.safe_load(handle)
    with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)
    return _gpu_mode.mode_table(catalog["inference_models"], catalog["inference_gpu_modes"],
                                defaults["vllm_common_args"], defaults["vllm_port"])


def reference_switch(table, target, interval=5.0, limit=120):
    """The reference system's gpu-mode script, replayed against the lab's API."""
    deployment = "/apis/apps/v1/namespaces/ml/deployments/vllm-server"
    pods = "/api/v1/namespaces/ml/pods?labelSelector=app.kubernetes.io/name%3Dvllm"
    began = time.monotonic()
    api("PATCH", deployment + "/scale", {"spec": {"replicas": 0}})
    while api("GET", pods)[1]["items"]:
        time.sleep(interval)
    if table[target]["vllm_model"]:
        current = api("GET", deployment)[1]
        patch = _gpu_mode.switch_patch(current, target, table)
        api("PATCH", deployment, patch, "application/strategic-merge-patch+json")
        deadline = time.monotonic() + limit
        while (api("GET", deployment)[1].get("status", {}).get("readyReplicas") or 0) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the reference method timed out switching to %s" % target)
            time.sleep(interval)
        status, _ = api("GET", "/api/v1/namespaces/ml/services/vllm-api:8000/proxy/health")
        if status != 200:
            raise RuntimeError("vLLM's /health answered %s" % status)
    else:
        api("PATCH", deployment, _gpu_mode.switch_patch(api("GET", deployment)[1], target, table),
            "application/strategic-merge-patch+json")
    return time.monotonic() - began


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", type=float, default=2.0, help="the lab's model load delay, seconds")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "lab.json"))
    args = parser.parse_args()
    report = {"benchmark": "lab", "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load_delay_s": args.load}
    try:
        began = time.monotonic()
        lab("up", "--fresh", "--port", str(PORT), "--load-delay", str(args.load))
        report["lab_up_s"] = round(time.monotonic() - began, 2)
        print("site.yml, first converge", file=sys.stderr)
        output, seconds = timed_playbook("site.yml")
        report["site_first_converge"] = dict(recap(output), seconds=round(seconds, 1))
        output, seconds = timed_playbook("site.yml")
        report["site_idempotent_rerun"] = dict(recap(output), seconds=round(seconds, 1))
        warm_tiers()
        switches = []
        for number in range(args.rounds):
            for mode in SWITCHES:
                print("gpu_mode %s (round %d)" % (mode, number + 1), file=sys.stderr)
                result, seconds = gpu_mode(mode)
                load = args.load if result["model"] else 0.0
                switches.append({"round": number + 1, "to": mode, "from": result["previous_mode"],
                                 "module_total_s": result["timings"]["total"], "playbook_s": round(seconds, 2),
                                 "overhead_s": round(result["timings"]["total"] - load, 3),
                                 "timings": result["timings"]})
        report["gpu_mode_switches"] = switches
        noop = [gpu_mode("ml") for _ in range(3)]
        report["gpu_mode_noop"] = {"playbook_s": [round(s, 2) for _, s in noop],
                                   "module_s": [r["timings"]["total"] for r, _ in noop],
                                   "changed": [r["changed"] for r, _ in noop]}
        table = mode_table()
        reference = []
        for mode in SWITCHES:
            print("reference method -> %s" % mode, file=sys.stderr)
            total = reference_switch(table, mode)
            load = args.load if table[mode]["vllm_model"] else 0.0
            reference.append({"to": mode, "total_s": round(total, 2), "overhead_s": round(total - load, 2)})
        report["reference_method"] = reference
    finally:
        lab("down")
    if not args.skip_demo:
        print("make demo", file=sys.stderr)
        began = time.monotonic()
        demo = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "demo.py")], cwd=ROOT,
                              capture_output=True, text=True)
        report["demo"] = {"seconds": round(time.monotonic() - began, 1), "exit_code": demo.returncode}
    overheads = [s["overhead_s"] for s in report["gpu_mode_switches"]]
    report["summary"] = {
        "module_overhead_median_s": round(statistics.median(overheads), 3),
        "module_overhead_max_s": max(overheads),
        "reference_overhead_median_s": round(statistics.median(r["overhead_s"] for r in reference), 2),
        "noop_playbook_median_s": statistics.median(report["gpu_mode_noop"]["playbook_s"]),
    }
    report["targets"] = {"module_overhead_s": 1.0}
    report["verdicts"] = {"module_overhead_le_1s": max(overheads) <= 1.0}
    write_report(report, args.out)


if __name__ == "__main__":
    main()
