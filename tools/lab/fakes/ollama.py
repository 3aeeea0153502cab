"""FAKE Ollama server: the parts of Ollama's API the collection and LiteLLM use,
following Ollama v0.13.5 (server/routes.go, server/sched.go, envconfig/config.go,
api/types.go).

Model pulls "download" from a pretend registry (no registry is reachable
here): names in ``registry`` pull after ``pull_delay`` seconds with Ollama's
own NDJSON progress lines; anything else fails the way Ollama does.

Generation speaks both native formats exactly: ``/api/generate`` streams lines
with a ``response`` field, ``/api/chat`` lines with a ``message`` field
(LiteLLM's ``ollama/`` and ``ollama_chat/`` providers parse one each), plus
the OpenAI-compatible ``/v1/chat/completions``.

Models in memory, as the scheduler keeps them (server/sched.go):

- a model's first use pays ``cold_load`` seconds (a CPU load takes minutes);
  loads happen one at a time; ``/api/version`` answers at once meanwhile;
- a request's ``keep_alive`` (api.Duration: a number is seconds, a string a Go
  duration that needs a unit, negative is for good, 0 unloads after the request;
  a bad one is Ollama's 400) sets how long the model stays loaded after its last
  request; without one a loaded model keeps its duration, a model being loaded
  gets ``OLLAMA_KEEP_ALIVE`` (envconfig.KeepAlive: 5m by default). The
  OpenAI-compatible endpoint takes no keep_alive. A model whose time ran out is
  unloaded: the next use pays the cold load again;
- ``/api/generate`` with a model and no prompt (``/api/chat`` with no messages)
  loads it and answers ``done_reason: load``; with ``keep_alive: 0`` it unloads
  it (``done_reason: unload``), as server/routes.go does;
- ``/api/ps`` lists the loaded models with ``expires_at`` (for good: now plus
  Go's largest duration, some 292 years, as PsHandler shows it);
- ``parallel`` requests generate at once per model (OLLAMA_NUM_PARALLEL, 1 by
  default), later ones queue; with a ``timing`` (tools/lab/timing_profiles.py) the
  first token comes after the prompt's evaluation (the prompt cut to
  ``context_length``, OLLAMA_CONTEXT_LENGTH) and each further one a decode
  interval later. A plain answer is sent whole at the end, a streamed one chunk
  by chunk, its headers with the first.

``behaviour = "hang"``: accepts connections and answers nothing at all.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time

from ..timing_profiles import estimate_tokens, message_text, spread
from .http import FakeHandler, FakeServer, sleep_until

ANSWER = "Hello from the fake Ollama model."
FOREVER = float("inf")
# Go's largest time.Duration (math.MaxInt64 nanoseconds): what Ollama stores for "for good".
MAX_DURATION = datetime.timedelta(microseconds=(2 ** 63 - 1) // 1000)
DEFAULT_KEEP_ALIVE = 300.0  # envconfig.KeepAlive: 5 minutes
DEFAULT_CONTEXT_LENGTH = 4096  # envconfig.ContextLength in v0.13.5
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def canonical(name):
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else name + ":latest"


def parse_go_duration(text):
    """Seconds of a Go duration string (time.ParseDuration), or ValueError with Go's message."""
    original, rest, sign = text, text, 1.0
    if rest and rest[0] in "+-":
        sign, rest = (-1.0 if rest[0] == "-" else 1.0), rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError('time: invalid duration "%s"' % original)
    total = 0.0
    while rest:
        number, unit = _PART.match(rest).groups()
        if not number or number == ".":
            raise ValueError('time: invalid duration "%s"' % original)
        if not unit:
            raise ValueError('time: missing unit in duration "%s"' % original)
        if unit not in _UNITS:
            raise ValueError('time: unknown unit "%s" in duration "%s"' % (unit, original))
        total += float(number) * _UNITS[unit]
        rest = rest[len(number) + len(unit):]
    return sign * total


