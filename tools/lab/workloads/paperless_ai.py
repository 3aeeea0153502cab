"""FAKE Paperless-AI (image clusterzx/paperless-ai:3.0.9).

Its behaviour follows Paperless-AI v3.0.9's source, file by file, for what the
collection relies on; each strict behaviour cites the upstream file.

- Settings (config/config.js): the container environment, then
  ``/app/data/.env`` through dotenv 16.4.7 without ``override``: a key the
  container already has keeps the container's value. routes/setup.js loads
  ``../data/.env`` relative to the working directory ``/app``, a file that does
  not exist: nothing.
- The setup check (services/setupService.js ``isConfigured``): no ``.env`` or
  no ``PAPERLESS_API_URL`` in it means not configured at once; otherwise up to
  60 attempts 5 s apart of ``validateConfig`` on the ``.env`` as
  ``loadConfig`` reads it (split on '=', no unquoting), never on the
  container environment. The verdict is kept for the life of the process;
  every caller that comes while there is none runs its own attempts.
- ``validateConfig`` for ``AI_PROVIDER=custom``: ``GET {url}/api/documents/``
  on Paperless-ngx with ``Authorization: Token <PAPERLESS_API_TOKEN>`` (url =
  ``PAPERLESS_API_URL`` with every ``/api`` removed), which must answer 200;
  then one chat completion ("Test") at ``CUSTOM_BASE_URL`` with
  ``CUSTOM_MODEL`` and ``CUSTOM_API_KEY`` through the OpenAI SDK 4.86.2 (2
  retries on connection errors, 408, 409, 429 and 5xx, 0.5 s then 1 s apart),
  which must return a choice. Other providers reach services the lab does not
  have: the FAKE fails their check and says so.
- HTTP (server.js, routes/setup.js): the router's ``GET /health`` answers 200
  ``{"status":"healthy"}`` whether or not the app is configured (the
  configured check in server.js's own /health is never reached: the router is
  mounted first, and its check is commented out; its database probe cannot
  fail, models/document.js catches every error). Other routes pass the
  router's middleware: public prefixes ``/health``, ``/login``, ``/logout``,
  ``/setup``; else ``x-api-key`` equal to ``API_KEY`` or a JWT (the FAKE
  issues none), or 302 to ``/login``; then the setup check, 302 to ``/setup``
  (``/settings`` with ``PAPERLESS_AI_INITIAL_SETUP=yes``) when not
  configured. ``GET /api/processing-status`` is served; other handlers answer
  501 naming the route.
- Scanning (server.js ``startScanning``, ``scanInitial``): after the setup
  check, the own user id from Paperless-ngx's ``/users/`` matched by
  ``PAPERLESS_USERNAME`` (none: scanning stops); then the documents, and for
  each one the content (cut at 50,000 characters), the thumbnail, and one
  classification request (services/customService.js): the prompt counted as
  4 characters a token for a non-OpenAI model name
  (services/serviceUtils.js), ``TOKEN_LIMIT`` (default 128000) minus the
  prompt and ``RESPONSE_TOKENS`` (default 1000) is what is left for the
  document, which is cut to that many tokens times 4 characters. The answer
  must be JSON with ``tags`` and ``correspondent``. Writing the result back
  to Paperless-ngx and the scheduled rescans are not modelled.

Where the real app prints its custom AI key (setupService.js
``validateCustomConfig`` logs the whole config), the FAKE prints a hash. It
records what it did in ``/app/data/lab-client-report.json`` (hashes of keys,
never a key)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "3.0.9"
MAX_ATTEMPTS, ATTEMPT_DELAY = 60, 5.0          # setupService.js isConfigured
# The lab may fast-forward those 5 minutes (`python -m lab fault paperless-ai-retries`).
MAX_ATTEMPTS = int(os.environ.get("LAB_PAPERLESS_AI_ATTEMPTS") or MAX_ATTEMPTS)
ATTEMPT_DELAY = float(os.environ.get("LAB_PAPERLESS_AI_ATTEMPT_DELAY") or ATTEMPT_DELAY)
SDK_MAX_RETRIES = 2                            # openai 4.86.2 DEFAULT_MAX_RETRIES
PUBLIC_ROUTES = ("/health", "/login", "/logout", "/setup")   # routes/setup.js
CONTENT_LIMIT = 50000                          # server.js processDocument
# Stand-in for customService.js's built-in JSON instructions (config.js
# mustHavePrompt, custom fields filled in): the same length, not the same words.
BUILT_IN_PROMPT = ("FAKE stand-in for Paperless-AI's built-in instructions: answer with one JSON object holding "
                   "title, correspondent, tags, document_type, document_date, language and custom_fields. ") * 6
OPENAI_MODEL_NAMES = ("gpt-4o", "chatgpt-4o-latest", "gpt-4.1", "gpt-3.5-turbo", "gpt-4", "gpt-4.5", "o1", "o3",
                      "o4-mini", "text-davinci-003", "text-davinci-002")


def log(message):
    print("%s lab FAKE Paperless-AI: %s" % (time.strftime("%H:%M:%S"), message), flush=True)


def sha256(value):
    return hashlib.sha256((value or "").encode()).hexdigest()


# -- reading .env ------------------------------------------------------------------------

def load_config(text):
    """services/setupService.js loadConfig (v3.0.9): ``line.split('=')`` destructured
    to ``[key, value]`` (the value ends at its own first '='), kept when both are
    non-empty, both trimmed; no unquoting, no ``export``; the last line wins."""
    config = {}
    for line in text.split("\n"):
        parts = line.split("=")
        key, value = parts[0], parts[1] if len(parts) > 1 else ""
        if key and value:
            config[key.strip()] = value.strip()
    return config


# dotenv 16.4.7, lib/main.js: LINE and parse().
DOTENV_LINE = re.compile(
    r"(?:^|^)\s*(?:export\s+)?([A-Za-z0-9_.-]+)(?:\s*=\s*?|:\s+?)(\s*'(?:\\'|[^'])*'|\s*\"(?:\\\"|[^\"])*\""
    r"|\s*`(?:\\`|[^`])*`|[^#\r\n]+)?\s*(?:#.*)?(?:$|$)", re.M)


def dotenv_parse(text):
    values = {}
    for match in DOTENV_LINE.finditer(re.sub(r"\r\n?", "\n", text)):
        value = (match.group(2) or "").strip()
        quote = value[:1]
        value = re.sub(r"^(['\"`])([\s\S]*)\1$", r"\2", value, flags=re.M)
        if quote == '"':
            value = value.replace("\\n", "\n").replace("\\r", "\r")
        values[match.group(1)] = value
    return values


def process_env(environ, data_dir):
    """config/config.js: dotenv.config({path: <cwd>/data/.env}) never overrides a set variable."""
    merged = dict(environ)
    try:
        with open(os.path.join(data_dir, ".env"), encoding="utf-8") as handle:
            parsed = dotenv_parse(handle.read())
    except OSError:
        parsed = {}
    for key, value in parsed.items():
        merged.setdefault(key, value)
    return merged


# -- outbound HTTP -----------------------------------------------------------------------

def http(method, url, headers=None, body=None, timeout=60):
    """(status, headers, body bytes); status None and the error text when no answer came."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers or {}), err.read()
    except (OSError, ValueError) as err:
        return None, {}, str(err).encode()


