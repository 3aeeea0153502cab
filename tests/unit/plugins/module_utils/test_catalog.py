from __future__ import annotations

import copy

import pytest

from ansible_collections.homelab.inference.plugins.module_utils import _catalog


def minimal():
    return {
        "inference_models": [
            {"name": "vllm-qwen", "backend": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct-AWQ", "timeout": 3,
             "context": 8192},
            {"name": "vllm-r1", "backend": "vllm", "model": "r1-awq", "reasoning": True, "tokenizer": "r1-tok",
             "context": 8192},
            {"name": "ollama-qwen", "backend": "ollama", "model": "qwen2.5:3b", "timeout": 120, "context": 4096},
            {"name": "openai-gpt4o", "backend": "openai", "model": "gpt-4o-mini", "context": 128000},
            {"name": "groq/llama", "backend": "groq", "model": "llama", "parallel": True, "requests_per_day": 6000,
             "context": 131072},
        ],
        "inference_fallback_chain": ["vllm-qwen", "ollama-qwen", "openai-gpt4o"],
        "inference_gpu_modes": {"ml": {"vllm_model": "vllm-qwen"}, "r1": {"vllm_model": "vllm-r1"},
                                "gaming": {"vllm_model": None}},
        "inference_gpu_default_mode": "ml",
    }


def errors_of(catalog):
    return _catalog.catalog_errors(catalog["inference_models"], catalog["inference_fallback_chain"],
                                   catalog["inference_gpu_modes"], catalog["inference_gpu_default_mode"])


def test_minimal_catalog_is_valid():
    assert errors_of(minimal()) == []


def _set(path, value):
    def change(catalog):
        target = catalog
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _append_model(entry):
    return lambda catalog: catalog["inference_models"].append(entry)


