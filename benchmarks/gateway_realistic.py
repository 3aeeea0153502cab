"""The gateway under real model timing: the rendered config and the reference
system's config side by side, each in front of its own FAKE vLLM and FAKE
Ollama timed by the lab's ``realistic`` profile (tools/lab/timing_profiles.py: an
RTX 3060 with a 7B AWQ model, qwen2.5:3b on two CPU cores), run at the same
time so that they share the machine's conditions.

Measured for each config:
- a Paperless-AI-like request (non-streamed, a 2,000-token prompt, a 200-token
  answer) with vLLM healthy: who answered (requests abandoned to the CPU tier
  while vLLM is healthy), p50 and p99; then the same with vLLM refusing;
- failover of a short chat: vLLM refusing (the first request and the steady
  state), and vLLM hanging while a request is in flight;
- the first answers after vLLM comes back (a switch back to ``ml``): who
  answered each, and how long until vLLM answers again.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import threading
import time

PAPERLESS_PROMPT_TOKENS = 2000
PAPERLESS_ANSWER_TOKENS = 200
# The FAKE servers estimate a prompt's tokens as characters / 4.
PAPERLESS_REQUEST = {
    "messages": [{"role": "system", "content": "You are a document analyzer. Answer with JSON: title, "
                                               "correspondent, tags, document_date, language."},
                 {"role": "user", "content": "x" * (4 * PAPERLESS_PROMPT_TOKENS)}],
    "max_tokens": PAPERLESS_ANSWER_TOKENS, "stream": False}
CHAT_REQUEST = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def ask(port, key, body, model="vllm-qwen", timeout=900):
    """(status, seconds, the model group that answered)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    began = time.perf_counter()
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(dict(body, model=model)),
                     {"Content-Type": "application/json", "Authorization": "Bearer " + key})
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - began, response.getheader("x-litellm-model-group")
    except (OSError, http.client.HTTPException):
        return 0, time.perf_counter() - began, None
    finally:
        conn.close()


def percentiles(values):
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def at(share):
        return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]

    return {"n": len(ordered), "p50_s": round(at(0.5), 2), "p99_s": round(at(0.99), 2), "max_s": round(ordered[-1], 2)}


def paperless(port, key, total, concurrency):
    """Paperless-like requests: latencies, and how many each tier answered."""
    answers = []
    lock = threading.Lock()

    def one(_):
        result = ask(port, key, PAPERLESS_REQUEST)
        with lock:
            answers.append(result)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    by = {}
    for status, _, group in answers:
        name = group if status == 200 else "failed (%s)" % status
        by[name] = by.get(name, 0) + 1
    return {"requests": total, "concurrency": concurrency, "answered_by": by,
            "latency": percentiles([seconds for status, seconds, _ in answers if status == 200])}


def until_vllm_skipped(port, key, limit=30):
    """Ask until a request does not reach vLLM any more (the gateway skips it), at most ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ask(port, key, CHAT_REQUEST)


def refusing(port, key, upstreams, steady):
    upstreams.vllm.stop()
    first = ask(port, key, CHAT_REQUEST)
    rest = [ask(port, key, CHAT_REQUEST) for _ in range(steady)]
    direct = [ask(port, key, CHAT_REQUEST, model="ollama-qwen") for _ in range(steady)]
    return {"first_request_s": round(first[1], 3), "first_answered_by": first[2],
            "steady": percentiles([seconds for _, seconds, _ in rest]),
            "cpu_tier_asked_directly": percentiles([seconds for _, seconds, _ in direct]),
            "answered_by": sorted({group for _, _, group in [first] + rest})}


def hanging(port, key, upstreams, steady):
    """vLLM hangs while a request is in flight: when is that request answered, and by whom?"""
    upstreams.vllm.latency = 5  # the request is in flight, not yet answered, when vLLM hangs
    result = {}

    def in_flight():
        result["in_flight"] = ask(port, key, CHAT_REQUEST)

    thread = threading.Thread(target=in_flight)
    thread.start()
    time.sleep(1)
    hung_at = time.perf_counter()
    upstreams.vllm.behaviour = "hang"
    thread.join()
    answered_after = time.perf_counter() - hung_at
    rest = [ask(port, key, CHAT_REQUEST) for _ in range(steady)]
    upstreams.vllm.reset()
    status, seconds, group = result["in_flight"]
    return {"in_flight_answered_after_hang_s": round(answered_after, 2), "in_flight_status": status,
            "in_flight_answered_by": group, "steady": percentiles([s for _, s, _ in rest]),
            "steady_answered_by": sorted({g for _, _, g in rest})}


def switch_back(port, key, upstreams, restart, watch_seconds=6, every=0.25):
    """vLLM stopped, then back: a request sent every ``every`` s from the moment it is back (each on its own
    connection, not waiting for the one before); who answered each, and the first one vLLM answered."""
    upstreams.vllm.stop()
    for _ in range(3):
        ask(port, key, CHAT_REQUEST)
    time.sleep(5)  # long enough for any cooldown or probe to have noticed the stop
    restart()
    back_at = time.perf_counter()
    answers = []
    lock = threading.Lock()

    def one(sent_at):
        status, seconds, group = ask(port, key, CHAT_REQUEST)
        with lock:
            answers.append({"sent_at_s": round(sent_at, 2), "status": status, "answered_by": group})

    threads = []
    while time.perf_counter() - back_at < watch_seconds:
        thread = threading.Thread(target=one, args=(time.perf_counter() - back_at,))
        thread.start()
        threads.append(thread)
        time.sleep(every)
    for thread in threads:
        thread.join()
    answers.sort(key=lambda answer: answer["sent_at_s"])
    first_vllm = next((a["sent_at_s"] for a in answers if a["answered_by"] == "vllm-qwen"), None)
    return {"answers": answers, "first_request_vllm_answered_sent_after_s": first_vllm,
            "first_answer_after_switch_by": answers[0]["answered_by"] if answers else None,
            "answered_by_cpu_tier_after_switch": len([a for a in answers if a["answered_by"] == "ollama-qwen"])}


def measure(name, port, key, upstreams, restart, args, log):
    result = {}
    log("[%s] Paperless-like requests, vLLM healthy" % name)
    result["paperless_vllm_healthy"] = paperless(port, key, args.paperless_healthy, 4)
    log("[%s] Paperless-like requests, vLLM refusing" % name)
    upstreams.vllm.stop()
    result["paperless_vllm_dead"] = paperless(port, key, args.paperless_dead, 1)
    restart()
    time.sleep(5)
    log("[%s] failover, vLLM refusing" % name)
    result["failover_refusing"] = refusing(port, key, upstreams, args.realistic_steady)
    restart()
    time.sleep(5)
    log("[%s] failover, vLLM hanging mid-request" % name)
    result["failover_hanging"] = hanging(port, key, upstreams, args.realistic_steady)
    time.sleep(5)
    log("[%s] switch back to ml" % name)
    result["switch_back_to_ml"] = switch_back(port, key, upstreams, restart)
    return result
