"""The lab's FAKE Paperless-ngx and FAKE Paperless-AI are as strict as the real
ones where the collection depends on them: Paperless-ngx's token check and
bodies, Paperless-AI's reading of its .env, its setup check and what its HTTP
endpoints say configured or not. In-process, with the setup check's 5-second
retry delay shortened (the only liberty taken)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from lab.fakes.openai_compat import FakeChatServer
from lab.fakes.paperless_ngx import PaperlessNgxServer
from lab.workloads import paperless_ai

TOKEN = "0123456789abcdef0123456789abcdef01234567"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url, headers=None):
    """(status, headers, parsed or raw body); redirects are not followed."""
    try:
        with urllib.request.build_opener(NoRedirect).open(urllib.request.Request(url, headers=headers or {}),
                                                          timeout=30) as response:
            status, head, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        status, head, raw = err.code, err.headers, err.read()
    try:
        return status, head, json.loads(raw)
    except ValueError:
        return status, head, raw.decode()


@pytest.fixture()
def ngx():
    server = PaperlessNgxServer(("127.0.0.1", 0), lambda: TOKEN).start()
    yield server
    server.stop()


@pytest.fixture()
def llm():
    server = FakeChatServer(flavour="vllm", models=("vllm-qwen",)).start()
    yield server
    server.stop()


@pytest.mark.parametrize("authorization, status, body", [
    (None, 401, {"detail": "Authentication credentials were not provided."}),
    ("Token", 401, {"detail": "Invalid token header. No credentials provided."}),
    ("Token a b", 401, {"detail": "Invalid token header. Token string should not contain spaces."}),
    ("Token wrong", 401, {"detail": "Invalid token."}),
    ("Token '%s'" % TOKEN, 401, {"detail": "Invalid token."}),
])
def test_paperless_ngx_refuses_a_wrong_token_with_its_own_bodies(ngx, authorization, status, body):
    answer = get(ngx.url + "/api/documents/", {"Authorization": authorization} if authorization else {})
    assert (answer[0], answer[2]) == (status, body)
    assert answer[1]["WWW-Authenticate"] == 'Basic realm="api"'


def test_paperless_ngx_lists_pages_and_forbids_what_the_user_may_not_view(ngx):
    auth = {"Authorization": "Token " + TOKEN}
    status, _, body = get(ngx.url + "/api/documents/?page=1&page_size=1", auth)
    assert status == 200 and body["count"] == 2 and body["all"] == [1, 2] and len(body["results"]) == 1
    assert body["next"].endswith("/api/documents/?page=2&page_size=1") and body["previous"] is None
    assert get(ngx.url + "/api/documents/?page=3&page_size=1", auth)[0:3:2] == (404, {"detail": "Invalid page."})
    ngx.permissions.discard("users")
    assert get(ngx.url + "/api/users/", auth)[0:3:2] == (
        403, {"detail": "You do not have permission to perform this action."})


def settings(ngx, llm, **overrides):
    values = {"PAPERLESS_API_URL": ngx.url + "/api", "PAPERLESS_API_TOKEN": TOKEN, "PAPERLESS_USERNAME": "paperless-ai",
              "AI_PROVIDER": "custom", "CUSTOM_BASE_URL": llm.url + "/v1", "CUSTOM_MODEL": "vllm-qwen",
              "CUSTOM_API_KEY": "sk-test", "API_KEY": "pai-key", "TOKEN_LIMIT": "3274", "RESPONSE_TOKENS": "1000"}
    values.update(overrides)
    return values


def start_app(tmp_path, env_file_text, environ, monkeypatch):
    monkeypatch.setattr(paperless_ai, "MAX_ATTEMPTS", 2)
    monkeypatch.setattr(paperless_ai, "ATTEMPT_DELAY", 0.05)
    (tmp_path / ".env").write_text(env_file_text)
    app = paperless_ai.App(str(tmp_path), environ)
    server = paperless_ai.make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return app, server, "http://127.0.0.1:%d" % server.server_address[1]


def env_text(values, quote=""):
    return "".join("%s=%s%s%s\n" % (key, quote, value, quote) for key, value in values.items())


def test_managed_values_written_as_the_app_writes_them_configure_it(tmp_path, ngx, llm, monkeypatch):
    values = settings(ngx, llm)
    app, server, url = start_app(tmp_path, env_text(values), values, monkeypatch)
    try:
        assert app.is_configured() is True
        status, _, body = get(url + "/api/processing-status", {"x-api-key": "pai-key"})
        assert status == 200 and body["isProcessing"] is False
        assert get(url + "/health")[0:3:2] == (200, {"status": "healthy"})
        validation = app.report["validations"][-1]
        assert validation["paperless"]["status"] == 200 and validation["custom"]["status"] == 200
        assert any(r["path"] == "/api/documents/" and r["valid"] for r in ngx.requests)
    finally:
        server.shutdown()


def test_quoted_values_leave_the_app_unconfigured_while_health_says_healthy(tmp_path, ngx, llm, monkeypatch):
    values = settings(ngx, llm)
    # What the old init script wrote: loadConfig keeps the quotes, the URL is no URL any more.
    app, server, url = start_app(tmp_path, env_text(values, quote="'"), values, monkeypatch)
    try:
        assert app.is_configured() is False
        assert app.report["validations"][-1]["paperless"]["status"] is None
        # Paperless-AI v3.0.9's /health does not look at the configuration.
        assert get(url + "/health")[0:3:2] == (200, {"status": "healthy"})
        status, headers, _ = get(url + "/api/processing-status", {"x-api-key": "pai-key"})
        assert status == 302 and headers["Location"] == "/setup"
        status, headers, _ = get(url + "/api/processing-status")
        assert status == 302 and headers["Location"] == "/login"
    finally:
        server.shutdown()


def test_a_token_paperless_ngx_rejects_leaves_the_app_unconfigured(tmp_path, ngx, llm, monkeypatch):
    values = settings(ngx, llm, PAPERLESS_API_TOKEN="wrong")
    app, server, _ = start_app(tmp_path, env_text(values), values, monkeypatch)
    try:
        assert app.is_configured() is False
        assert [v["paperless"]["status"] for v in app.report["validations"]] == [401, 401]
        assert "custom" not in app.report["validations"][-1], "the AI check comes after Paperless-ngx's"
    finally:
        server.shutdown()


def test_the_setup_check_reads_the_file_and_the_rest_of_the_app_the_environment(tmp_path, ngx, llm, monkeypatch):
    # config/config.js: dotenv never overrides the container's variables; setupService.js reads only the file.
    values = settings(ngx, llm)
    stale = dict(values, CUSTOM_MODEL="not-served")
    app, server, _ = start_app(tmp_path, env_text(stale), values, monkeypatch)
    try:
        assert app.env["CUSTOM_MODEL"] == "vllm-qwen"
        assert app.is_configured() is False, "the setup check used the stale file"
        assert app.report["validations"][-1]["custom"]["model"] == "not-served"
    finally:
        server.shutdown()


def test_no_paperless_url_in_the_file_is_unconfigured_at_once(tmp_path, ngx, llm, monkeypatch):
    values = settings(ngx, llm)
    app, server, _ = start_app(tmp_path, "AI_PROVIDER=custom\n", values, monkeypatch)
    try:
        assert app.is_configured() is False and app.report["validations"] == []
    finally:
        server.shutdown()


def test_classification_stays_within_the_token_limit(tmp_path, ngx, llm, monkeypatch):
    values = settings(ngx, llm)
    app, server, _ = start_app(tmp_path, env_text(values), values, monkeypatch)
    try:
        app.env.update(values)
        app.start_scanning()
        documents = app.report["scan"]["documents"]
        assert [d["request"]["status"] for d in documents] == [200, 200]
        long_document = documents[1]
        assert long_document["sent_chars"] < long_document["content_chars"]
        assert long_document["estimated_request_tokens"] + 1000 <= 3274
        # the FAKE vLLM answers prose, which the real app refuses as well
        assert long_document["error"] == "Invalid JSON response from API"
    finally:
        server.shutdown()
