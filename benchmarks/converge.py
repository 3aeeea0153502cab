#!/usr/bin/env python3
"""site.yml's converges on the local lab, this checkout side by side with a reference revision
(default: the last commit before the converge work) in the same run: the first converge of a
fresh lab, the idempotent re-run (as `ansible-playbook site.yml` runs it, verify play included,
and without it: `--skip-tags verify`), and a check-mode run; wall time, the recap and the task
headers printed. The two run in turns, each round on its own fresh lab, so both see the same
machine load. The lab's FAKE model servers run on the `fast` timing profile: the figures are
Ansible's own time, not a model's load.

Usage: python benchmarks/converge.py [--reference 6c80d70] [--rounds 3] [--out benchmarks/results/converge.json]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

from lab import ROOT, TOOLS
from report import write_report

PORT = 16446
TARGETS = {"idempotent_s": 5.0, "first_converge_s": 20.0}
RUNS = {
    "first_converge": ["site.yml"],
    "idempotent": ["site.yml"],
    "idempotent_without_verify": ["site.yml", "--skip-tags", "verify"],
    "check_mode": ["site.yml", "--check"],
}


def lab(state, *args):
    subprocess.run([sys.executable, "-m", "lab", "--state-dir", state, *args], cwd=ROOT, check=True,
                   env=dict(os.environ, PYTHONPATH=TOOLS), capture_output=True)


def playbook(tree, state, args):
    """ansible-playbook from ``tree`` (its ansible.cfg, inventory and collection), timed."""
    executable = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    env = dict(os.environ, LAB_STATE_DIR=state, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    began = time.monotonic()
    result = subprocess.run([executable, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - began
    if result.returncode:
        raise RuntimeError("ansible-playbook %s in %s failed:\n%s" % (" ".join(args), tree, result.stdout[-3000:]))
    match = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)\s+skipped=(\d+)", result.stdout)
    counts = dict(zip(("ok", "changed", "failed", "skipped"), map(int, match.groups())))
    return dict(counts, seconds=round(seconds, 2), task_headers=len(re.findall(r"^TASK \[", result.stdout, re.M)))


def measure(tree, state):
    lab(state, "up", "--fresh", "--port", str(PORT), "--profile", "fast")
    try:
        return {name: playbook(tree, state, args) for name, args in RUNS.items()}
    finally:
        lab(state, "down")


def summary(rounds):
    runs = {run: [r[run] for r in rounds] for run in RUNS}
    out = {}
    for run, results in runs.items():
        seconds = [r["seconds"] for r in results]
        out[run] = {"median_s": round(statistics.median(seconds), 2), "min_s": min(seconds), "max_s": max(seconds),
                    "changed": [r["changed"] for r in results], "task_headers": results[0]["task_headers"]}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default="6c80d70", help="the git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "converge.json"))
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="converge-bench-")
    reference_tree = os.path.join(scratch, "reference")
    subprocess.run(["git", "worktree", "add", "--detach", reference_tree, args.reference], cwd=ROOT, check=True,
                   capture_output=True)
    trees = {"reference": reference_tree, "current": ROOT}
    rounds = {name: [] for name in trees}
    try:
        for number in range(args.rounds):
            # Alternate who goes first, so neither always meets a warmer machine.
            for name in (list(trees) if number % 2 == 0 else list(reversed(list(trees)))):
                print("round %d: %s" % (number + 1, name), file=sys.stderr)
                rounds[name].append(measure(trees[name], os.path.join(scratch, "lab-" + name)))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", reference_tree], cwd=ROOT, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    report = {
        "benchmark": "converge",
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "lab_profile": "fast",
        "revisions": {"reference": args.reference, "current": head.strip() + " (and the working tree)"},
        "rounds": args.rounds,
        "reference": summary(rounds["reference"]),
        "current": summary(rounds["current"]),
        "raw": rounds,
    }
    report["ratios_current_to_reference"] = {
        run: round(report["current"][run]["median_s"] / report["reference"][run]["median_s"], 2) for run in RUNS}
    report["targets"] = TARGETS
    report["verdicts"] = {
        "idempotent_le_5s": report["current"]["idempotent"]["median_s"] <= TARGETS["idempotent_s"],
        "idempotent_without_verify_le_5s":
            report["current"]["idempotent_without_verify"]["median_s"] <= TARGETS["idempotent_s"],
        "first_converge_le_20s": report["current"]["first_converge"]["median_s"] <= TARGETS["first_converge_s"],
        "idempotent_changed_0": all(c == 0 for c in report["current"]["idempotent"]["changed"]),
    }
    write_report(report, args.out)


if __name__ == "__main__":
    main()
