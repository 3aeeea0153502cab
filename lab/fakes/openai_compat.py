"""FAKE OpenAI-compatible servers: vLLM (the GPU model server) and the cloud
providers that speak OpenAI's wire format (OpenAI, Groq, Mistral).

What they reproduce, because tests and LiteLLM depend on it:
- vLLM serves exactly one model name; any other gets vLLM's 404 NotFoundError
  body. With a reasoning parser the reasoning comes back in
  ``reasoning_content`` and ``content`` is clean; without one the raw text
  carries only the closing ``</think>`` (the R1 chat template pre-fills the
  opening tag).
- Streaming is server-sent events, one ``data:`` line per chunk, then
  ``data: [DONE]``.
- Cloud flavour errors use OpenAI's body; 429 carries ``retry-after``.
- A cloud flavour given ``api_key`` answers a request without that bearer key
  with the provider's own 401 (``refusal``), before anything else, as the
  real APIs do; vLLM takes no key (it is started without ``--api-key``).

Timing (``timing``, a ``lab.timing_profiles.Timing``; the vLLM workload passes
the lab's profile, a server built without one answers at once), as vLLM v0.11.0
serves (vllm/entrypoints/openai/api_server.py, ``create_chat_completion``: a
``JSONResponse`` for a plain request, a ``StreamingResponse`` for a streamed one;
serving_chat.py, ``chat_completion_full_generator`` and
``chat_completion_stream_generator``):

- a plain answer sends NOTHING until the whole completion is generated, then
  headers and body at once: time to first token (the prompt's prefill), then one
  decode interval per further token;
- a streamed answer sends its headers at once, the role chunk and the first
  token's chunk after the time to first token, then one chunk per token at the
  per-stream decode rate (which falls as more streams generate at once);
- an answer has the profile's answer length, capped by ``max_tokens``; the text
  stays the FAKE's short answer, so a longer modelled answer streams its later
  tokens as empty deltas; the prompt's tokens are its characters / 4.

Faults, set on the server object: ``behaviour`` is one of ``ok``, ``hang``
(a process that accepts connections and never answers anything: chat, ``/health``
and ``/v1/models`` alike; requests already in flight stop where they are, as in
a frozen process), ``error`` (HTTP ``error_status``), ``die_mid_stream``
(one chunk, then the connection drops), ``rate_limited`` (429). ``latency``
delays every chat answer further.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid

from ..timing_profiles import estimate_tokens, message_text, spread
from .http import FakeHandler, FakeServer, sleep_until

ANSWER = "Hello from the fake model."
REASONING = "The user greets me. I should greet back."


# Fields the real services add to every completion (LiteLLM's groq provider reads service_tier).
PROVIDER_FIELDS = {
    "openai": {"service_tier": "default", "system_fingerprint": "fp_fake"},
    "groq": {"service_tier": "on_demand", "system_fingerprint": "fp_fake", "x_groq": {"id": "req_fake"}},
    "mistral": {},
    "vllm": {"prompt_logprobs": None, "kv_transfer_params": None},
}


def _completion_id():
    return "chatcmpl-" + uuid.uuid4().hex[:24]


class ChatHandler(FakeHandler):
    def do_GET(self):
        server = self.server
        server.count("GET " + self.path)
        if server.behaviour == "hang":
            return self.hang()
        if self.path == "/health" and server.flavour == "vllm":
            return self.send_body(200, "", "text/plain")
        if self.path in ("/v1/models", "/models"):
            return self.send_body(200, {"object": "list", "data": [
                {"id": name, "object": "model", "created": 1700000000, "owned_by": server.flavour}
                for name in server.models]})
        return self.send_body(404, {"detail": "Not Found"})

    def do_POST(self):
        server = self.server
        if self.path not in ("/v1/chat/completions", "/chat/completions", "/openai/v1/chat/completions"):
            server.count("POST " + self.path)
            return self.send_body(404, {"detail": "Not Found"})
        body = self.read_json()
        if body is None:
            return self.send_body(400, server.error_body(400, "Invalid JSON body"))
        model = body.get("model", "")
        server.count("chat")
        server.count("chat:" + model)
        # What the request asked and, once it generates, how far it got (tests read it while they wait).
        record = {"model": model, "stream": bool(body.get("stream")), "at": time.monotonic(),
                  "authorization": self.headers.get("Authorization", ""), "tokens": 0, "generated": 0}
        server.requests.append(record)
        refused = server.refusal(self.headers.get("Authorization", ""))
        if refused:
            return self.send_body(401, refused)
        behaviour = server.behaviour
        if behaviour == "hang":
            return self.hang()
        if server.latency:
            time.sleep(server.latency)
            if server.behaviour == "hang":  # froze while this request waited
                return self.hang()
        if model not in server.models:
            return self.send_body(404, server.not_found_body(model))
        if behaviour == "error":
            return self.send_body(server.error_status, server.error_body(server.error_status, "fake upstream failure"))
        if behaviour == "rate_limited":
            return self.send_body(429, server.error_body(429, "Rate limit reached for %s on requests per day" % model),
                                  headers={"retry-after": str(server.retry_after)})
        if body.get("stream"):
            return self.stream(model, body, record, die=behaviour == "die_mid_stream")
        with server.generating():
            slots = self.generate(body, record)
            for _ in self.tokens(slots, record):
                if server.behaviour == "hang":
                    return self.hang()
        if server.behaviour == "hang":
            return self.hang()
        return self.send_body(200, self.completion(model, record))

    def message(self):
        if self.server.reasoning_parser:
            return {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}
        if self.server.reasoning_raw:
            return {"role": "assistant", "content": REASONING + "\n</think>\n\n" + ANSWER}
        return {"role": "assistant", "content": ANSWER}

    def deltas(self):
        """The answer as streamed deltas: reasoning words, then the content's words."""
        message = self.message()
        pieces = [{"reasoning_content": word + " "} for word in (message.get("reasoning_content") or "").split()]
        return pieces + [{"content": word + " "} for word in message["content"].split()]

    def generate(self, body, record):
        """The answer's deltas over its tokens (one list per token), its lengths noted in ``record``."""
        pieces = self.deltas()
        timing = self.server.timing
        tokens = timing.answer_tokens(body.get("max_completion_tokens") or body.get("max_tokens"), len(pieces)) \
            if timing else len(pieces)
        record.update(tokens=tokens, prompt_tokens=estimate_tokens(message_text(body.get("messages"))))
        return spread(pieces, tokens)

    def tokens(self, slots, record):
        """Yield each token's deltas when the profile says it is generated: the first after the time to
        first token, each further one a decode interval later at the current number of streams."""
        timing = self.server.timing
        due = time.monotonic()
        for index, slot in enumerate(slots):
            if timing:
                streams = self.server.streams
                due += timing.ttft(record["prompt_tokens"], streams) if index == 0 else timing.token_interval(streams)
                sleep_until(due, self.client_gone)
            record["generated"] = index + 1
            yield slot

    def completion(self, model, record):
        body = {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": self.message(), "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": record.get("prompt_tokens", 0), "completion_tokens": record["tokens"],
                          "total_tokens": record.get("prompt_tokens", 0) + record["tokens"]}}
        return dict(body, **PROVIDER_FIELDS.get(self.server.flavour, {}))

    def stream(self, model, body, record, die=False):
        ident, created = _completion_id(), int(time.time())

        def chunk(delta, finish=None):
            return "data: " + json.dumps({"id": ident, "object": "chat.completion.chunk", "created": created,
                                          "model": model, "choices": [{"index": 0, "delta": delta,
                                                                       "finish_reason": finish}]}) + "\n\n"

        # Starlette's StreamingResponse sends the headers before the generator yields anything.
        self.start_chunks("text/event-stream")
        with self.server.generating():
            slots = self.generate(body, record)
            for index, slot in enumerate(self.tokens(slots, record)):
                if self.server.behaviour == "hang":
                    return self.hang()
                if index == 0:
                    self.send_chunk(chunk({"role": "assistant", "content": ""}))
                for delta in slot or [{"content": ""}]:
                    self.send_chunk(chunk(delta))
                if die:
                    # The role chunk and one content chunk went out; the connection drops.
                    time.sleep(self.server.die_after)
                    return self.close_connection_now()
        self.send_chunk(chunk({}, "stop"))
        self.send_chunk("data: [DONE]\n\n")
        return self.end_chunks()


