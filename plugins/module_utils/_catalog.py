# -*- coding: utf-8 -*-
# Copyright: homelab.inference contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The model catalog: validation and the values derived from it.

Private to the collection. Everything here is a pure function of the catalog
(``inference_models``, ``inference_fallback_chain``, ``inference_gpu_modes``,
``inference_gpu_default_mode``) so that it can be unit-tested without Ansible.
"""

from __future__ import annotations

import collections
import re

# Backends that run inside the cluster, and where each one is reached.
LOCAL_BACKENDS = ("vllm", "ollama")
# Cloud providers and the environment variable that holds each one's key.
CLOUD_BACKENDS = {
    "openai": "OPENAI_API_KEY",
    "groq": "GROQ_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
}
BACKENDS = LOCAL_BACKENDS + tuple(CLOUD_BACKENDS)

# The alias LiteLLM serves for the head of the fallback chain.
DEFAULT_ALIAS = "default"
# Mode names that the gpu_mode entry points reserve for themselves.
RESERVED_MODES = ("status", "boot")  # gpu_mode's and the host command's own words

# Every key of an inference_models entry, described once: (key, type or types, the only backend
# that may use it or None, required, what it means). The preflight checks entries against it,
# and the catalog role's argument spec documents the keys from it (scripts/gen_docs.py writes
# that part of the spec; a test fails when it is stale).
ModelKey = collections.namedtuple("ModelKey", "key types backend required text")
MODEL_KEY_TABLE = (
    ModelKey("name", str, None, True, "Unique; the name clients ask LiteLLM for (letters, digits and . _ : / -)."),
    ModelKey("backend", str, None, True, "Who serves it: vllm, ollama, openai, groq, gemini or mistral."),
    ModelKey("model", str, None, True, "The model's id at its backend (a Hugging Face id for vllm, a tag for ollama)."),
    ModelKey("context", int, None, True,
             "Tokens, prompt and answer together, the backend serves for the model: vLLM's C(--max-model-len) for vllm "
             "models (so C(vllm_args) may not set that flag), the context Ollama gives an OpenAI-compatible request for "
             "ollama models (its C(OLLAMA_CONTEXT_LENGTH), 4096 by default in Ollama 0.13.5), the provider's context "
             "window for cloud models. A client's prompt must fit the smallest context of the models that may answer it "
             "(the model and the chain tiers after it); Paperless-AI's C(TOKEN_LIMIT) and C(RESPONSE_TOKENS) are derived "
             "from it."),
    ModelKey("timeout", (int, float), None, False, "Seconds a healthy answer may take before LiteLLM gives up on it."),
    ModelKey("parallel", bool, None, False, "A cloud model asked for by name that never joins the fallback chain."),
    ModelKey("requests_per_minute", int, None, False, "The provider's free-tier quota per minute; LiteLLM keeps within it."),
    ModelKey("requests_per_day", int, None, False, "The provider's free-tier quota per day; LiteLLM keeps within it."),
    ModelKey("description", str, None, False, "What the model is for, shown in the client guide's table."),
    ModelKey("tokenizer", str, "vllm", False, "The Hugging Face tokenizer, when the model repository has none of its own."),
    ModelKey("reasoning", bool, "vllm", False, "A reasoning model: vLLM parses its thinking apart from its answer."),
    ModelKey("reasoning_parser", str, "vllm", False, "vLLM's reasoning parser for it (deepseek_r1 when not given)."),
    ModelKey("vllm_args", list, "vllm", False, "Extra vLLM arguments for this model, as strings."),
    ModelKey("keep_alive", (str, int), "ollama", False,
             "How long Ollama keeps the model loaded after the ollama role loads it and after each request: -1 for good, "
             "or a duration such as 24h, 30m or 3600 (seconds); not 0."),
)
MODEL_KEYS = {entry.key: entry.types for entry in MODEL_KEY_TABLE}
VLLM_ONLY_KEYS = tuple(entry.key for entry in MODEL_KEY_TABLE if entry.backend == "vllm")
OLLAMA_ONLY_KEYS = tuple(entry.key for entry in MODEL_KEY_TABLE if entry.backend == "ollama")
# vLLM's parser for the DeepSeek-R1 family, the reference system's reasoning model.
DEFAULT_REASONING_PARSER = "deepseek_r1"
MODE_KEYS = {"vllm_model": (str, type(None)), "description": str}
REQUIRED_MODEL_KEYS = tuple(entry.key for entry in MODEL_KEY_TABLE if entry.required)
# vLLM's flag for the context; the catalog's ``context`` is its only source.
MAX_MODEL_LEN_FLAG = "--max-model-len"

# Ollama's keep_alive: whole seconds (negative: for good), or a Go duration
# (time.ParseDuration: "24h", "1h30m", "-1m"), as api.Duration.UnmarshalJSON and
# envconfig.KeepAlive read it (Ollama v0.13.5, api/types.go, envconfig/config.go).
_SECONDS_RE = re.compile(r"^[-+]?[0-9]+$")
_DURATION_RE = re.compile(r"^[-+]?((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+$")
_DURATION_PART_RE = re.compile(r"([0-9]*\.?[0-9]*)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                 "h": 3600.0}

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
# Mode names end up as Kubernetes label values.
MODE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


_DOC_TYPES = {int: "integer", str: "string", bool: "boolean", list: "list"}


def model_key_docs():
    """The model keys as documentation lines (Ansible doc markup), in the table's order."""
    lines = []
    for entry in MODEL_KEY_TABLE:
        types = entry.types if isinstance(entry.types, tuple) else (entry.types,)
        facts = ["number" if float in types else " or ".join(_DOC_TYPES[t] for t in types)]
        if entry.required:
            facts.append("required")
        if entry.backend:
            facts.append("%s models only" % entry.backend)
        lines.append("C(%s) (%s): %s" % (entry.key, ", ".join(facts), entry.text))
    return lines


