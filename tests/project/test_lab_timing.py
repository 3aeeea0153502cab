"""The lab's FAKE model servers keep the time real ones take (tools/lab/timing_profiles.py).

No wall-clock thresholds here: each test checks the ORDER of what happened (the
server's own progress, read while the client waits) or the structure of the
answer, so a slow or busy machine cannot make it flaky.
"""

from __future__ import annotations

import datetime
import http.client
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from lab_fixture import DEVICE_PLUGIN, call, start_lab, vllm_deployment, wait_for
from lab.fakes.ollama import FakeOllama
from lab.fakes.openai_compat import FakeChatServer
from lab.timing_profiles import PROFILES, Timing, spread

TOKENS = 40  # with the realistic profile: TTFT + 40 tokens at ~59 tok/s, under a second


def chat_body(stream, max_tokens=TOKENS, content="Hello!", model="vllm-qwen"):
    return json.dumps({"model": model, "stream": stream, "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": content}]})


@pytest.fixture
def vllm():
    server = FakeChatServer(flavour="vllm", models=["vllm-qwen"], timing=Timing("vllm", "realistic")).start()
    yield server
    server.stop()


def test_the_profiles_cover_both_servers_and_cite_their_figures():
    for name in ("realistic", "fast"):
        assert set(PROFILES[name]) == {"vllm", "ollama"}
    realistic = PROFILES["realistic"]
    assert realistic["vllm"]["load"] == {"ml": 38.0, "r1": 90.0}
    assert realistic["ollama"]["cold_load"] == 90.0 and realistic["ollama"]["parallel"] == 1
    rates = [rate for _, rate in sorted(realistic["vllm"]["decode_tps"].items())]
    assert rates == sorted(rates, reverse=True), "each stream slows as streams are added"
    streams = sorted(realistic["vllm"]["decode_tps"])
    assert streams[-1] * rates[-1] > rates[0], "while the sum of all streams grows"


def test_scales_multiply_the_delays_and_the_load_scale_only_loads():
    plain, scaled = Timing("vllm", "realistic"), Timing("vllm", "realistic", time_scale=0.5, load_scale=0.1)
    assert scaled.ttft(100) == pytest.approx(plain.ttft(100) * 0.5)
    assert scaled.token_interval(4) == pytest.approx(plain.token_interval(4) * 0.5)
    assert scaled.load("deepseek-r1-distill") == pytest.approx(90.0 * 0.05)
    assert Timing("ollama", "realistic", load_scale=0.02).cold_load() == pytest.approx(1.8)
    assert Timing("vllm", "realistic").answer_tokens(None, 5) == 200
    assert Timing("vllm", "realistic").answer_tokens(8, 5) == 8
    assert Timing("vllm", "fast").answer_tokens(8, 5) == 5, "fast: the FAKE's own answer, as before profiles"
    assert spread(["a ", "b ", "c "], 2) == [["a ", "b "], ["c "]]
    assert spread(["a "], 3) == [["a "], [], []]


def test_a_plain_vllm_answer_sends_nothing_until_the_whole_completion_is_generated(vllm):
    connection = http.client.HTTPConnection("127.0.0.1", vllm.server_address[1], timeout=30)
    connection.request("POST", "/v1/chat/completions", chat_body(stream=False),
                       {"Content-Type": "application/json"})
    seen = set()
    while not select.select([connection.sock], [], [], 0.002)[0]:
        if vllm.requests:
            seen.add(vllm.requests[-1]["generated"])
    record = vllm.requests[-1]
    progress_when_answered = record["generated"]
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200 and answer["choices"][0]["message"]["content"] == "Hello from the fake model."
    assert record["tokens"] == TOKENS and answer["usage"]["completion_tokens"] == TOKENS
    assert progress_when_answered == TOKENS, "the first byte came only once every token was generated"
    assert any(0 < count < TOKENS for count in seen), "the client waited while tokens were generated"


