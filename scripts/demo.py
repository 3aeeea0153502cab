#!/usr/bin/env python3
"""The main job, on the local lab: start it, converge site.yml (its last play,
verify.yml, prints its table), switch the GPU to r1 and ask the reasoning
model, switch to gaming and ask vllm-qwen (the Ollama tier answers) and run
verify.yml with the GPU free (the driver check), switch back to ml, print a
summary, stop the lab.

A failure stops with the reason and leaves nothing running.

The lab runs the ``realistic`` timing profile (tools/lab/timing_profiles.py): every
answer takes the time it takes on the reference hardware (an RTX 3060 for
vLLM, two CPUs for Ollama), with the model loads at a tenth of theirs
(``--load-scale 0.1``: R1 loads in 9 s instead of 90, a cold Ollama model in 9
instead of 90), so the demo stays about two minutes while switches keep their
real proportions. ``LAB_PROFILE`` and ``LAB_LOAD_SCALE`` change that
(``LAB_LOAD_SCALE=1`` waits as long as the real loads).

``LAB_VLLM=real`` (``make demo LAB_VLLM=real``) runs the REAL vLLM CPU build on
the lab's tiny models instead of the FAKE vLLM (tools/lab/workloads/vllm_real.py;
docs/lab.md, "The real vLLM"): the answers are the tiny models' fixed texts and
each vLLM start takes vLLM's own time, 25-75 s on two cores."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE = os.environ.get("LAB_STATE_DIR", os.path.join(ROOT, ".lab"))
PORT = int(os.environ.get("LAB_PORT", "16443"))
PROFILE = os.environ.get("LAB_PROFILE") or "realistic"
LOAD_SCALE = os.environ.get("LAB_LOAD_SCALE") or "0.1"
REAL_VLLM = os.environ.get("LAB_VLLM") == "real"  # the lab reads LAB_VLLM itself (and refuses a bad value)
BOLD, OFF = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")


def step(text):
    print("\n%s==> %s%s" % (BOLD, text, OFF), flush=True)


def lab(*args):
    subprocess.run([sys.executable, "-m", "lab", "--state-dir", STATE, *args], cwd=ROOT, check=True,
                   env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tools")))


def playbook(*args):
    """Run a playbook, showing its task lines as progress; the result's recap."""
    began = time.monotonic()
    process = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), *args],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith(("TASK [", "PLAY RECAP")) or "fatal:" in line or "msg: 'GPU mode" in line:
            print("   " + line.rstrip()[:110], flush=True)
    process.wait()
    text = "".join(output)
    if process.returncode:
        errors = [line for line in output if line.startswith("[ERROR]")]
        raise RuntimeError("ansible-playbook %s failed: %s" % (" ".join(args), errors[-1].strip() if errors else
                                                                text[-1500:]))
    return text, time.monotonic() - began


def verify_table(output):
    """The table verify.yml printed (its Summary task's message), as lines."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("TASK [Summary]")), None)
    if start is None:
        return []
    table = []
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith(("TASK [", "PLAY ")):
            break
        if line.startswith("        "):
            table.append(line.strip())
    return table


def master_key():
    with open(os.path.join(STATE, "secrets", "litellm_master_key")) as handle:
        return "sk-" + handle.read().split()[0]


def litellm_url():
    with urllib.request.urlopen("http://127.0.0.1:%d/lab/status" % PORT, timeout=5) as response:
        status = json.load(response)
    service = next(s for s in status["services"] if s["name"] == "litellm")
    return "http://%s:%d" % (service["clusterIP"], service["ports"][0])


def chat(model, question):
    request = urllib.request.Request(litellm_url() + "/v1/chat/completions", method="POST", data=json.dumps({
        "model": model, "max_tokens": 64, "messages": [{"role": "user", "content": question}]}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + master_key()})
    with urllib.request.urlopen(request, timeout=180) as response:
        return json.load(response), response.headers.get("x-litellm-model-group")


def switch(mode, summary):
    output, seconds = playbook("gpu_mode.yml", "-e", "mode=%s" % mode)
    output = re.sub(r"\n\s+", " ", output)  # the callback wraps long messages
    line = re.search(r"msg: '?GPU mode: ([^']*)", output)
    verified = re.search(r"verified: ([a-z_, ]+)", output)
    summary.append((mode, re.search(r"\(([^)]*)\)", line.group(1)).group(1) if line else "?",
                    "%.1f" % seconds, verified.group(1).strip() if verified else "-"))


def main():
    began = time.monotonic()
    summary = []
    try:
        if REAL_VLLM:
            step("Starting the local lab (a Kubernetes API emulator, the REAL vLLM CPU build on tiny models, "
                 "a FAKE Ollama, the REAL LiteLLM)")
            print("   vLLM loads take their own time; Ollama: profile %s, loads scaled by %s" % (PROFILE, LOAD_SCALE))
        else:
            step("Starting the local lab (a Kubernetes API emulator, FAKE GPU model servers, the REAL LiteLLM)")
            print("   timing: profile %s, model loads scaled by %s (tools/lab/timing_profiles.py)" % (PROFILE, LOAD_SCALE))
        lab("up", "--fresh", "--port", str(PORT), "--profile", PROFILE, "--load-scale", LOAD_SCALE)
        step("Converging site.yml on the lab")
        output, seconds = playbook("site.yml")
        summary.append(("site.yml", "-", "%.1f" % seconds, "converged, verify.yml passed"))
        for line in verify_table(output):
            print("   " + line)
        step("Switching the GPU to r1 (the reasoning model)")
        switch("r1", summary)
        answer, group = chat("vllm-r1", "Is 1001 a prime number?")
        message = answer["choices"][0]["message"]
        print("   vllm-r1 answered (tier %s)" % group)
        print("     reasoning: %s" % (message.get("reasoning_content") or "").strip())
        print("     answer:    %s" % message["content"].strip())
        step("Switching to gaming: vLLM stops, the GPU is free")
        switch("gaming", summary)
        answer, group = chat("vllm-qwen", "Hello!")
        print("   vllm-qwen answered by the %s tier: %s" % (group, answer["choices"][0]["message"]["content"]))
        step("verify.yml with the GPU free: a pod of the vLLM image checks the driver")
        output, seconds = playbook("verify.yml")
        print("   " + next((line for line in verify_table(output) if line.startswith("GPU driver")), "no GPU driver row"))
        step("Back to ml")
        switch("ml", summary)
        answer, group = chat("vllm-qwen", "Hello!")
        print("   vllm-qwen answered by the %s tier" % group)
        step("Summary")
        print("   %-9s %-14s %8s  %s" % ("mode", "model", "seconds", "verified"))
        for row in summary:
            print("   %-9s %-14s %8s  %s" % row)
        print("   whole demo: %.1f s" % (time.monotonic() - began))
        return 0
    except (RuntimeError, OSError, urllib.error.URLError, KeyError, subprocess.CalledProcessError) as err:
        print("\nThe demo failed: %s" % err, file=sys.stderr)
        print("Lab logs: %s (lab.log, pods/*/*.log)" % STATE, file=sys.stderr)
        return 1
    finally:
        step("Stopping the lab")
        lab("down")


if __name__ == "__main__":
    sys.exit(main())