def _type_name(types):
    if not isinstance(types, tuple):
        types = (types,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a mapping", type(None): "null"}
    return " or ".join(names[t] for t in types)


def _is_type(value, types):
    if not isinstance(types, tuple):
        types = (types,)
    # YAML booleans are ints to Python; never accept one where a number is asked.
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _model_errors(index, entry, seen):
    where = "inference_models[%d]" % index
    if not isinstance(entry, dict):
        return ["%s: must be a mapping with at least name, backend and model" % where]
    errors = []
    name = entry.get("name")
    if isinstance(name, str):
        where = "inference_models[%d] (%s)" % (index, name)
    for key in REQUIRED_MODEL_KEYS:
        if key not in entry:
            hint = (" (the tokens of prompt and answer its backend serves: vLLM's --max-model-len, Ollama's"
                    " OLLAMA_CONTEXT_LENGTH, the provider's context window)") if key == "context" else ""
            errors.append("%s: missing required key '%s'; add it%s" % (where, key, hint))
    for key, value in entry.items():
        if key not in MODEL_KEYS:
            errors.append("%s.%s: unknown key; use one of %s" % (where, key, ", ".join(sorted(MODEL_KEYS))))
        elif not _is_type(value, MODEL_KEYS[key]):
            errors.append("%s.%s: must be %s, got %r" % (where, key, _type_name(MODEL_KEYS[key]), value))
    if errors:
        return errors
    if not MODEL_NAME_RE.match(name):
        errors.append("%s.name: %r is not a usable model name; use letters, digits and . _ : / -" % (where, name))
    if name == DEFAULT_ALIAS:
        errors.append("%s.name: '%s' is reserved for the fallback chain's head; pick another name" % (where, name))
    if name in seen:
        errors.append("%s.name: '%s' is declared twice (also inference_models[%d]); give each model a unique name"
                      % (where, name, seen[name]))
    backend = entry["backend"]
    if backend not in BACKENDS:
        errors.append("%s.backend: unknown backend '%s'; use one of %s" % (where, backend, ", ".join(BACKENDS)))
    else:
        if backend != "vllm":
            for key in VLLM_ONLY_KEYS:
                if key in entry:
                    errors.append("%s.%s: only vllm models take this key; remove it or set backend: vllm"
                                  % (where, key))
        if backend != "ollama":
            for key in OLLAMA_ONLY_KEYS:
                if key in entry:
                    errors.append("%s.%s: only ollama models take this key; remove it or set backend: ollama"
                                  % (where, key))
    if "keep_alive" in entry and backend == "ollama":
        problem = keep_alive_problem(entry["keep_alive"])
        if problem:
            errors.append("%s.keep_alive: %s" % (where, problem))
    for key in ("timeout", "requests_per_minute", "requests_per_day", "context"):
        if key in entry and entry[key] <= 0:
            errors.append("%s.%s: must be greater than 0, got %r" % (where, key, entry[key]))
    if entry.get("parallel") and backend in LOCAL_BACKENDS:
        errors.append("%s.parallel: only cloud models can be parallel; remove it or use a cloud backend" % where)
    if any(not isinstance(arg, str) for arg in entry.get("vllm_args", [])):
        errors.append("%s.vllm_args: must be a list of strings (quote numbers)" % where)
    elif any(_is_flag(arg, MAX_MODEL_LEN_FLAG) for arg in entry.get("vllm_args", [])):
        errors.append("%s.vllm_args: %s comes from the model's context; remove it and set context"
                      % (where, MAX_MODEL_LEN_FLAG))
    return errors


def keep_alive_problem(value):
    """Why ``value`` is not a keep_alive Ollama takes (one line with the fix), or None."""
    text = str(value).strip()
    if isinstance(value, bool) or not (_SECONDS_RE.match(text) or _DURATION_RE.match(text)):
        return ("%r is not an Ollama duration; use -1 to keep the model loaded for good, or a duration such as 24h, "
                "30m or 3600 (seconds)" % (value,))
    if keep_alive_seconds(value) == 0:
        return ("0 unloads the model after each request; use -1 to keep it loaded for good, or a duration such as "
                "24h")
    return None


def keep_alive_seconds(value):
    """Seconds an Ollama keep_alive keeps a model loaded; None for good (a negative value)."""
    text = str(value).strip()
    if _SECONDS_RE.match(text):
        seconds = float(int(text))
    else:
        sign = -1.0 if text.startswith("-") else 1.0
        seconds = sign * sum(float(number) * _UNIT_SECONDS[unit]
                             for number, unit in _DURATION_PART_RE.findall(text.lstrip("+-")))
    return None if seconds < 0 else seconds


def _is_flag(arg, flag):
    return arg == flag or arg.startswith(flag + "=")


def catalog_errors(models, chain, modes, default_mode):
    """Return every problem in the catalog as one line each (empty when valid)."""
    if not isinstance(models, list) or not models:
        return ["inference_models: must be a non-empty list of models (a mapping per model with name, backend, model)"]
    errors = []
    seen = {}
    for index, entry in enumerate(models):
        errors.extend(_model_errors(index, entry, seen))
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            seen.setdefault(entry["name"], index)
    by_name = {m["name"]: m for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)}

    if not isinstance(chain, list) or not chain:
        errors.append("inference_fallback_chain: must be a non-empty list of model names, head first")
    else:
        for index, member in enumerate(chain):
            where = "inference_fallback_chain[%d]" % index
            if member not in by_name:
                errors.append("%s: '%s' is not a model in inference_models; declare it there or remove it from the chain"
                              % (where, member))
            elif by_name[member].get("parallel"):
                errors.append("%s: '%s' is a parallel model (parallel: true) and must never join the chain; "
                              "remove it from the chain" % (where, member))
            if member in chain[:index]:
                errors.append("%s: '%s' appears twice in the chain; list each tier once" % (where, member))

    errors.extend(_mode_errors(modes, default_mode, by_name))
    return errors


