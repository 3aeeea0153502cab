"""How long the lab's FAKE model servers take: timing profiles for the FAKE vLLM and the FAKE Ollama.

A profile gives, per server kind:

- ``ttft``: seconds to the first token, by number of concurrent streams (a table,
  interpolated), before the prompt's own prefill: time to first token is
  ``ttft + prompt_tokens / prefill_tps``; the first token comes out of the prefill;
- ``decode_tps``: tokens per second of ONE stream, by number of concurrent streams
  (vLLM batches: each stream slows a little as streams are added, the sum grows);
  ``None`` is no time at all;
- ``answer_tokens``: how long an answer is when the request does not cap it lower
  (``max_tokens``); ``None``: the FAKE's own short answer;
- ``parallel`` (Ollama): requests generated at once; later ones queue
  (``OLLAMA_NUM_PARALLEL``, 1 by default in Ollama 0.13.5, envconfig/config.go);
- ``load`` (vLLM, by mode) and ``cold_load`` (Ollama): seconds until a model serves.

Two profiles: ``realistic`` (the cited measurements below) and ``fast`` (what the
fakes did before there were profiles: answers at once, loads in a second or two;
for tests where timing is not the point).

Two scales, from the lab's command line or the environment, multiply the delays:
``LAB_TIME_SCALE`` every delay (request timing and loads), ``LAB_LOAD_SCALE`` the
load delays on top of it (vLLM's model load, Ollama's cold load). The molecule
``lab`` scenario runs ``realistic`` with the request timing as measured and the
loads scaled down, so a scenario full of GPU-mode switches stays minutes long.
An explicit load delay (``--load-delay``, ``--ollama-cold-load``, the
``slow-model`` fault) is seconds as given, never scaled.

Keep-alive durations asked by a client (Ollama's ``keep_alive``) are the client's,
not a delay of the server: they are never scaled.
"""

from __future__ import annotations

import math
import os

# -- the sources -------------------------------------------------------------------------
#
# [3060-vllm] https://nith.in/posts/workshop/what-an-llm-server-feels-like-under-load
#     RTX 3060 12 GB, vLLM 0.11.0 (the vllm/vllm-openai:v0.11.0 image), Qwen 2.5 7B AWQ:
#     one user: 43 ms TTFT and 59 tok/s decode; TTFT p95 by concurrent users:
#     1: 40 ms, 8: 140 ms, 32: 280 ms, 64: 570 ms, 96: 770 ms.
# [a6000-sweep]
#     https://ld-singh.github.io/ai-factory-ops-lab/portfolio-lab/06-validation-reports/inference-benchmark-report/
#     RTX A6000 (Ampere, sm_86 like the RTX 3060), vLLM, Qwen/Qwen2.5-7B-Instruct: median time per
#     output token by concurrency 1: 21.9 ms, 2: 22.0, 4: 22.1, 8: 22.3, 64: 27.5, 128: 36.0, 256: 53.1.
#     No per-stream sweep on a 3060 was found; the 3060's per-stream rate at c streams is taken as
#     59 tok/s x TPOT(1) / TPOT(c) from this sweep (same model family, same GPU architecture). A
#     3060 has less compute per byte of bandwidth than an A6000, so its knee likely comes earlier:
#     the values past 8 streams are optimistic.
# [3060-prefill] https://github.com/turboderp/exllama/issues/6
#     RTX 3060 12 GB, a 4-bit 7B (llama-7b-4bit, exllama): prompt processing 1423 tokens/s.
#     The closest published prompt rate for a 4-bit 7B on this card; vLLM's Marlin kernels are
#     likely faster, so long prompts are timed on the slow side.
# [cpu-2t] https://github.com/geerlingguy/sbc-reviews/issues/107
#     llama.cpp on CPU, 2 threads, Llama-3.2-3B-Instruct Q4_K_M (1.87 GiB, 3.21 B parameters):
#     pp512 28.67 t/s, pp4096 23.91 t/s, tg128 11.05 t/s (Framework 12, Intel i3-1315U).
#     The reference system's Ollama pod is limited to 2 CPUs (limits cpu 2), so two threads' worth
#     of a desktop-class x86 core is what qwen2.5:3b (3.09 B parameters, Q4_K_M in Ollama's
#     library, the same size class) gets there. Ollama runs llama.cpp; the prompt rate used is
#     pp4096's, the one for the long prompts that make prefill matter.
# [reference] the hand-built home lab this collection automates (tjetzinger/home-lab, state of
#     2026-01-16), as measured there: gaming -> ml 38-46 s; R1 "loads in ~90 s"; Ollama's cold
#     load took ~164 s at worst (hence OLLAMA_KEEP_ALIVE=-1), the catalog says 60-164 s.

# Per-stream decode by concurrent streams, derived as [a6000-sweep] says.
_A6000_TPOT_MS = {1: 21.9, 2: 22.0, 4: 22.1, 8: 22.3, 64: 27.5, 128: 36.0, 256: 53.1}
_VLLM_SINGLE_STREAM_TPS = 59.0  # [3060-vllm]