def openai_chat(base_url, api_key, body, env):
    """One chat completion as the OpenAI SDK 4.86.2 sends it (src/index.ts, src/core.ts)."""
    api_key = api_key or env.get("OPENAI_API_KEY")
    if not api_key:
        # The SDK refuses to construct a client without a key.
        return {"status": None, "error": "The OPENAI_API_KEY environment variable is missing or empty"}
    base_url = base_url or env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    url = base_url.rstrip("/") + "/chat/completions"
    for retry in range(SDK_MAX_RETRIES + 1):
        status, headers, payload = http("POST", url, {"Authorization": "Bearer %s" % api_key}, body, timeout=600)
        retryable = status is None or status in (408, 409, 429) or status >= 500
        if headers.get("x-should-retry") in ("true", "false"):
            retryable = headers["x-should-retry"] == "true"
        if not retryable or retry == SDK_MAX_RETRIES:
            break
        time.sleep(min(0.5 * 2 ** retry, 8.0) * (1 - random.random() * 0.25))
    result = {"url": url, "status": status, "attempts": retry + 1,
              "answered_by": headers.get("x-litellm-model-group") or headers.get("X-Litellm-Model-Group")}
    try:
        result["json"] = json.loads(payload) if status == 200 else None
    except ValueError:
        result["json"] = None
    if status != 200:
        result["error"] = payload.decode(errors="replace")[:300]
    return result


