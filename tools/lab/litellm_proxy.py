"""The REAL LiteLLM proxy as a child process: start it on a config directory,
wait until it answers, stop it. Used by the gateway tests, the benchmarks and
the lab's workload runner alike."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from . import litellm_zygote


def litellm_executable():
    """The ``litellm`` script of the running interpreter's environment, else PATH's."""
    beside = os.path.join(os.path.dirname(sys.executable), "litellm")
    return beside if os.path.exists(beside) else shutil.which("litellm")


class LiteLLMProxy:
    def __init__(self, config_dir, port, env=None, log_path=None, host="127.0.0.1"):
        self.config_dir = str(config_dir)
        self.port = port
        self.host = host
        self.env = dict(env or {})
        self.log_path = log_path or os.path.join(self.config_dir, "litellm.log")
        self.process = None
        self.started_in = None

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def start(self, timeout=90):
        executable = litellm_executable()
        if not executable:
            raise RuntimeError("the litellm proxy is not installed in this environment (pip install 'litellm[proxy]')")
        env = dict(os.environ, **self.env)
        # The proxy's own telemetry and update checks would reach out to the internet.
        env.setdefault("LITELLM_TELEMETRY", "False")
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        began = time.monotonic()
        argv = ["--config", os.path.join(self.config_dir, "config.yaml"), "--host", self.host, "--port",
                str(self.port), "--num_workers", "1"]
        if os.environ.get("LAB_LITELLM_FORK") == "1":  # the tests: forked from a zygote (tools/lab/litellm_zygote.py)
            self.process = litellm_zygote.spawn(argv, env, self.config_dir, self.log_path)
        else:
            log = open(self.log_path, "ab")
            self.process = subprocess.Popen([executable] + argv, cwd=self.config_dir, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("litellm exited with %s while starting; see %s:\n%s"
                                   % (self.process.returncode, self.log_path, self.log_tail()))
            try:
                with urllib.request.urlopen(self.url + "/health/readiness", timeout=2) as response:
                    if response.status == 200:
                        self.started_in = time.monotonic() - began
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("litellm did not become ready in %ss; see %s:\n%s" % (timeout, self.log_path, self.log_tail()))

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