PROFILES = {
    "realistic": {
        "vllm": {
            "ttft": {1: 0.040, 8: 0.140, 32: 0.280, 64: 0.570, 96: 0.770},  # [3060-vllm], p95
            "prefill_tps": 1423.0,  # [3060-prefill]
            "decode_tps": {streams: round(_VLLM_SINGLE_STREAM_TPS * _A6000_TPOT_MS[1] / tpot, 1)
                           for streams, tpot in _A6000_TPOT_MS.items()},
            # A choice, not a measurement: a paragraph-long answer when the request sets no lower
            # max_tokens (a chat model answers until it stops; the FAKE's own text is one line).
            "answer_tokens": 200,
            # [reference] R1 loads in ~90 s. The ml model's load is at most the fastest measured
            # gaming -> ml switch (38 s): that switch is the load plus the pod's start and polls.
            "load": {"ml": 38.0, "r1": 90.0},
        },
        "ollama": {
            # No fixed part is published apart from the prompt's evaluation, which is the wait
            # for the first token on a CPU.
            "ttft": {1: 0.0},
            "prefill_tps": 23.91,  # [cpu-2t], pp4096
            "decode_tps": {1: 11.05},  # [cpu-2t], tg128
            "answer_tokens": 200,  # the same choice as vLLM's
            "parallel": 1,  # OLLAMA_NUM_PARALLEL's default (Ollama 0.13.5, envconfig/config.go)
            # [reference] ~164 s at worst, 60-164 s in the catalog; the profile takes 90 s.
            "cold_load": 90.0,
        },
    },
    "fast": {
        "vllm": {"ttft": {1: 0.0}, "prefill_tps": None, "decode_tps": {1: None}, "answer_tokens": None,
                 "load": {"ml": 2.0, "r1": 2.0}},
        "ollama": {"ttft": {1: 0.0}, "prefill_tps": None, "decode_tps": {1: None}, "answer_tokens": None,
                   "parallel": None, "cold_load": 1.0},
    },
}
NAMES = tuple(PROFILES)
DEFAULT_PROFILE = "realistic"  # the lab's command line; code building a fake without a Timing gets none


def _interpolate(table, streams):
    """A value of a {streams: value} table at ``streams``, linear between points, flat past the ends."""
    points = sorted(table.items())
    if streams <= points[0][0]:
        return points[0][1]
    for (low, low_value), (high, high_value) in zip(points, points[1:]):
        if streams <= high:
            if low_value is None or high_value is None:
                return high_value
            return low_value + (high_value - low_value) * (streams - low) / (high - low)
    return points[-1][1]


class Timing:
    """One server kind's profile, scaled: the delays a FAKE waits."""

    def __init__(self, kind, profile=DEFAULT_PROFILE, time_scale=1.0, load_scale=1.0):
        if profile not in PROFILES:
            raise ValueError("unknown timing profile %r (known: %s)" % (profile, ", ".join(NAMES)))
        self.kind, self.profile = kind, profile
        self.spec = PROFILES[profile][kind]
        self.time_scale, self.load_scale = float(time_scale), float(load_scale)

    @classmethod
    def from_env(cls, kind, environ=None):
        """The Timing the kubelet hands a workload (``LAB_PROFILE``, ``LAB_TIME_SCALE``, ``LAB_LOAD_SCALE``)."""
        environ = os.environ if environ is None else environ
        return cls(kind, environ.get("LAB_PROFILE") or DEFAULT_PROFILE,
                   float(environ.get("LAB_TIME_SCALE") or 1.0), float(environ.get("LAB_LOAD_SCALE") or 1.0))

    def answer_tokens(self, max_tokens, own):
        """Tokens an answer has: the profile's answer length capped by ``max_tokens``; ``own`` (the
        FAKE's own text's length) when the profile sets none."""
        length = self.spec.get("answer_tokens")
        if length is None:
            return own
        if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
            return max(1, min(length, max_tokens))
        return length

    def ttft(self, prompt_tokens, streams=1):
        """Seconds to the first token of a prompt of ``prompt_tokens`` with ``streams`` generating."""
        seconds = _interpolate(self.spec["ttft"], streams) or 0.0
        if self.spec.get("prefill_tps"):
            seconds += prompt_tokens / self.spec["prefill_tps"]
        return seconds * self.time_scale

    def token_interval(self, streams=1):
        """Seconds between two tokens of one stream while ``streams`` generate; 0 for none."""
        rate = _interpolate(self.spec["decode_tps"], streams)
        return self.time_scale / rate if rate else 0.0

    def load(self, model=""):
        """vLLM's load of ``model``: the R1 distill's or the ml model's."""
        mode = "r1" if "deepseek-r1" in (model or "").lower() else "ml"
        return self.spec["load"][mode] * self.time_scale * self.load_scale

    def cold_load(self):
        return self.spec["cold_load"] * self.time_scale * self.load_scale

    @property
    def parallel(self):
        return self.spec.get("parallel")


def estimate_tokens(text):
    """Tokens of a text, estimated as characters / 4 (as the FAKE Paperless-AI counts them)."""
    return int(math.ceil(len(text or "") / 4.0))


def message_text(messages):
    """The text of chat messages (string contents and the text parts of list contents)."""
    parts = []
    for message in messages or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if isinstance(p, dict)]
    return "".join(parts)


def spread(pieces, tokens):
    """The answer's text pieces over ``tokens`` tokens: one list of pieces per token. With fewer pieces
    than tokens, the later tokens carry none (an empty delta); with more, several share a token."""
    tokens = max(1, tokens)
    slots = [[] for _ in range(tokens)]
    for index, piece in enumerate(pieces):
        slots[index * tokens // len(pieces) if len(pieces) > tokens else index].append(piece)
    return slots