# -- the app -----------------------------------------------------------------------------

class App:
    def __init__(self, data_dir, environ):
        self.data_dir = data_dir
        self.env_path = os.path.join(data_dir, ".env")
        self.env = process_env(environ, data_dir)
        self.configured = None
        self.report_lock = threading.Lock()
        self.report = {"version": VERSION, "configured": None, "validations": [], "scan": None}

    def save_report(self):
        with self.report_lock:
            text = json.dumps(self.report, indent=2, default=str)
            path = os.path.join(self.data_dir, "lab-client-report.json")
            with open(path + ".tmp", "w") as handle:
                handle.write(text)
            os.replace(path + ".tmp", path)

    # setupService.js -----------------------------------------------------------------

    def load_config(self):
        try:
            with open(self.env_path, encoding="utf-8") as handle:
                return load_config(handle.read())
        except OSError as err:
            log("Error loading config: %s" % err)
            return None

    def is_configured(self):
        if self.configured is not None:
            return self.configured
        if not os.path.exists(self.env_path):
            log("No .env file found. Starting setup process...")
            return self._decide(False)
        config = self.load_config()
        if not config or not config.get("PAPERLESS_API_URL"):
            log("PAPERLESS_API_URL not set. Starting setup process...")
            return self._decide(False)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                config = self.load_config()
                if not config:
                    raise ValueError("Failed to load configuration")
                self.validate_config(config)
                return self._decide(True)
            except ValueError as err:
                log("Configuration attempt failed: %s" % err)
                if attempt == MAX_ATTEMPTS:
                    log("Max configuration attempts reached. Final error: %s" % err)
                    return self._decide(False)
                log("Retrying configuration (attempt %d/%d) in 5 seconds..." % (attempt, MAX_ATTEMPTS))
                time.sleep(ATTEMPT_DELAY)
        return self._decide(False)

    def _decide(self, verdict):
        self.configured = verdict
        self.report["configured"] = verdict
        self.save_report()
        return verdict

    def validate_config(self, config):
        record = {}
        self.report["validations"].append(record)
        try:
            if "PAPERLESS_API_URL" not in config:
                raise ValueError("Cannot read properties of undefined (reading 'replace')")
            url = config["PAPERLESS_API_URL"].replace("/api", "")
            status, _, _ = http("GET", url + "/api/documents/",
                                {"Authorization": "Token %s" % config.get("PAPERLESS_API_TOKEN", "undefined")})
            record["paperless"] = {"url": url + "/api/documents/", "status": status}
            if status != 200:
                raise ValueError("Invalid Paperless configuration")
            provider = config.get("AI_PROVIDER") or "openai"
            if provider == "custom":
                answer = openai_chat(config.get("CUSTOM_BASE_URL"), config.get("CUSTOM_API_KEY"),
                                     {"messages": [{"role": "user", "content": "Test"}],
                                      "model": config.get("CUSTOM_MODEL")}, self.env)
                record["custom"] = {"base_url": config.get("CUSTOM_BASE_URL"), "model": config.get("CUSTOM_MODEL"),
                                    "api_key_sha256": sha256(config.get("CUSTOM_API_KEY")),
                                    "status": answer["status"], "answered_by": answer.get("answered_by")}
                log("Custom AI config: baseURL=%s model=%s apiKey=<sha256 %s>" % (
                    config.get("CUSTOM_BASE_URL"), config.get("CUSTOM_MODEL"),
                    sha256(config.get("CUSTOM_API_KEY"))[:12]))
                if not ((answer.get("json") or {}).get("choices")):
                    raise ValueError("Invalid Custom AI configuration")
            elif provider in ("openai", "ollama", "azure"):
                record["provider"] = provider
                raise ValueError("Invalid %s configuration (the lab's FAKE models only AI_PROVIDER=custom)"
                                 % provider.capitalize())
        finally:
            self.save_report()

    # paperlessService.js ---------------------------------------------------------------

    def paperless(self, path):
        base, token = self.env.get("PAPERLESS_API_URL"), self.env.get("PAPERLESS_API_TOKEN")
        if not (base and token):
            # initialize() makes no client; `this.client.get` then throws.
            raise ValueError("Cannot read properties of undefined (reading 'get')")
        status, _, payload = http("GET", base.rstrip("/") + "/" + path.lstrip("/"),
                                  {"Authorization": "Token %s" % token})
        if status != 200:
            raise ValueError("Request failed with status code %s" % status)
        return json.loads(payload) if payload[:1] in (b"{", b"[") else payload

    def all_pages(self, path):
        items, page = [], 1
        while True:
            data = self.paperless("%s?page=%d&page_size=100" % (path, page))
            items += data.get("results") or []
            if data.get("next") is None:
                return items
            page += 1

    def own_user_id(self):
        try:
            users = self.paperless("/users/?current_user=true&full_perms=true").get("results") or []
        except ValueError as err:
            log("[ERROR] fetching own user ID: %s" % err)
            return None
        match = [u for u in users if u.get("username") == self.env.get("PAPERLESS_USERNAME")]
        return match[0]["id"] if match else None

    # server.js -------------------------------------------------------------------------

    def start_scanning(self):
        if not self.is_configured():
            log("Setup not completed. Visit http://your-machine-ip:%s/setup to complete setup."
                % self.env.get("PAPERLESS_AI_PORT", "3000"))
        user_id = self.own_user_id()
        self.report["scan"] = {"user_id": user_id, "documents": []}
        self.save_report()
        if not user_id:
            log("Failed to get own user ID. Abort scanning.")
            self.report["scan"]["aborted"] = "Failed to get own user ID"
            return self.save_report()
        if self.env.get("DISABLE_AUTOMATIC_PROCESSING", "no") == "yes":
            return None
        if not self.is_configured():
            log("[ERROR] Setup not completed. Skipping document scan.")
            return None
        try:
            for path in ("/tags/", "/correspondents/", "/document_types/"):
                self.all_pages(path)
            documents = self.all_pages("/documents/")
        except ValueError as err:
            log("[ERROR] during initial document scan: %s" % err)
            return None
        for doc in documents:
            entry = {"id": doc["id"]}
            self.report["scan"]["documents"].append(entry)
            try:
                self.process_document(doc, entry)
            except ValueError as err:
                entry["error"] = str(err)
                log("[ERROR] processing document %s: %s" % (doc["id"], err))
            self.save_report()
        return None

    def process_document(self, doc, entry):
        full = self.paperless("/documents/%d/" % doc["id"])
        if not full.get("user_can_change"):
            entry["skipped"] = "not editable by the Paperless-AI user"
            return
        content = full.get("content")
        if not content:
            entry["skipped"] = "no content"
            return
        entry["content_chars"] = len(content)
        content = content[:CONTENT_LIMIT]
        self.paperless("/documents/%d/thumb/" % doc["id"])
        self.analyze(content, entry)

    def analyze(self, content, entry):
        """services/customService.js analyzeDocument, the budget from serviceUtils.js."""
        model = self.env.get("CUSTOM_MODEL", "")
        if any(name in model for name in OPENAI_MODEL_NAMES):
            raise ValueError("the lab's FAKE counts tokens only for non-OpenAI model names (tiktoken is not modelled)")
        # JavaScript turns a missing SYSTEM_PROMPT into the text "undefined".
        system_prompt = self.env.get("SYSTEM_PROMPT", "undefined") + "\n\n" + BUILT_IN_PROMPT
        prompt_tokens = math.ceil(len(system_prompt) / 4) + 4
        max_tokens = int(float(self.env.get("TOKEN_LIMIT") or 128000))
        response_tokens = int(float(self.env.get("RESPONSE_TOKENS") or 1000))
        available = max_tokens - (prompt_tokens + response_tokens)
        entry.update(token_limit=max_tokens, response_tokens=response_tokens, prompt_tokens_estimate=prompt_tokens,
                     available_tokens=available)
        if available <= 0:
            raise ValueError("Token limit exceeded: prompt too large for available token limit")
        if math.ceil(len(content) / 4) > available:
            cut = content[:available * 4]
            space = cut.rfind(" ")
            content = cut[:space] if space > available * 4 * 0.8 else cut
        entry.update(sent_chars=len(content), system_chars=len(system_prompt),
                     estimated_request_tokens=math.ceil((len(system_prompt) + len(content)) / 4))
        answer = openai_chat(self.env.get("CUSTOM_BASE_URL"), self.env.get("CUSTOM_API_KEY"), {
            "model": model, "temperature": 0.3,
            "messages": [{"role": "system", "content": system_prompt}, {"role": "user", "content": content}]},
            self.env)
        entry["request"] = {"base_url": self.env.get("CUSTOM_BASE_URL"), "model": model,
                            "api_key_sha256": sha256(self.env.get("CUSTOM_API_KEY")),
                            "status": answer["status"], "answered_by": answer.get("answered_by")}
        message = (((answer.get("json") or {}).get("choices") or [{}])[0].get("message") or {}).get("content")
        if not message:
            raise ValueError("Invalid API response structure")
        text = re.sub(r"```\n?", "", re.sub(r"```json\n?", "", message)).strip()
        try:
            parsed = json.loads(text)
        except ValueError:
            raise ValueError("Invalid JSON response from API") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("tags"), list) or \
                not isinstance(parsed.get("correspondent"), str):
            raise ValueError("Invalid response structure: missing tags array or correspondent string")
        entry["result"] = parsed


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, status, body, content_type="application/json; charset=utf-8", headers=None):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body, separators=(",", ":"))
        body = body.encode() if isinstance(body, str) else body
        lines = ["HTTP/1.1 %d %s" % (status, self.responses.get(status, ("",))[0]), "X-Powered-By: Express",
                 "Access-Control-Allow-Origin: *", "Content-Type: %s" % content_type,
                 "Content-Length: %d" % len(body)]
        lines += ["%s: %s" % item for item in (headers or {}).items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.wfile.flush()

    def redirect(self, target):
        # Express 4 res.redirect for a client that does not ask for HTML.
        self.send(302, "Found. Redirecting to %s" % target, "text/plain; charset=utf-8",
                  {"Location": target, "Vary": "Accept"})

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def route(self, method):
        app = self.server.app
        path = urllib.parse.urlsplit(self.path).path
        if method == "GET" and path == "/health":
            # routes/setup.js: the database probe (documentModel.isDocumentProcessed) never throws.
            return self.send(200, {"status": "healthy"})
        if not any(path.startswith(route) for route in PUBLIC_ROUTES):
            api_key = self.headers.get("x-api-key")
            if not (api_key and api_key == app.env.get("API_KEY")):
                # No JWT can verify here: jwt.verify fails, or there is no token at all.
                return self.redirect("/login")
            if not app.is_configured():
                initial = app.env.get("PAPERLESS_AI_INITIAL_SETUP")
                if not initial or initial == "no":
                    if not path.startswith("/setup"):
                        return self.redirect("/setup")
                elif initial == "yes" and not path.startswith("/settings"):
                    return self.redirect("/settings")
        if method == "GET" and path == "/api/processing-status":
            # models/document.js getCurrentProcessingStatus: nothing is written back here.
            return self.send(200, {"currentlyProcessing": None, "lastProcessed": None, "processedToday": 0,
                                   "isProcessing": False})
        return self.send(501, {"error": "the lab's FAKE Paperless-AI does not model %s %s" % (method, path)})


def make_server(app, host, port):
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.app = app
    return server


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else "/app/data"
    os.makedirs(data_dir, exist_ok=True)
    app = App(data_dir, os.environ)
    app.save_report()
    log("provider=%s base_url=%s model=%s TOKEN_LIMIT=%s RESPONSE_TOKENS=%s" % (
        app.env.get("AI_PROVIDER"), app.env.get("CUSTOM_BASE_URL"), app.env.get("CUSTOM_MODEL"),
        app.env.get("TOKEN_LIMIT"), app.env.get("RESPONSE_TOKENS")))
    server = make_server(app, os.environ.get("LAB_POD_IP", "127.0.0.1"), int(app.env.get("PAPERLESS_AI_PORT") or 3000))
    log("Server running on port %d" % server.server_address[1])
    threading.Thread(target=app.start_scanning, name="scan", daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