def test_a_streamed_vllm_answer_sends_headers_at_once_then_one_chunk_per_token(vllm):
    connection = http.client.HTTPConnection("127.0.0.1", vllm.server_address[1], timeout=30)
    # A long prompt: its prefill (~1000 tokens) keeps the first token well after the headers.
    connection.request("POST", "/v1/chat/completions", chat_body(stream=True, content="x" * 4000),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    record = vllm.requests[-1]
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    assert record["generated"] == 0, "the headers came before the first token"
    buffer, events, progress = b"", [], []
    while True:
        data = response.read1(65536)
        if not data:
            break
        buffer += data
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            events.append(event.decode())
            progress.append(record["generated"])
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: "):]) for e in events[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas).strip() == "Hello from the fake model."
    # max_tokens (40) cut the profile's 200-token answer: vLLM says "length" (test_vllm_conformance.py).
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len(chunks) == 1 + TOKENS + 1, "a role chunk, one chunk per token, the finish"
    assert progress[1] < TOKENS, "the first token's chunk came before the last token was generated"
    assert len(set(progress)) > TOKENS // 2, "the chunks came spread over the generation, not in one burst"


def test_a_hanging_vllm_answers_nothing_not_even_health_or_models(vllm):
    vllm.behaviour = "hang"
    for path in ("/health", "/v1/models"):
        with pytest.raises((socket.timeout, TimeoutError)):
            urllib.request.urlopen(vllm.url + path, timeout=1)
    vllm.reset()
    with urllib.request.urlopen(vllm.url + "/health", timeout=10) as response:
        assert response.status == 200


def test_a_fake_vllm_built_without_a_profile_answers_at_once_as_before():
    server = FakeChatServer(flavour="vllm", models=["vllm-qwen"]).start()
    try:
        request = urllib.request.Request(server.url + "/v1/chat/completions", data=chat_body(False).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["choices"][0]["message"]["content"] == "Hello from the fake model."
        assert server.timing is None
    finally:
        server.stop()


# -- Ollama -----------------------------------------------------------------------------------

def post(server, path, body, timeout=30):
    request = urllib.request.Request(server.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def ps(server):
    with urllib.request.urlopen(server.url + "/api/ps", timeout=10) as response:
        return {m["name"]: m for m in json.loads(response.read())["models"]}


def expiry(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def ollama():
    server = FakeOllama(models=["qwen2.5:3b"], cold_load=0.2).start()
    yield server
    server.stop()


def test_ollama_loads_a_model_with_a_generate_without_prompt(ollama):
    assert ps(ollama) == {}
    [answer] = post(ollama, "/api/generate", {"model": "qwen2.5:3b"})
    assert answer["done"] is True and answer["done_reason"] == "load" and answer["response"] == ""
    assert ollama.loads == 1 and ollama.generations == [], "loaded, nothing generated"
    assert list(ps(ollama)) == ["qwen2.5:3b"]
    [chat] = post(ollama, "/api/chat", {"model": "qwen2.5:3b", "messages": []})
    assert chat["done_reason"] == "load" and chat["message"] == {"role": "assistant", "content": ""}
    [unload] = post(ollama, "/api/generate", {"model": "qwen2.5:3b", "keep_alive": 0})
    assert unload["done_reason"] == "unload"
    # Ollama lets go of a request's runner once the request is done, after its answer is sent
    # (server/sched.go, finishedReqCh): the chat just above may still hold it for a moment.
    wait_for(lambda: ps(ollama) == {}, timeout=10, interval=0.02)


def test_ollama_keep_alive_expiry_unloads_and_the_next_use_pays_the_cold_load_again(ollama):
    [first] = post(ollama, "/api/generate", {"model": "qwen2.5:3b", "prompt": "hi", "stream": False,
                                             "keep_alive": "1s"})
    assert first["done_reason"] == "stop" and first["load_duration"] > 0
    assert ollama.loads == 1 and "qwen2.5:3b" in ps(ollama)
    deadline = time.monotonic() + 30
    while "qwen2.5:3b" in ps(ollama) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ps(ollama) == {}, "unloaded once its keep_alive ran out"
    [second] = post(ollama, "/api/generate", {"model": "qwen2.5:3b", "prompt": "hi", "stream": False})
    assert ollama.loads == 2 and second["load_duration"] > 0, "the next use loaded it again"
    [third] = post(ollama, "/api/generate", {"model": "qwen2.5:3b", "prompt": "hi", "stream": False})
    assert ollama.loads == 2 and "load_duration" not in third, "while loaded, no load"


def test_ollama_keep_alive_forms_and_the_server_default(ollama):
    post(ollama, "/api/generate", {"model": "qwen2.5:3b", "keep_alive": -1})
    assert expiry(ps(ollama)["qwen2.5:3b"]["expires_at"]).year > 2200, "negative: kept for good"
    post(ollama, "/api/generate", {"model": "qwen2.5:3b", "keep_alive": "24h"})
    left = expiry(ps(ollama)["qwen2.5:3b"]["expires_at"]) - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(hours=23) < left <= datetime.timedelta(hours=24)
    # Without keep_alive a loaded model keeps the duration it has (server/sched.go, useLoadedRunner).
    post(ollama, "/api/generate", {"model": "qwen2.5:3b"})
    assert expiry(ps(ollama)["qwen2.5:3b"]["expires_at"]) - datetime.datetime.now(datetime.timezone.utc) \
        > datetime.timedelta(hours=23)
    # A string needs a unit, as Go's time.ParseDuration does.
    with pytest.raises(urllib.error.HTTPError) as refused:
        post(ollama, "/api/generate", {"model": "qwen2.5:3b", "keep_alive": "-1"})
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"] == 'time: missing unit in duration "-1"'
    server = FakeOllama(models=["qwen2.5:3b"], keep_alive="-1").start()
    try:
        post(server, "/api/generate", {"model": "qwen2.5:3b"})
        assert expiry(ps(server)["qwen2.5:3b"]["expires_at"]).year > 2200, "OLLAMA_KEEP_ALIVE=-1: for good"
    finally:
        server.stop()


def test_ollama_generates_one_request_at_a_time_and_queues_the_others():
    server = FakeOllama(models=["qwen2.5:3b"], timing=Timing("ollama", "realistic", time_scale=0.05),
                        cold_load=0).start()
    try:
        post(server, "/api/generate", {"model": "qwen2.5:3b"})  # loaded, so only generation is timed
        threads = [threading.Thread(target=post, args=(server, "/v1/chat/completions", {
            "model": "qwen2.5:3b", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}))
            for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        runs = sorted(server.generations, key=lambda g: g["started"])
        assert len(runs) == 3 and all(g["generated"] == 20 for g in runs)
        for earlier, later in zip(runs, runs[1:]):
            assert later["started"] >= earlier["finished"], "the next began only when the one before ended"
    finally:
        server.stop()


def test_ollama_answers_its_version_while_a_model_loads_and_nothing_under_a_hang(ollama):
    ollama.cold_load = 2
    loader = threading.Thread(target=post, args=(ollama, "/api/generate", {"model": "qwen2.5:3b"}))
    loader.start()
    deadline = time.monotonic() + 10
    while not ollama.loading and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ollama.loading
    with urllib.request.urlopen(ollama.url + "/api/version", timeout=10) as response:
        assert json.loads(response.read()) == {"version": "0.13.5"}
    assert ollama.loading, "the version came while the model was still loading"
    loader.join()
    ollama.behaviour = "hang"
    with pytest.raises((socket.timeout, TimeoutError)):
        urllib.request.urlopen(ollama.url + "/api/version", timeout=1)


# -- the lab hands its timing to the workloads --------------------------------------------------

def test_the_lab_times_its_vllm_load_by_profile_and_model_and_a_slow_model_fault_overrides_it(tmp_path):
    lab = start_lab(tmp_path, load_delay=None, profile="realistic", load_scale=0.01)
    try:
        assert call(lab, "GET", "/lab/status")[1]["timing"] == {"profile": "realistic", "time_scale": 1.0,
                                                                 "load_scale": 0.01}
        call(lab, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
        call(lab, "POST", "/apis/apps/v1/namespaces/kube-system/daemonsets", DEVICE_PLUGIN)
        deployment = vllm_deployment(model="vllm-r1")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        args[args.index("--model") + 1] = "casperhansen/deepseek-r1-distill-qwen-7b-awq"
        assert call(lab, "POST", "/apis/apps/v1/namespaces/ml/deployments", deployment)[0] == 201

        def vllm_log():
            items = call(lab, "GET", "/api/v1/namespaces/ml/pods?labelSelector=app=vllm")[1]["items"]
            return [lab.container_log(pod, "vllm") or "" for pod in items if pod["status"].get("podIP")]

        wait_for(lambda: any("loading" in log for log in vllm_log()))
        assert "(0.9 s, profile realistic)" in vllm_log()[0], "the R1 load: 90 s x 0.01"
        call(lab, "POST", "/lab/faults/slow-model", {"model": "vllm-r1", "seconds": 0.3})
        for pod in call(lab, "GET", "/api/v1/namespaces/ml/pods?labelSelector=app=vllm")[1]["items"]:
            call(lab, "DELETE", "/api/v1/namespaces/ml/pods/%s" % pod["metadata"]["name"])
        wait_for(lambda: any("(0.3 s, profile realistic)" in log for log in vllm_log()))
    finally:
        lab.stop()


def test_a_hang_freezes_the_requests_already_in_flight():
    """A frozen process answers nothing more, also not the request it was generating."""
    import threading
    import urllib.error
    import urllib.request

    from lab.fakes.openai_compat import FakeChatServer

    server = FakeChatServer(("127.0.0.1", 0), "vllm", ["vllm-qwen"]).start()
    server.latency = 0.5
    outcome = {}

    def ask():
        request = urllib.request.Request(server.url + "/v1/chat/completions", method="POST",
                                         data=b'{"model": "vllm-qwen", "messages": []}',
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                outcome["status"] = response.status
        except (urllib.error.URLError, OSError) as err:
            outcome["error"] = type(err).__name__

    try:
        thread = threading.Thread(target=ask)
        thread.start()
        while not server.requests:
            threading.Event().wait(0.01)
        server.behaviour = "hang"
        thread.join(2)
        assert thread.is_alive(), "the request in flight was answered by a hung server"
        server.release.set()  # let it go: the connection drops without an answer
        thread.join(10)
        assert "status" not in outcome
    finally:
        server.stop()


def _give_up(url, body, seconds):
    """A client that sends ``body`` and hangs up after ``seconds`` (a gateway's timeout)."""
    import json as _json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method="POST", data=_json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=seconds).read()
    except (urllib.error.URLError, OSError):
        pass


def _wait_for(condition, limit=10):
    import time as _time

    deadline = _time.monotonic() + limit
    while not condition():
        assert _time.monotonic() < deadline, "the server kept generating for a client that hung up"
        _time.sleep(0.05)


def test_a_client_that_hangs_up_stops_its_generation_on_vllm():
    from lab.fakes.openai_compat import FakeChatServer
    from lab.timing_profiles import Timing

    # Time to first token ~60 s: a 2,000-token prompt's prefill, slowed down forty-fold.
    server = FakeChatServer(("127.0.0.1", 0), "vllm", ["vllm-qwen"],
                            timing=Timing("vllm", "realistic", time_scale=40)).start()
    try:
        _give_up(server.url + "/v1/chat/completions",
                 {"model": "vllm-qwen", "messages": [{"role": "user", "content": "x" * 8000}]}, 0.5)
        _wait_for(lambda: server.streams == 0)
    finally:
        server.stop()


def test_a_client_that_hangs_up_frees_ollama_for_the_next_request():
    from lab.fakes.ollama import FakeOllama
    from lab.timing_profiles import Timing

    server = FakeOllama(models=["qwen2.5:3b"], timing=Timing("ollama", "realistic", load_scale=0)).start()
    try:
        # ~84 s of prompt evaluation at the profile's CPU rate; the client gives up after 0.5 s.
        _give_up(server.url + "/v1/chat/completions",
                 {"model": "qwen2.5:3b", "messages": [{"role": "user", "content": "x" * 8000}]}, 0.5)
        _wait_for(lambda: server.generations and "finished" in server.generations[-1])
    finally:
        server.stop()
