"""FAKE Ollama server (image ollama/ollama): listens where ``OLLAMA_HOST`` says,
keeps its pulled models in the models directory (the pod's volume, so they
survive restarts), pulls from a pretend registry, and keeps models in memory as
``OLLAMA_KEEP_ALIVE``, ``OLLAMA_NUM_PARALLEL`` and ``OLLAMA_CONTEXT_LENGTH`` say
(tools/lab/fakes/ollama.py). Its timing is the lab's profile (``LAB_PROFILE``,
``LAB_TIME_SCALE``, ``LAB_LOAD_SCALE``; tools/lab/timing_profiles.py): a cold load
on a model's first use (``LAB_OLLAMA_COLD_LOAD`` seconds instead, when the lab
was given them), the prompt's evaluation, the decode rate."""

import json
import os
import sys

from lab.fakes.ollama import FakeOllama, canonical
from lab.timing_profiles import Timing

REGISTRY = ("qwen2.5:3b", "qwen2.5:7b", "llama3.2:1b", "llama3.2:3b", "mistral:7b")


class PersistentOllama(FakeOllama):
    def __init__(self, address, models_file, **kwargs):
        self.models_file = models_file
        saved = []
        if os.path.exists(models_file):
            with open(models_file) as handle:
                saved = json.load(handle)
        super().__init__(address, models=saved, **kwargs)

    def save(self):
        with open(self.models_file, "w") as handle:
            json.dump(sorted(self.models), handle)


def main():
    host, _, port = os.environ.get("OLLAMA_HOST", "127.0.0.1:11434").rpartition(":")
    models_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(models_dir, exist_ok=True)
    cold_load = os.environ.get("LAB_OLLAMA_COLD_LOAD")
    parallel = os.environ.get("OLLAMA_NUM_PARALLEL")
    server = PersistentOllama((host, int(port)), os.path.join(models_dir, "lab-models.json"),
                              registry=REGISTRY, pull_delay=float(os.environ.get("LAB_OLLAMA_PULL_DELAY", "0.2")),
                              cold_load=float(cold_load) if cold_load else None, timing=Timing.from_env("ollama"),
                              keep_alive=os.environ.get("OLLAMA_KEEP_ALIVE"),
                              parallel=int(parallel) if parallel else None,
                              context_length=os.environ.get("OLLAMA_CONTEXT_LENGTH"))
    original = server.models

    class Saving(set):
        def add(self, item):
            super().add(canonical(item))
            server.save()

        def discard(self, item):
            super().discard(item)
            server.save()

    server.models = Saving(original)
    print("INFO lab fake Ollama on %s:%s, models %s, profile %s, cold load %.1f s" % (
        host, port, sorted(server.models), server.timing.profile, server.cold_load), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