BAD = [
    ("unknown backend", _set(["inference_models", 2, "backend"], "llamacpp"),
     "inference_models[2] (ollama-qwen).backend: unknown backend 'llamacpp'; use one of"),
    ("chain member missing", _set(["inference_fallback_chain", 1], "ollama-qwen2"),
     "inference_fallback_chain[1]: 'ollama-qwen2' is not a model in inference_models"),
    ("mode names a non-vllm model", _set(["inference_gpu_modes", "r1", "vllm_model"], "ollama-qwen"),
     "inference_gpu_modes.r1.vllm_model: 'ollama-qwen' has backend ollama, but vLLM can only serve"),
    ("duplicate name", _append_model({"name": "vllm-qwen", "backend": "openai", "model": "x", "context": 1}),
     "inference_models[5] (vllm-qwen).name: 'vllm-qwen' is declared twice (also inference_models[0])"),
    ("parallel in chain", _set(["inference_fallback_chain", 2], "groq/llama"),
     "inference_fallback_chain[2]: 'groq/llama' is a parallel model"),
    ("default mode missing", _set(["inference_gpu_default_mode"], "turbo"),
     "inference_gpu_default_mode: 'turbo' is not a mode in inference_gpu_modes"),
    ("mode names an unknown model", _set(["inference_gpu_modes", "ml", "vllm_model"], "vllm-qwen3"),
     "inference_gpu_modes.ml.vllm_model: 'vllm-qwen3' is not a model in inference_models"),
    ("misspelt key", _set(["inference_models", 0, "timout"], 3),
     "inference_models[0] (vllm-qwen).timout: unknown key"),
    ("missing model id", lambda c: c["inference_models"][3].pop("model"),
     "inference_models[3] (openai-gpt4o): missing required key 'model'"),
    ("negative timeout", _set(["inference_models", 0, "timeout"], -1),
     "inference_models[0] (vllm-qwen).timeout: must be greater than 0"),
    ("boolean timeout", _set(["inference_models", 0, "timeout"], True),
     "inference_models[0] (vllm-qwen).timeout: must be an integer or a number"),
    ("vllm key on a cloud model", _set(["inference_models", 3, "tokenizer"], "t"),
     "inference_models[3] (openai-gpt4o).tokenizer: only vllm models take this key"),
    ("parallel local model", _set(["inference_models", 2, "parallel"], True),
     "inference_models[2] (ollama-qwen).parallel: only cloud models can be parallel"),
    ("reserved alias", _set(["inference_models", 3, "name"], "default"),
     "inference_models[3] (default).name: 'default' is reserved"),
    ("reserved mode", _set(["inference_gpu_modes", "status"], {"vllm_model": None}),
     "inference_gpu_modes.status: 'status' is reserved by gpu_mode"),
    ("mode name not a label value", _set(["inference_gpu_modes", "Gaming Mode"], {"vllm_model": None}),
     "inference_gpu_modes.Gaming Mode: mode names must be lower-case"),
    ("vllm model served by no mode", _append_model({"name": "vllm-big", "backend": "vllm", "model": "big",
                                                    "context": 8192}),
     "inference_models (vllm-big): no GPU mode serves this vllm model"),
    ("chain member twice", _set(["inference_fallback_chain", 2], "vllm-qwen"),
     "inference_fallback_chain[2]: 'vllm-qwen' appears twice in the chain"),
    ("empty chain", _set(["inference_fallback_chain"], []),
     "inference_fallback_chain: must be a non-empty list"),
    ("models not a list", _set(["inference_models"], {"vllm-qwen": {}}),
     "inference_models: must be a non-empty list of models"),
    ("vllm_args not strings", _set(["inference_models", 0, "vllm_args"], ["--max-model-len", 8192]),
     "inference_models[0] (vllm-qwen).vllm_args: must be a list of strings"),
    ("context missing", lambda c: c["inference_models"][2].pop("context"),
     "inference_models[2] (ollama-qwen): missing required key 'context'; add it (the tokens of prompt and answer"),
    ("context not an integer", _set(["inference_models", 2, "context"], "4k"),
     "inference_models[2] (ollama-qwen).context: must be an integer, got '4k'"),
    ("context zero", _set(["inference_models", 3, "context"], 0),
     "inference_models[3] (openai-gpt4o).context: must be greater than 0"),
    ("max-model-len in vllm_args", _set(["inference_models", 0, "vllm_args"], ["--max-model-len", "16384"]),
     "inference_models[0] (vllm-qwen).vllm_args: --max-model-len comes from the model's context; remove it"),
    ("max-model-len= in vllm_args", _set(["inference_models", 0, "vllm_args"], ["--max-model-len=16384"]),
     "inference_models[0] (vllm-qwen).vllm_args: --max-model-len comes from the model's context; remove it"),
    ("keep_alive on a vllm model", _set(["inference_models", 0, "keep_alive"], "-1"),
     "inference_models[0] (vllm-qwen).keep_alive: only ollama models take this key; remove it or set backend: ollama"),
    ("keep_alive on a cloud model", _set(["inference_models", 3, "keep_alive"], "24h"),
     "inference_models[3] (openai-gpt4o).keep_alive: only ollama models take this key"),
    ("keep_alive not a duration", _set(["inference_models", 2, "keep_alive"], "forever"),
     "inference_models[2] (ollama-qwen).keep_alive: 'forever' is not an Ollama duration; use -1 to keep the model "
     "loaded for good, or a duration such as 24h, 30m or 3600 (seconds)"),
    ("keep_alive without a unit after a fraction", _set(["inference_models", 2, "keep_alive"], "1.5"),
     "inference_models[2] (ollama-qwen).keep_alive: '1.5' is not an Ollama duration"),
    ("keep_alive zero", _set(["inference_models", 2, "keep_alive"], "0"),
     "inference_models[2] (ollama-qwen).keep_alive: 0 unloads the model after each request"),
    ("keep_alive zero minutes", _set(["inference_models", 2, "keep_alive"], "0m"),
     "inference_models[2] (ollama-qwen).keep_alive: 0 unloads the model after each request"),
    ("keep_alive a boolean", _set(["inference_models", 2, "keep_alive"], True),
     "inference_models[2] (ollama-qwen).keep_alive: must be a string or an integer"),
]


