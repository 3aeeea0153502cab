"""FAKE Ollama server: the parts of Ollama's API the collection and LiteLLM use.

Model pulls "download" from a pretend registry (no registry is reachable
here): names in ``registry`` pull after ``pull_delay`` seconds with Ollama's
own NDJSON progress lines; anything else fails the way Ollama does.
"""

from __future__ import annotations

import json
import time

from .http import FakeHandler, FakeServer


def canonical(name):
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


class OllamaHandler(FakeHandler):
    server_version = "fake-ollama"

    def do_GET(self):
        self.server.count("GET " + self.path)
        if self.path == "/api/version":
            return self.send_body(200, {"version": "0.13.5"})
        if self.path == "/api/tags":
            models = [{"name": n, "model": n, "size": 1, "digest": "sha256:fake",
                       "modified_at": "2026-01-01T00:00:00Z"} for n in sorted(self.server.models)]
            return self.send_body(200, {"models": models})
        return self.send_body(404, "404 page not found", "text/plain")

    def do_POST(self):
        self.server.count("POST " + self.path)
        body = self.read_json()
        if body is None:
            return self.send_body(400, {"error": "invalid character in request body"})
        if self.path == "/api/pull":
            return self._pull(canonical(body.get("model") or body.get("name") or ""), body.get("stream", True))
        return self.send_body(404, "404 page not found", "text/plain")

    def do_DELETE(self):
        self.server.count("DELETE " + self.path)
        body = self.read_json() or {}
        name = canonical(body.get("model") or body.get("name") or "")
        if self.path != "/api/delete":
            return self.send_body(404, "404 page not found", "text/plain")
        if name not in self.server.models:
            return self.send_body(404, {"error": "model '%s' not found" % name})
        self.server.models.discard(name)
        return self.send_body(200, "", "text/plain")

    def _pull(self, name, stream):
        if name not in self.server.registry:
            error = {"error": "pull model manifest: file does not exist"}
            if stream:
                return self.send_stream([json.dumps({"status": "pulling manifest"}) + "\n", json.dumps(error) + "\n"])
            return self.send_body(500, error)
        time.sleep(self.server.pull_delay)
        self.server.models.add(name)
        events = [{"status": "pulling manifest"},
                  {"status": "pulling fake-layer", "digest": "sha256:fake", "total": 100, "completed": 100},
                  {"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
        if stream:
            return self.send_stream([json.dumps(e) + "\n" for e in events])
        return self.send_body(200, events[-1])


class FakeOllama(FakeServer):
    def __init__(self, address=("127.0.0.1", 0), models=(), registry=("qwen2.5:3b", "llama3.2:1b"), pull_delay=0.0):
        super().__init__(address, OllamaHandler)
        self.models = {canonical(m) for m in models}
        self.registry = {canonical(m) for m in registry}
        self.pull_delay = pull_delay
