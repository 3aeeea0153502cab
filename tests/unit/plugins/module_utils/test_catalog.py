from __future__ import annotations

import copy

import pytest

from ansible_collections.homelab.inference.plugins.module_utils import _catalog


def minimal():
    return {
        "inference_models": [
            {"name": "vllm-qwen", "backend": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct-AWQ", "timeout": 3},
            {"name": "vllm-r1", "backend": "vllm", "model": "r1-awq", "reasoning": True, "tokenizer": "r1-tok"},
            {"name": "ollama-qwen", "backend": "ollama", "model": "qwen2.5:3b", "timeout": 120},
            {"name": "openai-gpt4o", "backend": "openai", "model": "gpt-4o-mini"},
            {"name": "groq/llama", "backend": "groq", "model": "llama", "parallel": True, "requests_per_day": 6000},
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
    ("duplicate name", _append_model({"name": "vllm-qwen", "backend": "openai", "model": "x"}),
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
    ("vllm model served by no mode", _append_model({"name": "vllm-big", "backend": "vllm", "model": "big"}),
     "inference_models (vllm-big): no GPU mode serves this vllm model"),
    ("chain member twice", _set(["inference_fallback_chain", 2], "vllm-qwen"),
     "inference_fallback_chain[2]: 'vllm-qwen' appears twice in the chain"),
    ("empty chain", _set(["inference_fallback_chain"], []),
     "inference_fallback_chain: must be a non-empty list"),
    ("models not a list", _set(["inference_models"], {"vllm-qwen": {}}),
     "inference_models: must be a non-empty list of models"),
    ("vllm_args not strings", _set(["inference_models", 0, "vllm_args"], ["--max-model-len", 8192]),
     "inference_models[0] (vllm-qwen).vllm_args: must be a list of strings"),
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


def test_vllm_args_from_catalog():
    models = minimal()["inference_models"]
    assert _catalog.vllm_args(models[0], ["--enforce-eager"]) == [
        "--model", "Qwen/Qwen2.5-7B-Instruct-AWQ", "--served-model-name", "vllm-qwen", "--enforce-eager"]
    assert _catalog.vllm_args(models[1], []) == [
        "--model", "r1-awq", "--served-model-name", "vllm-r1", "--tokenizer", "r1-tok",
        "--reasoning-parser", "deepseek_r1"]


def test_vllm_args_model_specific_flags_come_last():
    entry = {"name": "m", "backend": "vllm", "model": "x", "vllm_args": ["--quantization", "awq_marlin"],
             "reasoning": True, "reasoning_parser": "qwen3"}
    assert _catalog.vllm_args(entry, ["--enforce-eager"])[-5:] == [
        "--reasoning-parser", "qwen3", "--enforce-eager", "--quantization", "awq_marlin"]


def test_modes_serving():
    modes = minimal()["inference_gpu_modes"]
    assert _catalog.modes_serving("vllm-r1", modes) == ["r1"]
    assert _catalog.modes_serving("ollama-qwen", modes) == []
