#!/usr/bin/env python3
"""On-demand GPU modes on the local lab, beside the reference way in ONE run: a client that wants
vllm-r1 while the GPU is in ml.

- reference: the operator switches by hand (``ansible-playbook gpu_mode.yml -e mode=r1``), then the
  client asks; the time from the decision to the answer.
- on demand: the client asks, the gateway holds its request while gpu-mode-switcher loads r1; the
  request's own time, against the switch's rollout (vLLM's pod replaced and R1 loaded), which is
  the load time the acceptance counts from (the answer within it plus 2 s).
- 20 requests at once: how many switches, and their latencies.

The lab runs the REAL LiteLLM proxy and the FAKE vLLM on the realistic timing profile, its loads
scaled by --load-scale (R1 loads in 90 s unscaled). Between runs the mode returns to ml and the
policy's dwell time passes.

Usage: python benchmarks/gpu_on_demand.py [--load-scale 0.1] [--out benchmarks/results/gpu_on_demand.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import yaml

from lab import ROOT
from lab.cluster import Lab
from report import write_report

DWELL, IDLE = 10, 600  # no idle return during the run: the benchmark switches back by hand
PORT = 16447


def playbook(state, *args):
    executable = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    began = time.monotonic()
    done = subprocess.run([executable, *args], cwd=ROOT, env=dict(os.environ, LAB_STATE_DIR=state),
                          capture_output=True, text=True, timeout=1200)
    if done.returncode:
        raise RuntimeError("ansible-playbook %s failed:\n%s" % (" ".join(args), done.stdout[-3000:]))
    return time.monotonic() - began


def chat(lab, model):
    """(status, seconds, the model that answered) of one chat through LiteLLM's Service."""
    with open(os.path.join(lab.state_dir, "secrets", "litellm_master_key")) as handle:
        key = "sk-" + handle.read().strip()
    address = lab.store.get("services", "ml", "litellm")["spec"]["clusterIP"]
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}).encode()
    request = urllib.request.Request("http://%s:4000/v1/chat/completions" % address, data=body,
                                     headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    began = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return 200, round(time.monotonic() - began, 3), json.load(response)["model"]
    except urllib.error.HTTPError as err:
        return err.code, round(time.monotonic() - began, 3), err.read().decode()[:200]


def switches(lab):
    events = sorted(lab.store.list("events", "ml"), key=lambda e: e["metadata"]["name"])
    return [json.loads(a) for a in ((e["metadata"].get("annotations") or {}).get("homelab.inference/switch")
                                    for e in events) if a]


def next_switch(lab, before, timeout=60):
    """The record of the switch after the first ``before``: its Event is written once it is verified,
    after the held requests were answered."""
    deadline = time.monotonic() + timeout
    while len(switches(lab)) <= before:
        if time.monotonic() > deadline:
            raise RuntimeError("no switch recorded within %ss" % timeout)
        time.sleep(0.2)
    return switches(lab)[before]


def back_to_ml(lab, state, policy):
    playbook(state, "gpu_mode.yml", "-e", "mode=ml", "-e", "@%s" % policy)
    time.sleep(DWELL + 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load-scale", type=float, default=0.1)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "gpu_on_demand.json"))
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="gpu-on-demand-")
    policy = os.path.join(base, "policy.yml")
    with open(policy, "w") as handle:
        yaml.safe_dump({"inference_gpu_on_demand": {"enabled": True, "min_dwell_seconds": DWELL,
                                                    "idle_seconds": IDLE}}, handle)
    lab = Lab(os.path.join(base, "lab"), port=PORT, load_delay=None, persist=False, profile="realistic",
              load_scale=args.load_scale).start()
    state = lab.state_dir
    try:
        converge = playbook(state, "site.yml", "--skip-tags", "verify", "-e", "@%s" % policy)
        time.sleep(DWELL + 1)
        # The reference: the operator switches, then the client asks.
        began = time.monotonic()
        playbook(state, "gpu_mode.yml", "-e", "mode=r1", "-e", "@%s" % policy)
        answer = chat(lab, "vllm-r1")
        reference = {"seconds": round(time.monotonic() - began, 3), "answered": answer[:1] + answer[2:],
                     "switch": switches(lab)[-1]["seconds"]}
        back_to_ml(lab, state, policy)
        # On demand: the client asks.
        before = len(switches(lab))
        answer = chat(lab, "vllm-r1")
        record = next_switch(lab, before)
        on_demand = {"seconds": answer[1], "answered": answer[:1] + answer[2:], "switch": record["seconds"],
                     "by": record["by"].split("/")[0],
                     "over_the_load_s": round(answer[1] - record["seconds"]["rollout"], 3)}
        back_to_ml(lab, state, policy)
        # 20 at once.
        before, answers = len(switches(lab)), []
        threads = [threading.Thread(target=lambda: answers.append(chat(lab, "vllm-r1"))) for dummy in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        record = next_switch(lab, before)
        time.sleep(3)  # a second switch, if any, would show by now
        latencies = sorted(a[1] for a in answers)
        concurrent = {"requests": len(answers), "answered_by_vllm_r1": sum(1 for a in answers if a[0] == 200 and
                                                                          a[2] == "vllm-r1"),
                      "switches": len(switches(lab)) - before, "p50_s": statistics.median(latencies),
                      "max_s": latencies[-1], "rollout_s": record["seconds"]["rollout"],
                      "over_the_load_max_s": round(latencies[-1] - record["seconds"]["rollout"], 3)}
    finally:
        lab.stop()
    report = {
        "benchmark": "gpu_on_demand",
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "lab_profile": "realistic", "load_scale": args.load_scale, "r1_load_s": round(90.0 * args.load_scale, 3),
        "converge_s": round(converge, 1),
        "reference_operator_then_request": reference,
        "on_demand_first_request": on_demand,
        "on_demand_20_concurrent": concurrent,
        "acceptance": {"first_request_within_load_plus_2_s": on_demand["over_the_load_s"] <= 2,
                       "one_switch_for_20_requests": concurrent["switches"] == 1},
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
