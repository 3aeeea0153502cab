"""FAKE Google Gemini API (generativelanguage v1beta), the part LiteLLM's
``gemini/`` provider calls: ``POST /models/<model>:generateContent`` and
``:streamGenerateContent?alt=sse``, with Google's error body on failures.

Given ``api_key``, a request whose ``x-goog-api-key`` header (how LiteLLM's
gemini provider sends the key: litellm/llms/vertex_ai/vertex_llm_base.py,
1.106) is missing or another key gets Google's answer for it: 400
INVALID_ARGUMENT "API key not valid" with reason API_KEY_INVALID, or 403
PERMISSION_DENIED when no key came (Gemini API troubleshooting guide)."""

from __future__ import annotations

import json

from .http import FakeHandler, FakeServer

ANSWER = "Hello from the fake Gemini model."
STATUS_NAMES = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE"}


class GeminiHandler(FakeHandler):
    server_version = "fake-gemini"

    def do_POST(self):
        server = self.server
        path = self.path.split("?", 1)[0]
        for prefix in ("/v1beta", "/v1"):
            if path.startswith(prefix + "/"):
                path = path[len(prefix):]
        if not path.startswith("/models/") or ":" not in path:
            return self.send_body(404, self.error(404, "Not found"))
        model, method = path[len("/models/"):].split(":", 1)
        self.read_json()
        key = self.headers.get("x-goog-api-key")
        if server.api_key is not None and key != server.api_key:
            if not key:
                return self.send_body(403, self.error(403, "Method doesn't allow unregistered callers (callers "
                                                           "without established identity). Please use API Key or "
                                                           "other form of API consumer identity to call this API."))
            body = self.error(400, "API key not valid. Please pass a valid API key.")
            body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                         "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                                         "metadata": {"service": "generativelanguage.googleapis.com"}}]
            return self.send_body(400, body)
        server.count("chat")
        server.count("chat:" + model)
        if model not in server.models:
            return self.send_body(404, self.error(404, "models/%s is not found for API version v1beta" % model))
        if server.behaviour == "error":
            return self.send_body(server.error_status, self.error(server.error_status, "fake upstream failure"))
        if server.behaviour == "rate_limited":
            return self.send_body(429, self.error(429, "Resource has been exhausted (e.g. check quota)."))
        if method == "streamGenerateContent":
            words = ANSWER.split()
            return self.send_stream(["data: " + json.dumps(self.response(model, w + " ", last=i == len(words) - 1))
                                     + "\r\n\r\n" for i, w in enumerate(words)], content_type="text/event-stream")
        return self.send_body(200, self.response(model, ANSWER, last=True))

    @staticmethod
    def response(model, text, last):
        candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if last:
            candidate["finishReason"] = "STOP"
        return {"candidates": [candidate], "modelVersion": model,
                "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 7, "totalTokenCount": 10}}

    @staticmethod
    def error(status, message):
        return {"error": {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}}


class FakeGemini(FakeServer):
    def __init__(self, address=("127.0.0.1", 0), models=("gemini-2.0-flash", "gemini-2.5-flash"), api_key=None):
        super().__init__(address, GeminiHandler)
        self.api_key = api_key
        self.models = list(models)
        self.behaviour = "ok"
        self.error_status = 500