def _mode_errors(modes, default_mode, by_name):
    if not isinstance(modes, dict) or not modes:
        return ["inference_gpu_modes: must be a mapping of mode name to {vllm_model: <vllm model or null>}"]
    errors = []
    served = set()
    for mode, spec in modes.items():
        where = "inference_gpu_modes.%s" % mode
        if not isinstance(mode, str) or not MODE_NAME_RE.match(mode):
            errors.append("%s: mode names must be lower-case letters, digits and '-' (they become label values)" % where)
        if mode in RESERVED_MODES:
            errors.append("%s: '%s' is reserved by gpu_mode and gpu-mode; pick another name" % (where, mode))
        if not isinstance(spec, dict) or "vllm_model" not in spec:
            errors.append("%s: must be a mapping with vllm_model (a vllm model name, or null to free the GPU)" % where)
            continue
        for key, value in spec.items():
            if key not in MODE_KEYS:
                errors.append("%s.%s: unknown key; use one of %s" % (where, key, ", ".join(sorted(MODE_KEYS))))
            elif not _is_type(value, MODE_KEYS[key]):
                errors.append("%s.%s: must be %s, got %r" % (where, key, _type_name(MODE_KEYS[key]), value))
        target = spec["vllm_model"]
        if target is None or not isinstance(target, str):
            continue
        if target not in by_name:
            errors.append("%s.vllm_model: '%s' is not a model in inference_models; declare it or fix the name"
                          % (where, target))
        elif by_name[target].get("backend") != "vllm":
            errors.append("%s.vllm_model: '%s' has backend %s, but vLLM can only serve backend vllm models; "
                          "name a vllm model or null" % (where, target, by_name[target].get("backend")))
        else:
            served.add(target)
    if default_mode not in modes:
        errors.append("inference_gpu_default_mode: '%s' is not a mode in inference_gpu_modes; use one of %s"
                      % (default_mode, ", ".join(sorted(str(m) for m in modes))))
    for name, entry in sorted(by_name.items()):
        if entry.get("backend") == "vllm" and name not in served:
            errors.append("inference_models (%s): no GPU mode serves this vllm model; name it in a mode's "
                          "vllm_model or remove it" % name)
    return errors