@pytest.mark.parametrize("change, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_defect_gives_one_line_naming_key_and_fix(change, expected):
    catalog = copy.deepcopy(minimal())
    change(catalog)
    errors = errors_of(catalog)
    assert any(e.startswith(expected) for e in errors), errors
    for error in errors:
        assert "\n" not in error
        # every message says what to do, after the key it names
        assert ";" in error or "must" in error, error


@pytest.mark.parametrize("value", ["-1", -1, "24h", "5m", "1h30m", "-1m", "300", 300, "90s", "2.5h"])
def test_keep_alive_takes_ollamas_durations(value):
    catalog = minimal()
    catalog["inference_models"][2]["keep_alive"] = value
    assert errors_of(catalog) == []


@pytest.mark.parametrize("value, seconds", [
    ("-1", None), (-1, None), ("-5m", None), ("24h", 86400.0), ("5m", 300.0), ("1h30m", 5400.0), ("300", 300.0),
    (300, 300.0), ("1.5h", 5400.0), ("250ms", 0.25),
])
def test_keep_alive_seconds(value, seconds):
    """None for ever, else seconds (Ollama: a negative duration keeps the model loaded for good)."""
    assert _catalog.keep_alive_seconds(value) == seconds


def test_vllm_args_from_catalog():
    models = minimal()["inference_models"]
    assert _catalog.vllm_args(models[0], ["--enforce-eager"]) == [
        "--model", "Qwen/Qwen2.5-7B-Instruct-AWQ", "--served-model-name", "vllm-qwen", "--max-model-len", "8192",
        "--enforce-eager"]
    assert _catalog.vllm_args(models[1], []) == [
        "--model", "r1-awq", "--served-model-name", "vllm-r1", "--tokenizer", "r1-tok",
        "--reasoning-parser", "deepseek_r1", "--max-model-len", "8192"]


def test_vllm_args_model_specific_flags_come_last():
    entry = {"name": "m", "backend": "vllm", "model": "x", "vllm_args": ["--quantization", "awq_marlin"],
             "reasoning": True, "reasoning_parser": "qwen3", "context": 32768}
    assert _catalog.vllm_args(entry, ["--enforce-eager"])[-7:] == [
        "--reasoning-parser", "qwen3", "--max-model-len", "32768", "--enforce-eager", "--quantization", "awq_marlin"]


@pytest.mark.parametrize("name, answering", [
    ("default", ["vllm-qwen", "ollama-qwen", "openai-gpt4o"]),
    ("vllm-qwen", ["vllm-qwen", "ollama-qwen", "openai-gpt4o"]),
    ("ollama-qwen", ["ollama-qwen", "openai-gpt4o"]),
    ("openai-gpt4o", ["openai-gpt4o"]),
    ("vllm-r1", ["vllm-r1"]),
    ("groq/llama", ["groq/llama"]),
])
def test_answering_models_follow_the_fallback_chain(name, answering):
    assert _catalog.answering_models(name, minimal()["inference_fallback_chain"]) == answering


@pytest.mark.parametrize("name, expected", [
    # the GPU head serves 8192, but in a GPU-free mode Ollama answers with 4096
    ("default", (4096, "ollama-qwen")),
    ("vllm-qwen", (4096, "ollama-qwen")),
    ("openai-gpt4o", (128000, "openai-gpt4o")),
    ("vllm-r1", (8192, "vllm-r1")),
])
def test_usable_context_is_the_smallest_on_the_path(name, expected):
    catalog = minimal()
    assert _catalog.usable_context(catalog["inference_models"], catalog["inference_fallback_chain"], name) == expected


def test_usable_context_of_a_chain_without_a_small_tier_is_the_heads():
    catalog = minimal()
    catalog["inference_models"][2]["context"] = 32768
    assert _catalog.usable_context(catalog["inference_models"], catalog["inference_fallback_chain"],
                                   "default") == (8192, "vllm-qwen")


@pytest.mark.parametrize("context, response, token_limit, response_tokens", [
    # response 1000; prompt (4096 - 1000 - 64) real tokens = 2274 in the app's 4-chars estimate
    (4096, 1000, 3274, 1000),
    (8192, 1000, 6346, 1000),
    # the answer's room is capped at a quarter of the context
    (2048, 1000, 1616, 512),
    (128000, 1000, 96202, 1000),
])
def test_paperless_ai_budget(context, response, token_limit, response_tokens):
    budget = _catalog.paperless_ai_budget(context, response)
    assert (budget["token_limit"], budget["response_tokens"]) == (token_limit, response_tokens)
    assert budget["prompt_tokens"] == token_limit - response_tokens


@pytest.mark.parametrize("context", [2048, 4096, 8192, 32768, 128000])
def test_a_prompt_paperless_ai_sizes_to_its_budget_fits_the_context(context):
    """Replay the app's arithmetic (customService.js, serviceUtils.js v3.0.9) on a budget and count
    the real tokens at 3 characters each, with the chat template's overhead."""
    budget = _catalog.paperless_ai_budget(context, 1000)
    system_prompt = "x" * 2000

    def estimate(text):
        return -(-len(text) // 4)  # Math.ceil(text.length / 4)

    prompt_estimate = estimate(system_prompt) + 4  # one message, 4 tokens of formatting
    available = budget["token_limit"] - (prompt_estimate + budget["response_tokens"])
    document = "y" * (available * 4)  # truncateToTokenLimit keeps availableTokens * 4 characters
    template = 16  # Qwen's chat template around a system and a user message, and the assistant's prefix
    real_prompt = -(-(len(system_prompt) + len(document)) // 3) + template
    assert real_prompt + budget["response_tokens"] <= context


def test_modes_serving():
    modes = minimal()["inference_gpu_modes"]
    assert _catalog.modes_serving("vllm-r1", modes) == ["r1"]
    assert _catalog.modes_serving("ollama-qwen", modes) == []
