"""The local lab's command line.

    python -m lab up [--state-dir .lab] [--port 16443] [--fresh]
                     [--profile realistic|fast] [--time-scale 1] [--load-scale 1]
                     [--load-delay SECONDS] [--ollama-cold-load SECONDS]
    python -m lab status
    python -m lab down
    python -m lab fault fail-model vllm-r1 [--kind oom|error|none]
    python -m lab fault slow-model vllm-r1 --seconds 30
    python -m lab fault api --mode 5xx|timeout --requests 5
    python -m lab fault kill --app vllm [--namespace ml]
    python -m lab fault gpu-driver [--version 535.261.03]   (no version: the lab's default driver)
    python -m lab fault device-plugin [--fail "ERROR_LIBRARY_NOT_FOUND"]   (no --fail: healed)
    python -m lab fault gpu-leak [--off]   (a vLLM that ends keeps its GPU memory; --off frees it)
    python -m lab fault paperless-ai-retries [--attempts 2 --delay 0.5]   (none: the app's 60 x 5 s)
    python -m lab port-forward [-n ai] svc/litellm 4000[:4000]   (kubectl port-forward's stand-in)

``up`` starts the lab in the background (its own process group, pid file in
the state dir) and prints the kubeconfig and the endpoints; ``down`` stops it
and every process it started, also after a crash (the pid files).

Timing of the FAKE vLLM and Ollama (tools/lab/timing_profiles.py): ``--profile``
``realistic`` (the default: measured figures of an RTX 3060 and a 2-CPU Ollama,
the reference system's load times) or ``fast`` (answers at once, loads in a
second or two); ``--time-scale`` multiplies every delay, ``--load-scale`` the
load delays on top of it. ``--load-delay`` / ``--ollama-cold-load`` give the
vLLM load / Ollama cold load in seconds instead (not scaled).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from lab import ROOT, TOOLS, address_slot, port_forward, timing_profiles
from lab.network_policy import Enforcer, remove_chains

DEFAULT_STATE = os.path.join(ROOT, ".lab")


def admin(port, method, path, body=None, timeout=10):
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def read_port(state_dir):
    try:
        with open(os.path.join(state_dir, "lab.port")) as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def cmd_serve(args):
    from lab.cluster import Lab

    lab = Lab(args.state_dir, port=args.port, load_delay=args.load_delay,
              settings={"ollama_cold_load": args.ollama_cold_load}, profile=args.profile,
              time_scale=args.time_scale, load_scale=args.load_scale).start()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    while not stop:
        time.sleep(0.2)
    lab.stop()


def cmd_up(args):
    from lab.workloads import vllm_real

    try:
        real = vllm_real.selected()  # LAB_VLLM: checked here, where a bad value is said at once
    except ValueError as err:
        print("The lab cannot start: %s" % err, file=sys.stderr)
        return 2
    state_dir = os.path.abspath(args.state_dir)
    port = read_port(state_dir)
    if port and _answers(port):
        print("The lab is already up: kubeconfig %s" % os.path.join(state_dir, "kubeconfig"))
        return 0
    if args.fresh:
        cmd_down(args, quiet=True)
        for sub in ("api", "pods", "volumes", "dns.json"):
            path = os.path.join(state_dir, sub)
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else (
                os.path.exists(path) and os.remove(path))
    if _answers(args.port):
        # Another lab (another state dir) serves this port: its answers would pass for ours.
        print("The lab cannot start: port %d is another lab's; stop it (python -m lab --state-dir DIR down) or "
              "give --port" % args.port, file=sys.stderr)
        return 1
    os.makedirs(state_dir, exist_ok=True)
    log = open(os.path.join(state_dir, "lab.out"), "ab")
    began = time.monotonic()
    argv = [sys.executable, "-m", "lab", "--state-dir", state_dir, "serve", "--port", str(args.port),
            "--profile", args.profile, "--time-scale", str(args.time_scale), "--load-scale", str(args.load_scale)]
    if args.load_delay is not None:
        argv += ["--load-delay", str(args.load_delay)]
    if args.ollama_cold_load is not None:
        argv += ["--ollama-cold-load", str(args.ollama_cold_load)]
    process = subprocess.Popen(argv,
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env=dict(os.environ, PYTHONPATH=TOOLS))
    with open(os.path.join(state_dir, "lab.pid"), "w") as handle:
        handle.write(str(process.pid))
    with open(os.path.join(state_dir, "lab.port"), "w") as handle:
        handle.write(str(args.port))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            print("The lab failed to start; see %s" % os.path.join(state_dir, "lab.out"), file=sys.stderr)
            return 1
        if _answers(args.port):
            print("The lab is up in %.1f s (timing: profile %s, time scale %g, load scale %g; vLLM: %s)."
                  % (time.monotonic() - began, args.profile, args.time_scale, args.load_scale,
                     "the REAL CPU build (LAB_VLLM=real)" if real else "the FAKE"))
            print("  kubeconfig: %s" % os.path.join(state_dir, "kubeconfig"))
            print("  API server: http://127.0.0.1:%d" % args.port)
            print("  faults:     python -m lab fault --help")
            print("  stop:       python -m lab down")
            return 0
        time.sleep(0.1)
    print("The lab did not answer within 30 s; see %s" % os.path.join(state_dir, "lab.out"), file=sys.stderr)
    return 1


def _answers(port):
    try:
        admin(port, "GET", "/lab/status", timeout=2)
        return True
    except (OSError, urllib.error.URLError, ValueError):
        return False


def cmd_down(args, quiet=False):
    state_dir = os.path.abspath(args.state_dir)
    pid_file = os.path.join(state_dir, "lab.pid")
    stopped = []
    if os.path.exists(pid_file):
        with open(pid_file) as handle:
            pid = int(handle.read() or 0)
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)
            stopped.append(pid)
        os.remove(pid_file)
    # Whatever a crashed lab left behind: every process it started has a pid file.
    pids_dir = os.path.join(state_dir, "pids")
    for name in os.listdir(pids_dir) if os.path.isdir(pids_dir) else []:
        pid = int(name)
        if pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            stopped.append(pid)
        os.remove(os.path.join(pids_dir, name))
    # And the NetworkPolicy chains of its address slot.
    slot = address_slot.unheld(state_dir)
    if slot is not None and Enforcer.check()[0]:
        remove_chains("LABNP%d" % slot)
    if not quiet:
        print("The lab is down%s." % (" (stopped %d processes)" % len(stopped) if stopped else ""))
    return 0


def cmd_status(args):
    port = read_port(os.path.abspath(args.state_dir))
    if not port or not _answers(port):
        print("The lab is down.")
        return 3
    status = admin(port, "GET", "/lab/status")
    print("The lab is up: %s, kubeconfig %s" % (status["api"], status["kubeconfig"]))
    for pod in status["pods"]:
        print("  pod %-40s %-10s %-8s ready=%s %s" % ("%s/%s" % (pod["namespace"], pod["name"]), pod["node"] or "-",
                                                      pod["phase"], pod["ready"], pod["ip"] or ""))
    for service in status["services"]:
        print("  svc %-40s %s %s" % ("%s/%s" % (service["namespace"], service["name"]), service["clusterIP"],
                                     service["ports"]))
    return 0


def cmd_fault(args):
    port = read_port(os.path.abspath(args.state_dir))
    if not port:
        print("The lab is down.", file=sys.stderr)
        return 3
    if args.fault == "fail-model":
        result = admin(port, "POST", "/lab/faults/fail-model",
                       {"model": args.model, "kind": None if args.kind == "none" else args.kind})
    elif args.fault == "slow-model":
        result = admin(port, "POST", "/lab/faults/slow-model", {"model": args.model, "seconds": args.seconds})
    elif args.fault == "api":
        result = admin(port, "POST", "/lab/faults/api", {"mode": args.mode, "requests": args.requests})
    elif args.fault == "gpu-driver":
        result = admin(port, "POST", "/lab/faults/gpu-driver", {"version": args.version})
    elif args.fault == "gpu-leak":
        result = admin(port, "POST", "/lab/faults/gpu-leak", {"on": not args.off})
    elif args.fault == "device-plugin":
        result = admin(port, "POST", "/lab/faults/device-plugin", {"fail": args.fail})
    elif args.fault == "paperless-ai-retries":
        result = admin(port, "POST", "/lab/faults/paperless-ai-retries", {"attempts": args.attempts,
                                                                          "delay": args.delay})
    else:
        result = admin(port, "POST", "/lab/kill", {"namespace": args.namespace, "app": args.app})
    print(json.dumps(result))
    return 0


def cmd_port_forward(args):
    port = read_port(os.path.abspath(args.state_dir))
    if not port:
        print("The lab is down.", file=sys.stderr)
        return 3
    return port_forward.serve(port, args.namespace, args.target, args.ports, args.address)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", default=os.environ.get("LAB_STATE_DIR", DEFAULT_STATE))
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "serve"):
        sub = commands.add_parser(name)
        sub.add_argument("--port", type=int, default=int(os.environ.get("LAB_PORT", "16443")))
        sub.add_argument("--profile", choices=timing_profiles.NAMES,
                         default=os.environ.get("LAB_PROFILE") or timing_profiles.DEFAULT_PROFILE,
                         help="timing of the FAKE vLLM and Ollama (tools/lab/timing_profiles.py)")
        sub.add_argument("--time-scale", type=float, default=float(os.environ.get("LAB_TIME_SCALE") or 1.0),
                         help="multiplies every delay of the FAKE model servers")
        sub.add_argument("--load-scale", type=float, default=float(os.environ.get("LAB_LOAD_SCALE") or 1.0),
                         help="multiplies their load delays (vLLM's model load, Ollama's cold load) further")
        sub.add_argument("--load-delay", type=float,
                         default=float(os.environ["LAB_LOAD_DELAY"]) if os.environ.get("LAB_LOAD_DELAY") else None,
                         help="seconds the FAKE vLLM takes to load a model, instead of the profile's")
        sub.add_argument("--ollama-cold-load", type=float, default=None,
                         help="seconds the FAKE Ollama takes to load a model, instead of the profile's")
        sub.add_argument("--fresh", action="store_true", help="forget the state of an earlier lab")
    commands.add_parser("down")
    commands.add_parser("status")
    fault = commands.add_parser("fault")
    faults = fault.add_subparsers(dest="fault", required=True)
    fail = faults.add_parser("fail-model")
    fail.add_argument("model")
    fail.add_argument("--kind", choices=["oom", "error", "none"], default="error")
    slow = faults.add_parser("slow-model")
    slow.add_argument("model")
    slow.add_argument("--seconds", type=float)
    api = faults.add_parser("api")
    api.add_argument("--mode", choices=["5xx", "timeout"], default="5xx")
    api.add_argument("--requests", type=int, default=5)
    driver = faults.add_parser("gpu-driver", help="the driver version nvidia-smi reports in GPU pods")
    driver.add_argument("--version")
    plugin = faults.add_parser("device-plugin", help="make the NVIDIA device plugin crash-loop")
    plugin.add_argument("--fail", help="why it fails (its log line); omit to heal it")
    leak = faults.add_parser("gpu-leak", help="a vLLM process that ends keeps its GPU memory (nvidia-smi shows it)")
    leak.add_argument("--off", action="store_true", help="clear the fault and free what it kept")
    retries = faults.add_parser("paperless-ai-retries", help="shorten Paperless-AI's setup-check retries")
    retries.add_argument("--attempts", type=int)
    retries.add_argument("--delay", type=float)
    kill = faults.add_parser("kill")
    kill.add_argument("--app", required=True)
    kill.add_argument("--namespace", default="ml")
    forward = commands.add_parser("port-forward", help="relay local ports to a pod or Service (kubectl's arguments)")
    forward.add_argument("-n", "--namespace", default="default")
    forward.add_argument("--address", default="127.0.0.1")
    forward.add_argument("target", help="pod/NAME or svc/NAME")
    forward.add_argument("ports", nargs="+", help="LOCAL[:REMOTE]")
    args = parser.parse_args(argv)
    handler = {"up": cmd_up, "serve": cmd_serve, "down": cmd_down, "status": cmd_status, "fault": cmd_fault,
               "port-forward": cmd_port_forward}
    return handler[args.command](args) or 0


if __name__ == "__main__":
    sys.exit(main())
