#!/usr/bin/env python3
"""GPU mode switch benchmark: homelab.inference.gpu_mode's own time on top of
the rollout, and the reference system's method (scale to 0, wait, apply the
other manifest, poll every 5 s) replayed against the same stand-in, in ONE run.

The sequence runs twice on one LiteLLM proxy: the first round is cold (the
proxy's first request for each model pays its warm-up), the second warm, as a
long-running gateway is; the summary is the warm round's.

The stand-in is the FAKE client boundary (tools/testkit/kube_client.py: the
rendered vLLM Deployment, a pod that becomes ready ``--load`` seconds after it
is created, a FAKE vLLM over HTTP that serves what the ready pod serves) and the
REAL LiteLLM proxy on the rendered config. Overhead = total time - the time the
backend needed (from the patch to the pod being ready, or to the last pod gone) -
the waits made for the clients by design (the drain's settle, the gateway's second
after a rollout), which are reported apart, with each phase's median.

Usage: python benchmarks/gpu_mode.py [--load 2] [--out benchmarks/results/gpu_mode.json]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request

import yaml

from lab import ROOT
from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from ansible_collections.homelab.inference.plugins.module_utils._gpu_switch import GATEWAY_RETURN, GpuModeSwitch
from ansible_collections.homelab.inference.plugins.module_utils._service_http import ServiceEndpoint
from ansible_collections.homelab.inference.plugins.modules import gpu_mode
from testkit.kube_client import FakeKube
from testkit.gateway_rig import MASTER_KEY, Gateway, Upstreams, render_gateway
from report import write_report

SEQUENCE = ["r1", "gaming", "ml", "ml"]  # the last one is a no-op


def load(path):
    with open(os.path.join(ROOT, path)) as handle:
        return yaml.safe_load(handle)


def the_table():
    catalog = load("roles/catalog/defaults/main.yml")
    defaults = load("roles/vllm/defaults/main.yml")
    return _gpu_mode.mode_table(catalog["inference_models"], catalog["inference_gpu_modes"],
                                defaults["vllm_common_args"], defaults["vllm_port"])


def backend_seconds(kube):
    return round(kube.ready_at - kube.patched_at, 3) if kube.ready_at and kube.patched_at else 0.0


def module_switches(kube, table, upstreams, gateway):
    params = {name: spec.get("default") for name, spec in gpu_mode.argument_spec().items()}
    params.update(modes=table, litellm_api_key=MASTER_KEY, gpu_free_model="ollama-qwen", lock_duration=600,
                  vllm_url=upstreams.api_bases["vllm"].rsplit("/v1", 1)[0], litellm_url=gateway.url)
    vllm = ServiceEndpoint(None, "ml", "vllm-api", 8000, params["vllm_url"])
    litellm = ServiceEndpoint(None, "ml", "litellm", 4000, params["litellm_url"])
    results = []
    for mode in SEQUENCE:
        kube.ready_at = kube.patched_at = None
        began = time.monotonic()
        result = GpuModeSwitch(kube, dict(params, mode=mode), vllm, litellm, "bench@%s" % os.getpid()).run(False)
        total = time.monotonic() - began
        backend = backend_seconds(kube) if result["changed"] else 0.0
        # The waits a switch makes for its clients, by design: the drain (at least drain_settle, for the
        # gateway's probes to stop sending to the old pod) and, to a serving mode, a second for the gateway
        # to route to the new one. Reported apart from the module's own overhead.
        waits = result["timings"].get("drain", 0.0) + \
            (GATEWAY_RETURN if result["changed"] and table[mode]["vllm_model"] else 0.0)
        results.append({"to": mode, "from": result["previous_mode"], "changed": result["changed"],
                        "total_s": round(total, 3), "backend_s": backend, "client_waits_s": round(waits, 3),
                        "overhead_s": round(total - backend - waits, 3),
                        "timings": result["timings"], "verified": sorted(result["verified"])})
    return results


def phase_medians(switches):
    """Each phase's median seconds over the switches that went through it."""
    phases = sorted({phase for r in switches for phase in r["timings"] if phase != "total"})
    return {phase: round(statistics.median(r["timings"][phase] for r in switches if phase in r["timings"]), 3)
            for phase in phases}


