"""FAKE Ollama server: the parts of Ollama's API the collection and LiteLLM use.

Model pulls "download" from a pretend registry (no registry is reachable
here): names in ``registry`` pull after ``pull_delay`` seconds with Ollama's
own NDJSON progress lines; anything else fails the way Ollama does.

Generation speaks both native formats exactly: ``/api/generate`` streams lines
with a ``response`` field, ``/api/chat`` lines with a ``message`` field
(LiteLLM's ``ollama/`` and ``ollama_chat/`` providers parse one each), plus
the OpenAI-compatible ``/v1/chat/completions``. The first use of a model pays
``cold_load`` seconds, as a CPU load does.
"""

from __future__ import annotations

import json
import time

from .http import FakeHandler, FakeServer

ANSWER = "Hello from the fake Ollama model."


def canonical(name):
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


class OllamaHandler(FakeHandler):
    server_version = "fake-ollama"

    def do_GET(self):
        self.server.count("GET " + self.path)
        if self.path == "/api/version":
            return self.send_body(200, {"version": "0.13.5"})
        if self.path == "/v1/models":
            return self.send_body(200, {"object": "list", "data": [
                {"id": n, "object": "model", "created": 1700000000, "owned_by": "library"}
                for n in sorted(self.server.models)]})
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
        if self.path in ("/api/chat", "/api/generate"):
            return self._generate(body, chat=self.path == "/api/chat")
        if self.path == "/v1/chat/completions":
            return self._openai_chat(body)
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

    def _load(self, name):
        """None when the model is loaded (after a cold-load delay on first use), else Ollama's 404 body."""
        if name not in self.server.models:
            return {"error": "model '%s' not found" % name.split(":latest")[0]}
        with self.server.lock:
            cold = name not in self.server.loaded
            self.server.loaded.add(name)
        if cold and self.server.cold_load:
            time.sleep(self.server.cold_load)
        return None

    def _generate(self, body, chat):
        name = canonical(body.get("model") or "")
        self.server.count("generate:" + name)
        self.server.note_generate()
        missing = self._load(name)
        if missing:
            return self.send_body(404, missing)
        stream = body.get("stream", True)
        created = "2026-01-01T00:00:00.000000Z"
        words = ANSWER.split()

        def event(text, done):
            event = {"model": body.get("model"), "created_at": created, "done": done}
            if chat:
                event["message"] = {"role": "assistant", "content": text}
            else:
                event["response"] = text
            if done:
                event.update(done_reason="stop", total_duration=1000000, load_duration=0, prompt_eval_count=9,
                             prompt_eval_duration=1000, eval_count=len(words), eval_duration=1000)
            return event

        if not stream:
            return self.send_body(200, event(ANSWER, True))
        return self.send_stream([json.dumps(event(w + " ", False)) + "\n" for w in words]
                                + [json.dumps(event("", True)) + "\n"])

    def _openai_chat(self, body):
        """Ollama's OpenAI-compatible endpoint, plain and streamed (server-sent events)."""
        name = canonical(body.get("model") or "")
        self.server.count("generate:" + name)
        self.server.note_generate()
        missing = self._load(name)
        if missing:
            return self.send_body(404, {"error": {
                "message": 'model "%s" not found, try pulling it first' % body.get("model"), "type": "api_error",
                "param": None, "code": None}})
        created, model = int(time.time()), body.get("model")
        if not body.get("stream"):
            return self.send_body(200, {
                "id": "chatcmpl-%d" % created, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}})

        def chunk(delta, finish=None):
            return "data: " + json.dumps({"id": "chatcmpl-%d" % created, "object": "chat.completion.chunk",
                                          "created": created, "model": model, "system_fingerprint": "fp_ollama",
                                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        words = ANSWER.split()
        return self.send_stream([chunk({"role": "assistant", "content": w + " "}) for w in words]
                                + [chunk({"role": "assistant", "content": ""}, "stop"), "data: [DONE]\n\n"],
                                content_type="text/event-stream")

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
    def __init__(self, address=("127.0.0.1", 0), models=(), registry=("qwen2.5:3b", "llama3.2:1b"), pull_delay=0.0,
                 cold_load=0.0):
        super().__init__(address, OllamaHandler)
        self.models = {canonical(m) for m in models}
        self.registry = {canonical(m) for m in registry}
        self.pull_delay = pull_delay
        # Seconds the first request for a model waits while Ollama loads it (CPU: minutes for real).
        self.cold_load = cold_load
        self.loaded = set()
        self.first_generate_at = None

    def reset_counters(self):
        super().reset_counters()
        self.first_generate_at = None

    def note_generate(self):
        with self.lock:
            if self.first_generate_at is None:
                self.first_generate_at = time.monotonic()