def request_keep_alive(value):
    """A request's keep_alive in seconds (FOREVER for good), as api.Duration.UnmarshalJSON reads it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        go_types = {bool: "bool", list: "[]interface {}", dict: "map[string]interface {}"}
        raise ValueError("Unsupported type: '%s'" % go_types.get(type(value), type(value).__name__))
    seconds = float(value) if not isinstance(value, str) else parse_go_duration(value)
    return FOREVER if seconds < 0 else seconds


def env_keep_alive(text):
    """OLLAMA_KEEP_ALIVE as envconfig.KeepAlive reads it: a Go duration or whole seconds; 5m otherwise."""
    seconds = DEFAULT_KEEP_ALIVE
    if text:
        try:
            seconds = parse_go_duration(text)
        except ValueError:
            if re.match(r"^[-+]?[0-9]+$", text.strip()):
                seconds = float(int(text))
    return FOREVER if seconds < 0 else seconds


def rfc3339(moment):
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Runner:
    """A model in memory (server/sched.go runnerRef): its users, keep-alive and expiry."""

    def __init__(self, session, parallel):
        self.refs = 1
        self.session = session
        self.expires = None  # time.monotonic() of the unload, once idle
        self.slots = threading.Semaphore(parallel) if parallel else None


class OllamaHandler(FakeHandler):
    server_version = "fake-ollama"

    def do_GET(self):
        self.server.count("GET " + self.path)
        if self.server.behaviour == "hang":
            return self.hang()
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
        if self.path == "/api/ps":
            return self.send_body(200, {"models": self.server.running()})
        return self.send_body(404, "404 page not found", "text/plain")

    def do_POST(self):
        self.server.count("POST " + self.path)
        if self.server.behaviour == "hang":
            return self.hang()
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
        if self.server.behaviour == "hang":
            return self.hang()
        body = self.read_json() or {}
        name = canonical(body.get("model") or body.get("name") or "")
        if self.path != "/api/delete":
            return self.send_body(404, "404 page not found", "text/plain")
        if name not in self.server.models:
            return self.send_body(404, {"error": "model '%s' not found" % name})
        self.server.models.discard(name)
        return self.send_body(200, "", "text/plain")

    # -- generation -------------------------------------------------------------------

    def _generate(self, body, chat):
        """/api/generate and /api/chat (server/routes.go GenerateHandler, ChatHandler)."""
        server = self.server
        name = canonical(body.get("model") or "")
        server.count("generate:" + name)
        try:
            keep_alive = None if body.get("keep_alive") is None else request_keep_alive(body["keep_alive"])
        except ValueError as err:
            return self.send_body(400, {"error": str(err)})
        if name not in server.models:
            return self.send_body(404, {"error": "model '%s' not found" % name.split(":latest")[0]})
        empty = not body.get("messages") if chat else not body.get("prompt")
        created = datetime.datetime.now(datetime.timezone.utc)

        def event(text, done, reason=None, **metrics):
            event = {"model": body.get("model"), "created_at": rfc3339(created)}
            if chat:
                event["message"] = {"role": "assistant", "content": text}
            else:
                event["response"] = text
            event["done"] = done
            if reason:
                event["done_reason"] = reason
            event.update((k, v) for k, v in metrics.items() if v)
            return event

        if empty and keep_alive == 0:  # "expire the runner"
            server.expire(name)
            return self.send_body(200, event("", True, "unload"))
        began = time.monotonic()
        runner, load_seconds = server.acquire(name, keep_alive)
        try:
            if empty:  # "load the model"
                return self.send_body(200, event("", True, "load"))
            server.note_generate()
            prompt = message_text(body.get("messages")) if chat else (body.get("system") or "") + body["prompt"]
            options = body.get("options") or {}
            stream = body.get("stream", True)
            with server.generation(runner, name, prompt, options.get("num_predict"), len(ANSWER.split())) as run:
                slots = spread([w + " " for w in ANSWER.split()], run["tokens"])
                for index, slot in enumerate(server.tokens(run, slots, self.client_gone)):
                    if stream:
                        if index == 0:
                            self.start_chunks("application/x-ndjson")
                        self.send_chunk(json.dumps(event("".join(slot), False)) + "\n")
            ns = 1e9
            done = event("" if stream else ANSWER, True, "stop", total_duration=int((time.monotonic() - began) * ns),
                         load_duration=int(load_seconds * ns), prompt_eval_count=run["prompt_tokens"],
                         prompt_eval_duration=int(run["prompt_seconds"] * ns), eval_count=run["tokens"],
                         eval_duration=int(run["eval_seconds"] * ns))
            if not stream:
                return self.send_body(200, done)
            self.send_chunk(json.dumps(done) + "\n")
            return self.end_chunks()
        finally:
            server.release_runner(name, runner)

    def _openai_chat(self, body):
        """Ollama's OpenAI-compatible endpoint, plain and streamed (server-sent events); no keep_alive there."""
        server = self.server
        name = canonical(body.get("model") or "")
        server.count("generate:" + name)
        if name not in server.models:
            return self.send_body(404, {"error": {
                "message": 'model "%s" not found, try pulling it first' % body.get("model"), "type": "api_error",
                "param": None, "code": None}})
        server.note_generate()
        runner, _ = server.acquire(name, None)
        try:
            created, model = int(time.time()), body.get("model")
            stream = body.get("stream")

            def chunk(delta, finish=None):
                return "data: " + json.dumps({"id": "chatcmpl-%d" % created, "object": "chat.completion.chunk",
                                              "created": created, "model": model, "system_fingerprint": "fp_ollama",
                                              "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) \
                    + "\n\n"

            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            with server.generation(runner, name, message_text(body.get("messages")), limit,
                                   len(ANSWER.split())) as run:
                slots = spread([w + " " for w in ANSWER.split()], run["tokens"])
                for index, slot in enumerate(server.tokens(run, slots, self.client_gone)):
                    if stream:
                        if index == 0:
                            self.start_chunks("text/event-stream")
                        self.send_chunk(chunk({"role": "assistant", "content": "".join(slot)}))
            if not stream:
                return self.send_body(200, {
                    "id": "chatcmpl-%d" % created, "object": "chat.completion", "created": created, "model": model,
                    "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": run["prompt_tokens"], "completion_tokens": run["tokens"],
                              "total_tokens": run["prompt_tokens"] + run["tokens"]}})
            self.send_chunk(chunk({"role": "assistant", "content": ""}, "stop"))
            self.send_chunk("data: [DONE]\n\n")
            return self.end_chunks()
        finally:
            server.release_runner(name, runner)

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


class _Generation:
    """One request generating on a runner: waits for a slot, notes what it did."""

    def __init__(self, server, runner, record):
        self.server, self.runner, self.record = server, runner, record

    def __enter__(self):
        if self.runner.slots:
            self.runner.slots.acquire()
        self.record["started"] = time.monotonic()
        with self.server.lock:
            self.server.generations.append(self.record)
        return self.record

    def __exit__(self, *exc):
        self.record["finished"] = time.monotonic()
        if self.runner.slots:
            self.runner.slots.release()
        return False


class _Loaded:
    def __init__(self, server):
        self.server = server

    def names(self):
        with self.server.lock:
            return {name for name in list(self.server.runners) if self.server._alive(name)}

    def __contains__(self, name):
        return canonical(name) in self.names()

    def __iter__(self):
        return iter(sorted(self.names()))

    def __len__(self):
        return len(self.names())

    def clear(self):
        with self.server.lock:
            self.server.runners.clear()


class FakeOllama(FakeServer):
    """A FAKE Ollama 0.13.5. ``cold_load`` (seconds, as given) defaults to the ``timing``'s cold load,
    or none; ``keep_alive``, ``parallel`` and ``context_length`` are OLLAMA_KEEP_ALIVE,
    OLLAMA_NUM_PARALLEL and OLLAMA_CONTEXT_LENGTH (``parallel`` defaults to the timing's, or no limit)."""

    def __init__(self, address=("127.0.0.1", 0), models=(), registry=("qwen2.5:3b", "llama3.2:1b"), pull_delay=0.0,
                 cold_load=None, timing=None, keep_alive=None, parallel=None, context_length=None):
        super().__init__(address, OllamaHandler)
        self.models = {canonical(m) for m in models}
        self.registry = {canonical(m) for m in registry}
        self.pull_delay = pull_delay
        self.timing = timing
        # Seconds the first request for a model waits while Ollama loads it (CPU: minutes for real).
        self.cold_load = cold_load if cold_load is not None else (timing.cold_load() if timing else 0.0)
        self.keep_alive = env_keep_alive(keep_alive)
        self.parallel = parallel if parallel is not None else (timing.parallel if timing else None)
        self.context_length = int(context_length or DEFAULT_CONTEXT_LENGTH)
        self.behaviour = "ok"
        self.runners = {}
        self.load_lock = threading.Lock()  # the scheduler loads one model at a time
        self.loading = None  # the model being loaded now
        self.loads = 0
        self.generations = []
        self.first_generate_at = None

    @property
    def loaded(self):
        """The models in memory now: ``name in server.loaded``; ``server.loaded.clear()`` unloads them all,
        as a restarted Ollama has none."""
        return _Loaded(self)

    def reset_counters(self):
        super().reset_counters()
        self.first_generate_at = None
        self.generations = []

    def note_generate(self):
        with self.lock:
            if self.first_generate_at is None:
                self.first_generate_at = time.monotonic()

    # -- the scheduler (server/sched.go) ------------------------------------------------------

    def _alive(self, name):
        """The runner of ``name`` if it is still in memory (an expired one is unloaded here). Under the lock."""
        runner = self.runners.get(name)
        if runner and runner.refs <= 0 and runner.expires is not None and time.monotonic() >= runner.expires:
            del self.runners[name]
            return None
        return runner

    def acquire(self, name, keep_alive):
        """The model's runner, loaded first when it is not in memory; (runner, seconds spent loading)."""
        while True:
            with self.lock:
                runner = self._alive(name)
                if runner:
                    runner.refs += 1
                    runner.expires = None
                    if keep_alive is not None:
                        runner.session = keep_alive
                    return runner, 0.0
            with self.load_lock:
                with self.lock:
                    if self._alive(name):
                        continue
                    self.loading = name
                began = time.monotonic()
                time.sleep(self.cold_load)
                with self.lock:
                    self.loading = None
                    self.loads += 1
                    runner = self.runners[name] = Runner(self.keep_alive if keep_alive is None else keep_alive,
                                                         self.parallel)
                    return runner, time.monotonic() - began

    def release_runner(self, name, runner):
        """A request is done with the model: when none uses it, it expires after its keep_alive."""
        with self.lock:
            runner.refs -= 1
            if runner.refs > 0:
                return
            if runner.session <= 0:
                if self.runners.get(name) is runner:
                    del self.runners[name]
            else:
                runner.expires = time.monotonic() + runner.session

    def expire(self, name):
        """keep_alive 0 with no prompt: unload now, or as soon as the requests using it are done."""
        with self.lock:
            runner = self._alive(name)
            if runner:
                runner.session = 0
                if runner.refs <= 0:
                    del self.runners[name]

    def running(self):
        """/api/ps: the loaded models, the longest left first (PsHandler)."""
        now_mono, now = time.monotonic(), datetime.datetime.now(datetime.timezone.utc)
        models = []
        with self.lock:
            for name in list(self.runners):
                runner = self._alive(name)
                if not runner:
                    continue
                left = runner.session if runner.expires is None else runner.expires - now_mono
                expires = now + (MAX_DURATION if left == FOREVER else datetime.timedelta(seconds=max(left, 0)))
                models.append((expires, {
                    "name": name, "model": name, "size": 1, "digest": "sha256:fake",
                    "details": {"format": "gguf", "family": "fake", "families": ["fake"], "parameter_size": "3B",
                                "quantization_level": "Q4_K_M"},
                    "expires_at": rfc3339(expires), "size_vram": 0, "context_length": self.context_length}))
        return [entry for _, entry in sorted(models, key=lambda item: item[0], reverse=True)]

    # -- timing -----------------------------------------------------------------------------

    def generation(self, runner, name, prompt, limit, own_tokens):
        tokens = self.timing.answer_tokens(limit, own_tokens) if self.timing else own_tokens
        record = {"model": name, "tokens": tokens, "generated": 0, "prompt_seconds": 0.0, "eval_seconds": 0.0,
                  "prompt_tokens": min(estimate_tokens(prompt), self.context_length)}
        return _Generation(self, runner, record)

    def tokens(self, record, slots, gone=None):
        """Yield each token's text pieces when it is generated: the first after the prompt's evaluation;
        stop (ClientGone) when ``gone`` says the client hung up."""
        began = due = time.monotonic()
        for index, slot in enumerate(slots):
            if self.timing:
                due += self.timing.ttft(record["prompt_tokens"]) if index == 0 else self.timing.token_interval()
                sleep_until(due, gone)
            if index == 0:
                record["prompt_seconds"] = time.monotonic() - began
            record["generated"] = index + 1
            yield slot
        record["eval_seconds"] = time.monotonic() - began - record["prompt_seconds"]
