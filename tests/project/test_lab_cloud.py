"""The lab's FAKE cloud providers (tools/lab/external.py): under their API host names in the lab's DNS, each accepting
only the key the lab keeps for it, and refusing any other as the real provider does."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from lab_fixture import start_lab, wait_for

PROVIDERS = {"openai": ("api.openai.com", "/v1/chat/completions", "gpt-4o-mini"),
             "groq": ("api.groq.com", "/openai/v1/chat/completions", "llama-3.3-70b-versatile"),
             "mistral": ("api.mistral.ai", "/v1/chat/completions", "mistral-small-latest")}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = start_lab(tmp_path_factory.mktemp("cloud"))
    yield lab
    lab.stop()


def dns(lab):
    with open(lab.network.dns_file) as handle:
        return json.load(handle)


def key(lab, provider):
    with open(os.path.join(lab.state_dir, "secrets", "%s_api_key" % provider)) as handle:
        return handle.read().split()[0]


def post(url, body, headers):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers=dict(headers, **{"Content-Type": "application/json"}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_an_openai_style_provider_answers_its_own_key_only(lab, provider):
    host, path, model = PROVIDERS[provider]
    address = wait_for(lambda: dns(lab).get(host))
    url = "http://%s:8080%s" % (address, path)
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    status, answer = post(url, body, {"Authorization": "Bearer " + key(lab, provider)})
    assert status == 200 and answer["choices"][0]["message"]["content"]
    wrong = "sk-wrong-key-0123456789"
    status, refusal = post(url, body, {"Authorization": "Bearer " + wrong})
    assert status == 401
    if provider == "openai":
        assert refusal["error"]["code"] == "invalid_api_key"
        assert refusal["error"]["message"].startswith("Incorrect API key provided: sk-****************6789.")
        assert post(url, body, {})[1]["error"]["message"].startswith("You didn't provide an API key.")
    elif provider == "groq":
        assert refusal["error"] == {"message": "Invalid API Key", "type": "invalid_request_error", "param": None,
                                    "code": "invalid_api_key"}
    else:
        assert refusal["message"] == "Unauthorized" and refusal["request_id"]


def test_gemini_answers_its_own_key_only(lab):
    address = wait_for(lambda: dns(lab).get("generativelanguage.googleapis.com"))
    url = "http://%s:8080/v1beta/models/gemini-2.0-flash:generateContent" % address
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    status, answer = post(url, body, {"x-goog-api-key": key(lab, "gemini")})
    assert status == 200 and answer["candidates"][0]["content"]["parts"][0]["text"]
    status, refusal = post(url, body, {"x-goog-api-key": "AIza-wrong"})
    assert (status, refusal["error"]["status"]) == (400, "INVALID_ARGUMENT")
    assert refusal["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert post(url, body, {})[0] == 403


def test_each_provider_has_its_own_private_key(lab):
    before = {p: key(lab, p) for p in ("openai", "groq", "mistral", "gemini")}
    assert all(len(v) > 20 for v in before.values()) and len(set(before.values())) == 4
    assert all(oct(os.stat(os.path.join(lab.state_dir, "secrets", "%s_api_key" % p)).st_mode)[-3:] == "600"
               for p in before)