def modes_serving(model_name, modes):
    """GPU modes in which ``model_name`` answers (every mode for non-vLLM models)."""
    return sorted(mode for mode, spec in modes.items() if spec.get("vllm_model") == model_name)


def vllm_args(entry, common_args):
    """Command-line arguments of the vLLM server for one catalog model.

    The served model name is the catalog name, so clients, LiteLLM and vLLM's
    own ``/v1/models`` all use one name for one model.
    """
    args = ["--model", entry["model"], "--served-model-name", entry["name"]]
    if entry.get("tokenizer"):
        args += ["--tokenizer", entry["tokenizer"]]
    if entry.get("reasoning"):
        args += ["--reasoning-parser", entry.get("reasoning_parser", DEFAULT_REASONING_PARSER)]
    # The context clients are told (docs, Paperless-AI's budget) is the one vLLM is started with.
    args += [MAX_MODEL_LEN_FLAG, str(entry["context"])]
    return args + list(common_args) + list(entry.get("vllm_args", []))


def model_by_name(models, name):
    for entry in models:
        if entry["name"] == name:
            return entry
    raise KeyError("model %r is not in the catalog" % name)


def answering_models(name, chain):
    """The models a request for ``name`` may be answered by, in order.

    LiteLLM falls back from each chain tier to every tier after it, and serves
    ``default`` as the chain's head; any other model answers alone.
    """
    if name == DEFAULT_ALIAS:
        return list(chain)
    if name in chain:
        return list(chain[chain.index(name):])
    return [name]


def usable_context(models, chain, name):
    """(tokens, model) of the smallest context among the models that may answer ``name``.

    A request sized for the head alone overflows the next tier: with the GPU in
    a mode that does not load the head, every request is answered by a later
    tier, so a client must fit the smallest context of the whole path.
    """
    contexts = [(model_by_name(models, member)["context"], member) for member in answering_models(name, chain)]
    return min(contexts, key=lambda item: item[0])


# Paperless-AI v3.0.9 counts 4 characters as one token for every model name that
# is not an OpenAI one (services/serviceUtils.js, estimateTokensForNonOpenAI) and
# truncates the document to TOKEN_LIMIT - RESPONSE_TOKENS - its prompt in those
# units (services/customService.js). Qwen's and Llama's tokenizers give about 3
# characters per token on German or number-heavy OCR text, so the estimate is
# scaled by 3/4; the chat template and the app's per-message slack take a few
# dozen tokens more.
PAPERLESS_AI_CHARS_PER_TOKEN = 4
REAL_CHARS_PER_TOKEN = 3
PROMPT_OVERHEAD_TOKENS = 64
# Room for Paperless-AI's own instructions and a page of text, in its units.
PAPERLESS_AI_MIN_PROMPT_TOKENS = 1024


def paperless_ai_budget(context, response_tokens):
    """TOKEN_LIMIT and RESPONSE_TOKENS for Paperless-AI on a model path of ``context`` tokens.

    The answer's room is capped at a quarter of the context. The prompt the app
    may build (TOKEN_LIMIT - RESPONSE_TOKENS in its estimate) holds at most
    ``context - answer - overhead`` real tokens at 3 characters per token.
    """
    response = min(int(response_tokens), context // 4)
    prompt_real = context - response - PROMPT_OVERHEAD_TOKENS
    prompt_estimate = prompt_real * REAL_CHARS_PER_TOKEN // PAPERLESS_AI_CHARS_PER_TOKEN
    return {"token_limit": response + max(prompt_estimate, 0), "response_tokens": response,
            "prompt_tokens": max(prompt_estimate, 0)}
