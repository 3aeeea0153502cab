"""A rig for the gateway tests and benchmarks: the REAL LiteLLM proxy on the
config the litellm role renders, in front of FAKE upstreams on loopback.

The only change to the rendered config is where the upstreams are
(``litellm_api_bases``), plus the catalog values a caller states itself."""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import yaml
from ansible_collections.homelab.inference.plugins.plugin_utils._litellm_config import client_key_table

from lab.fakes.gemini import FakeGemini
from lab.fakes.ollama import FakeOllama
from lab.fakes.openai_compat import FakeChatServer
from lab.litellm_proxy import LiteLLMProxy
from lab.timing_profiles import Timing

from .playbook import ansible_playbook

MASTER_KEY = "sk-test-master-0123456789abcdef0123"  # 35 characters: the preflight wants 32 or more
PROVIDER_KEYS = {"openai": "sk-test-openai", "groq": "gsk-test-groq", "gemini": "test-gemini",
                 "mistral": "test-mistral"}
KEY_ENV = {"openai": "OPENAI_API_KEY", "groq": "GROQ_API_KEY", "gemini": "GEMINI_API_KEY",
           "mistral": "MISTRAL_API_KEY"}


# Servers the tests start listen below Linux's ephemeral range (32768-60999): a port
# the kernel hands out (bind to 0) is the kind an outgoing connection takes next, so
# between choosing it and listening on it another process's client socket could hold it.
SERVER_PORTS = (20000, 32767)


