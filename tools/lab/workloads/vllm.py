"""FAKE vLLM server (image vllm/vllm-openai): takes vLLM's own command line.

Like the real API server it opens its port only once the model is loaded,
serves exactly the ``--served-model-name`` names (default: the ``--model`` id),
answers others with vLLM's 404 body, and splits reasoning into
``reasoning`` (vLLM v0.32.0's field) when started with ``--reasoning-parser``; a
DeepSeek-R1 model without it returns raw text with only the closing ``</think>``.
``--max-model-len`` is the context its /v1/models reports and its 400s for a
prompt or ``max_tokens`` over it enforce (prompt tokens estimated as characters
/ 4). Its wire format is held to the real vLLM's by
tests/project/test_vllm_conformance.py.
On SIGTERM it does what vLLM v0.32.0 does with its default ``--shutdown-timeout 0``: the
requests it is running are aborted and it exits (``vllm/v1/engine/core.py``,
``EngineCore._handle_shutdown``: mode "abort"; ``vllm/entrypoints/launchers/launcher.py``).
How many it was running is noted in ``$LAB_OBSERVATIONS/vllm-shutdowns.jsonl``: the
requests a switch let reach a terminating vLLM.
``LAB_FAIL`` makes the load fail instead: ``oom`` (killed, exit 137) or
``error`` (exit 1 with vLLM's kind of message).

Its timing is the lab's profile (``LAB_PROFILE``, ``LAB_TIME_SCALE``,
``LAB_LOAD_SCALE``; tools/lab/timing_profiles.py): the load takes the profile's time
for the model (the R1 distill's or the ml model's), unless ``LAB_LOAD_DELAY``
gives the seconds (an explicit delay or the ``slow-model`` fault), and answers
take the profile's time to first token and decode rate.
"""

import argparse
import json
import os
import signal
import sys
import time

from lab.fakes.openai_compat import FakeChatServer
from lab.timing_profiles import Timing


def parse(argv):
    parser = argparse.ArgumentParser(prog="vllm serve (lab fake)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", nargs="+")
    parser.add_argument("--tokenizer")
    parser.add_argument("--reasoning-parser")
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args, _ignored = parser.parse_known_args(argv)  # the GPU tuning flags mean nothing here
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    names = args.served_model_name or [args.model]
    timing = Timing.from_env("vllm")
    delay = os.environ.get("LAB_LOAD_DELAY")
    load = float(delay) if delay else timing.load(args.model)
    print("INFO lab fake vLLM: loading %s as %s (%.1f s, profile %s)" % (args.model, names, load, timing.profile),
          flush=True)
    time.sleep(load)
    failure = os.environ.get("LAB_FAIL")
    if failure == "oom":
        print("torch.OutOfMemoryError: CUDA out of memory (lab fault)", flush=True)
        os._exit(137)
    if failure:
        print("ValueError: failed to load model %s (lab fault)" % args.model, flush=True)
        sys.exit(1)
    raw = not args.reasoning_parser and "deepseek-r1" in args.model.lower()
    server = FakeChatServer((args.host, args.port), "vllm", names, reasoning_parser=args.reasoning_parser,
                            reasoning_raw=raw, timing=timing, root=args.model, max_model_len=args.max_model_len)
    print("INFO lab fake vLLM: serving %s on %s:%d" % (names, args.host, args.port), flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: shut_down(server))
    server.serve_forever()


def shut_down(server):
    """SIGTERM: abort the running requests (their connections close with the process) and exit."""
    running = server.streams
    print("INFO [shutdown] lab fake vLLM: aborting in-flight requests count=%d" % running, flush=True)
    directory = os.environ.get("LAB_OBSERVATIONS")
    if directory:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "vllm-shutdowns.jsonl"), "a") as handle:
            handle.write(json.dumps({"pod": os.environ.get("LAB_POD_NAME"), "running": running,
                                     "time": time.time()}) + "\n")
    os._exit(0)


if __name__ == "__main__":
    main()