def reference_switch(kube, table, target, vllm_url, interval=5.0, limit=120):
    """The reference gpu-mode script: scale to 0 and wait, apply the other manifest, poll readyReplicas every 5 s."""
    began = time.monotonic()
    kube.patch_deployment("ml", "vllm-server", {"spec": {"replicas": 0}})
    while kube.list_pods("ml", ""):
        time.sleep(interval)
        kube.get_deployment("ml", "vllm-server")
    if table[target]["vllm_model"]:
        kube.ready_at = None
        kube.patch_deployment("ml", "vllm-server", _gpu_mode.switch_patch(
            kube.get_deployment("ml", "vllm-server"), target, table))
        deadline = time.monotonic() + limit
        while (kube.get_deployment("ml", "vllm-server")["status"].get("readyReplicas") or 0) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("reference method timed out")
            time.sleep(interval)
        with urllib.request.urlopen(vllm_url + "/health", timeout=5) as response:
            assert response.status == 200
    return time.monotonic() - began


def reference_switches(kube, table, upstreams, load_seconds):
    results = []
    vllm_url = upstreams.api_bases["vllm"].rsplit("/v1", 1)[0]
    for mode in SEQUENCE[:-1]:
        total = reference_switch(kube, table, mode, vllm_url)
        # The backend's own part: the load of the new model (scaling down is near instant on the fake).
        backend = load_seconds if table[mode]["vllm_model"] else 0.0
        results.append({"to": mode, "total_s": round(total, 3), "backend_s": backend,
                        "overhead_s": round(total - backend, 3)})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", type=float, default=2.0, help="seconds a model takes to load (the fake's delay)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gpu_mode.json"))
    args = parser.parse_args()
    table = the_table()
    upstreams = Upstreams()
    workdir = tempfile.mkdtemp(prefix="gpu-mode-bench-")
    try:
        config_dir, env, _ = render_gateway(workdir, upstreams)
        with open(os.path.join(workdir, "render", "vllm.yaml")) as handle:
            deployment = next(o for o in yaml.safe_load_all(handle) if o and o["kind"] == "Deployment")
        gateway = Gateway(config_dir, env).start()
        try:
            print("gpu_mode module, cold then warm", file=sys.stderr)
            kube = FakeKube(deployment, upstreams, load_seconds=args.load)
            cold = module_switches(kube, table, upstreams, gateway)
            ours = module_switches(kube, table, upstreams, gateway)
            print("reference method", file=sys.stderr)
            reference = reference_switches(FakeKube(deployment, upstreams, load_seconds=args.load), table,
                                           upstreams, args.load)
        finally:
            gateway.stop()
    finally:
        upstreams.stop()
    switches = [r for r in ours if r["changed"]]
    report = {
        "benchmark": "gpu_mode",
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "stand_in": "FAKE client boundary + FAKE vLLM over HTTP + REAL LiteLLM",
        "load_seconds": args.load,
        "module": ours,
        "module_cold_round": cold,
        "reference_method": reference,
        "summary": {
            "module_overhead_max_s": max(r["overhead_s"] for r in switches),
            "module_overhead_median_s": round(statistics.median(r["overhead_s"] for r in switches), 3),
            "module_client_waits_median_s": round(statistics.median(r["client_waits_s"] for r in switches), 3),
            "module_phase_medians_s": phase_medians(switches),
            "reference_overhead_median_s": round(statistics.median(r["overhead_s"] for r in reference), 3),
            "module_overhead_max_cold_s": max(r["overhead_s"] for r in cold if r["changed"]),
            "noop_s": ours[-1]["total_s"],
        },
        "targets": {"module_overhead_s": 1.0},
        "verdicts": {"module_overhead_le_1s": max(r["overhead_s"] for r in switches) <= 1.0},
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