def free_port():
    """A port free now on 127.0.0.1, chosen at random below the ephemeral range."""
    while True:
        port = random.randint(*SERVER_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class Upstreams:
    """One FAKE per backend, each on its own loopback port. ``profile``: the lab's timing
    profile for the FAKE vLLM and Ollama (tools/lab/timing_profiles.py); None answers at once."""

    def __init__(self, vllm_models=("vllm-qwen",), profile=None, time_scale=1.0):
        self.vllm_port = free_port()
        self.timing = {kind: Timing(kind, profile, time_scale=time_scale) for kind in ("vllm", "ollama")} \
            if profile else {}
        self.vllm = FakeChatServer(("127.0.0.1", self.vllm_port), "vllm", list(vllm_models),
                                   **self._timed("vllm")).start()
        self.ollama = FakeOllama(models=["qwen2.5:3b", "llama3.2:1b"], **self._timed("ollama")).start()
        self.openai = FakeChatServer(flavour="openai", models=["gpt-4o-mini"], api_key=PROVIDER_KEYS["openai"]).start()
        self.groq = FakeChatServer(flavour="groq", models=["llama-3.3-70b-versatile", "mixtral-8x7b-32768"],
                                   api_key=PROVIDER_KEYS["groq"]).start()
        self.mistral = FakeChatServer(flavour="mistral", models=["mistral-small-latest"],
                                      api_key=PROVIDER_KEYS["mistral"]).start()
        self.gemini = FakeGemini(api_key=PROVIDER_KEYS["gemini"]).start()

    @property
    def api_bases(self):
        return {"vllm": "http://127.0.0.1:%d/v1" % self.vllm_port, "ollama": self.ollama.url,
                "openai": self.openai.url + "/v1", "groq": self.groq.url + "/openai/v1",
                "mistral": self.mistral.url + "/v1", "gemini": self.gemini.url + "/v1beta"}

    def all(self):
        return [self.vllm, self.ollama, self.openai, self.groq, self.mistral, self.gemini]

    def _timed(self, kind):
        return {"timing": self.timing[kind]} if kind in self.timing else {}

    def restart_vllm(self, **settings):
        """A new vLLM process on the same port (after a stop or a kill)."""
        self.vllm.stop()
        old = self.vllm
        self.vllm = FakeChatServer(("127.0.0.1", self.vllm_port), "vllm", settings.pop("models", old.models),
                                   **dict(self._timed("vllm"), **settings)).start()
        return self.vllm

    def chat_hits(self):
        """Chat requests each upstream has received."""
        return {"vllm": self.vllm.hits.get("chat", 0),
                "ollama": sum(n for k, n in self.ollama.hits.items() if k.startswith("generate:")),
                "openai": self.openai.hits.get("chat", 0), "groq": self.groq.hits.get("chat", 0),
                "mistral": self.mistral.hits.get("chat", 0), "gemini": self.gemini.hits.get("chat", 0)}

    def stop(self):
        for server in self.all():
            server.stop()


# The litellm objects rendered per set of variables, in this process: a render is an
# ansible-playbook run of several seconds, and test modules ask for the same one per test.
_RENDERED = {}


def render_gateway(target, upstreams, **overrides):
    """Render the litellm role; return (config dir with the ConfigMap's files, the pod's env)."""
    extra = {"litellm_api_bases": upstreams.api_bases, "litellm_master_key": MASTER_KEY,
             "litellm_provider_keys": PROVIDER_KEYS}
    extra.update(overrides)
    os.makedirs(str(target), exist_ok=True)
    rendered_as = json.dumps(extra, sort_keys=True)
    if rendered_as not in _RENDERED:
        render_dir = os.path.join(str(target), "render")
        vars_file = os.path.join(str(target), "vars.json")
        with open(vars_file, "w") as handle:
            json.dump(extra, handle)
        ansible_playbook("site.yml", "--tags", "render", "-e", "render_dir=%s" % render_dir, "-e", "@" + vars_file,
                         check=True)
        with open(os.path.join(render_dir, "litellm.yaml")) as handle:
            _RENDERED[rendered_as] = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(handle) if o}
    objects = copy.deepcopy(_RENDERED[rendered_as])
    config_dir = os.path.join(str(target), "etc-litellm")
    os.makedirs(config_dir, exist_ok=True)
    for name, content in objects[("ConfigMap", "litellm-config")]["data"].items():
        with open(os.path.join(config_dir, name), "w") as handle:
            handle.write(content)
    container = objects[("Deployment", "litellm")]["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    # The rendered Secret is redacted; the pod gets the real values, which the test chose.
    env["LITELLM_MASTER_KEY"] = extra["litellm_master_key"]
    if not extra.get("litellm_database_url"):
        env["INFERENCE_CLIENT_KEYS"] = json.dumps(client_key_table(extra.get("litellm_client_keys") or []))
    for backend, key in extra["litellm_provider_keys"].items():
        env[KEY_ENV[backend]] = key
    return config_dir, env, objects


class Gateway:
    """A running proxy and a small client for it."""

    def __init__(self, config_dir, env, port=None):
        self.proxy = LiteLLMProxy(config_dir, port or free_port(), env=env)

    def start(self):
        self.proxy.start()
        return self

    def restart(self):
        self.proxy.stop()
        return self.start()

    def stop(self):
        self.proxy.stop()

    @property
    def url(self):
        return self.proxy.url

    def request(self, method, path, body=None, key=MASTER_KEY, timeout=60):
        """(status, headers, text, seconds)."""
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = "Bearer " + key
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        began = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read().decode(), time.monotonic() - began
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read().decode(), time.monotonic() - began

    def chat(self, model, stream=False, key=MASTER_KEY, timeout=60):
        """(status, parsed answer or error, headers, seconds); a stream is parsed into its events."""
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream,
                "max_tokens": 16}
        status, headers, text, seconds = self.request("POST", "/v1/chat/completions", body, key=key, timeout=timeout)
        if stream and status == 200:
            return status, parse_sse(text), headers, seconds
        try:
            return status, json.loads(text), headers, seconds
        except ValueError:
            return status, text, headers, seconds


def parse_sse(text):
    """Server-sent events: a list of parsed ``data:`` payloads, ``"[DONE]"`` kept as is."""
    events = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: "):].strip()
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def streamed_text(events):
    return "".join((e["choices"][0]["delta"].get("content") or "") for e in events
                   if isinstance(e, dict) and e.get("choices"))


class RedisServer:
    """A real redis-server (Debian's) on a loopback port, data kept in memory."""

    def __init__(self, directory, port=None):
        self.port = port or free_port()
        self.directory = str(directory)
        self.process = None

    def start(self):
        executable = shutil.which("redis-server")
        if not executable:
            raise RuntimeError("redis-server is not installed; `make test` installs Debian's redis-server")
        self.process = subprocess.Popen([executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", self.directory],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)