class FakeChatServer(FakeServer):
    """One FAKE upstream. ``flavour`` is ``vllm`` or a cloud provider's name."""

    def __init__(self, address=("127.0.0.1", 0), flavour="vllm", models=("vllm-qwen",), reasoning_parser=None,
                 reasoning_raw=False, api_key=None, timing=None):
        super().__init__(address, ChatHandler)
        self.flavour = flavour
        self.timing = timing  # a lab.timing_profiles.Timing, or None: answers at once
        self.streams = 0  # requests generating now (vLLM batches them; each slows the others a little)
        self.api_key = api_key
        self.models = list(models)
        self.reasoning_parser = reasoning_parser
        self.reasoning_raw = reasoning_raw
        self.behaviour = "ok"
        self.latency = 0.0
        self.error_status = 500
        self.retry_after = 30
        self.die_after = 0.3  # seconds between the first chunk and the drop, for die_mid_stream
        self.requests = []
        self.release = threading.Event()

    def reset_counters(self):
        super().reset_counters()
        self.requests = []

    @contextlib.contextmanager
    def generating(self):
        with self.lock:
            self.streams += 1
        try:
            yield
        finally:
            with self.lock:
                self.streams -= 1

    def reset(self, **settings):
        """Healthy again, counters cleared, then ``settings`` applied."""
        self.release.set()
        self.release = threading.Event()
        self.behaviour, self.latency, self.error_status = "ok", 0.0, 500
        self.reset_counters()
        for key, value in settings.items():
            setattr(self, key, value)

    def stop(self):
        self.release.set()
        super().stop()

    def refusal(self, authorization):
        """The provider's 401 body for a missing or wrong key, or None when the key is the one it holds.

        OpenAI (API reference, "Error codes": 401 Invalid Authentication / Incorrect API key provided)
        quotes the key's start and end; Groq (console.groq.com/docs/errors: 401 invalid_api_key) and
        Mistral (its API's 401 Unauthorized) do not."""
        if self.api_key is None or authorization == "Bearer " + self.api_key:
            return None
        key = authorization[len("Bearer "):] if authorization.startswith("Bearer ") else ""
        if self.flavour == "openai":
            if not key:
                message = ("You didn't provide an API key. You need to provide your API key in an Authorization "
                           "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
                return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
            shown = key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 7 else key
            return self.error_body(401, "Incorrect API key provided: %s. You can find your API key at "
                                        "https://platform.openai.com/account/api-keys." % shown)
        if self.flavour == "mistral":
            return {"message": "Unauthorized", "request_id": uuid.uuid4().hex}
        return self.error_body(401, "Invalid API Key")

    def not_found_body(self, model):
        if self.flavour == "vllm":
            return {"error": {"message": "The model `%s` does not exist." % model, "type": "NotFoundError",
                              "param": "model", "code": 404}}
        return self.error_body(404, "The model `%s` does not exist or you do not have access to it." % model,
                               code="model_not_found")

    def error_body(self, status, message, code=None):
        if self.flavour == "vllm":
            kinds = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}
            return {"error": {"message": message, "type": kinds.get(status, "InternalServerError"), "param": None,
                              "code": status}}
        kinds = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                 429: "requests", 500: "server_error"}
        codes = {429: "rate_limit_exceeded", 401: "invalid_api_key"}
        return {"error": {"message": message, "type": kinds.get(status, "server_error"), "param": None,
                          "code": code or codes.get(status)}}
