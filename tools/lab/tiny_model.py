"""Tiny, locally made models for the REAL vLLM the lab can run (tools/lab/workloads/vllm_real.py).

One model per catalog model id (``Qwen/Qwen2.5-7B-Instruct-AWQ``,
``casperhansen/deepseek-r1-distill-qwen-7b-awq``, ...), generated at first use
with no download, deterministically (the seed comes from the model id), and
cached as ``~/.cache/homelab-inference/tiny-models-<key>/<model id>/`` where
``<key>`` hashes this file and the versions of torch, transformers and
tokenizers that made it. Different ids give different weights.

Each model is a 2-layer Llama (hidden size 128, 2 heads of 64: vLLM 0.32.0's
CPU attention backend refuses a head size of 16) with a byte-level BPE
tokenizer trained on a few sentences and a chat template. Its answer is not
random: the transformer layers are scaled down so the residual stream is
nearly the current token's embedding, and the output head is set so that each
token of a fixed answer predicts the next one with a margin of tens of logits.
Whatever the sampling settings, a chat request is answered with the model's
fixed text and ``finish_reason: stop`` (or ``length`` when ``max_tokens`` cuts
it). The reasoning model (an id containing ``deepseek-r1``, the rule the FAKE
vLLM uses too) has a DeepSeek-R1-Distill-like template whose generation prompt
ends in ``<think>\\n`` and answers ``<reasoning></think><answer>``, which
vLLM's ``deepseek_r1`` reasoning parser splits
(vllm/reasoning/deepseek_r1_reasoning_parser.py in v0.32.0); ``<think>`` and
``</think>`` are added, non-special tokens as in the R1 distills, so they stay
in the detokenized text.

Run with the vLLM venv's Python (it has torch, transformers, tokenizers)::

    <vllm-venv>/bin/python -m lab.tiny_model --model Qwen/Qwen2.5-7B-Instruct-AWQ
    <vllm-venv>/bin/python -m lab.tiny_model --name vllm-r1 --out DIR

It prints the model directory. Importing this module needs only the standard
library (the lab's kubelet imports the workload that calls it).
"""

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile

from lab import ROOT

CATALOG = os.path.join(ROOT, "roles", "catalog", "defaults", "main.yml")

HIDDEN = 128
HEADS = 2  # head_dim 64
LAYERS = 2
INTERMEDIATE = 256
# Covers every context in the catalog, so the served --max-model-len can be the catalog's.
MAX_POSITIONS = 32768
VOCAB_TARGET = 512
LAYER_SCALE = 0.1  # shrinks what the layers add to the residual stream
EMBED_NORM = 10.0
HEAD_SCALE = 4.0  # logit of the next answer token: about HEAD_SCALE * sqrt(HIDDEN)

# What the models answer. Every token of one model's chain must be distinct
# (the model predicts from the current token only); build() checks it.
ANSWER = "Hello! I am a tiny lab model."
R1_REASONING = "The user greets me, so I greet back."
R1_ANSWER = "Hello there!"

CORPUS = [
    "Hello! I am a tiny lab model.",
    "The user greets me, so I greet back.",
    "Hello there! How are you today?",
    "A tiny model answers every question the same way.",
    "The lab runs a real vLLM on a model made on this machine.",
    "Paperless documents get a title, tags and a correspondent.",
    "Switch the GPU to the reasoning model, then back to the chat model.",
]

QWEN_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
)
# DeepSeek-R1-Distill's template, reduced to what matters: its generation
# prompt opens the reasoning with "<think>\n", so the model's output holds only
# the closing </think>.
R1_TEMPLATE = (
    "<｜begin▁of▁sentence｜>"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{{ message['content'] }}"
    "{%- elif message['role'] == 'user' -%}<｜User｜>{{ message['content'] }}"
    "{%- else -%}<｜Assistant｜>{{ message['content'] }}<｜end▁of▁sentence｜>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<｜Assistant｜><think>\n{%- endif -%}"
)


def is_reasoning(model_id):
    return "deepseek-r1" in model_id.lower()


def flavour(model_id):
    """What the tiny model for ``model_id`` looks like: template, special tokens, answer."""
    if is_reasoning(model_id):
        return {"template": R1_TEMPLATE, "bos": "<｜begin▁of▁sentence｜>", "eos": "<｜end▁of▁sentence｜>",
                "special": ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>"],
                "added": ["<think>", "</think>"], "answer": [R1_REASONING, "</think>", R1_ANSWER]}
    return {"template": QWEN_TEMPLATE, "bos": None, "eos": "<|im_end|>",
            "special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "added": [], "answer": [ANSWER]}


def seed_of(model_id):
    return int.from_bytes(hashlib.sha256(model_id.encode()).digest()[:4], "big")


def relative_dir(model_id):
    """Where the model lives under the cache root: the model id itself, e.g. ``Qwen/Qwen2.5-7B-Instruct-AWQ``.

    vLLM started in the cache root with ``--model <id>`` then finds a local
    directory of that name and reports the id, as the real server would, as the
    model's ``root`` in ``/v1/models``.
    """
    parts = model_id.split("/")
    if model_id.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError("model id %r is not a Hugging Face style id" % model_id)
    return os.path.join(*parts)


def cache_key():
    """Hash of this generator and the library versions that shape its output."""
    from importlib.metadata import version  # no import of torch: a cache hit stays fast
    digest = hashlib.sha256()
    with open(os.path.abspath(__file__), "rb") as source:
        digest.update(source.read())
    digest.update(" ".join(version(name) for name in ("torch", "transformers", "tokenizers")).encode())
    return digest.hexdigest()[:16]


def cache_root():
    base = os.environ.get("HOMELAB_INFERENCE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "homelab-inference")
    return os.path.join(base, "tiny-models-" + cache_key())


def _tokenizer(spec):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_TARGET, special_tokens=spec["special"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=spec["eos"], bos_token=spec["bos"],
                                   pad_token=spec["eos"], model_max_length=MAX_POSITIONS)
    if spec["added"]:
        from tokenizers import AddedToken
        fast.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec["added"]])
    fast.chat_template = spec["template"]
    return fast


def _chain(fast, spec):
    """Token ids: the generation prompt's last token, the answer, the end-of-sequence token."""
    prompt = fast.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                      tokenize=False)
    start = fast(prompt, add_special_tokens=False)["input_ids"][-1]
    answer = []
    for part in spec["answer"]:
        answer += fast(part, add_special_tokens=False)["input_ids"]
    chain = [start] + answer + [fast.convert_tokens_to_ids(spec["eos"])]
    if len(set(chain[:-1])) != len(chain) - 1:
        raise ValueError("the answer repeats a token, which a model that reads only the current token cannot "
                         "say: %r" % fast.convert_ids_to_tokens(chain))
    return chain, answer


def build(model_id, out):
    """Write the tiny model for ``model_id`` into the directory ``out`` (created)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    spec = flavour(model_id)
    fast = _tokenizer(spec)
    chain, answer = _chain(fast, spec)
    torch.manual_seed(seed_of(model_id))
    config = LlamaConfig(vocab_size=len(fast), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                         max_position_embeddings=MAX_POSITIONS, rms_norm_eps=1e-6, tie_word_embeddings=False,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, dtype="float32")
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(LAYER_SCALE)
            layer.mlp.down_proj.weight.mul_(LAYER_SCALE)
        embed = torch.randn(config.vocab_size, HIDDEN)
        embed = embed / embed.norm(dim=1, keepdim=True)
        model.model.embed_tokens.weight.copy_(embed * EMBED_NORM)
        head = model.lm_head.weight
        for current, following in zip(chain, chain[1:]):
            head[following] += HEAD_SCALE * embed[current]
    model.eval()
    # Self-check: greedy decoding says the answer, then stops.
    ids = fast.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                   return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        said = model.generate(ids, max_new_tokens=len(answer) + 4, do_sample=False,
                              eos_token_id=fast.eos_token_id, pad_token_id=fast.eos_token_id)[0, ids.shape[1]:]
    if said.tolist() != answer + [fast.eos_token_id]:
        raise RuntimeError("tiny model for %s says %r, not its answer" % (model_id, fast.decode(said)))
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    GenerationConfig(bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                     pad_token_id=fast.eos_token_id).save_pretrained(out)
    with open(os.path.join(out, "LAB_MODEL.txt"), "w") as note:
        note.write("A tiny model the lab made for %s (random weights, a fixed answer); not %s.\n"
                   % (model_id, model_id))
    return out


@contextlib.contextmanager
def _locked(path):
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure(model_id, root=None):
    """The cached tiny model directory for ``model_id``, built once (atomically)."""
    root = root or cache_root()
    final = os.path.join(root, relative_dir(model_id))
    if os.path.isfile(os.path.join(final, "config.json")):
        return final
    os.makedirs(os.path.dirname(final), exist_ok=True)
    with _locked(os.path.join(root, ".lock")):
        if os.path.isfile(os.path.join(final, "config.json")):
            return final
        tmp = tempfile.mkdtemp(prefix="." + os.path.basename(final) + ".", dir=os.path.dirname(final))
        try:
            build(model_id, tmp)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def catalog_model(name):
    """The model id of catalog entry ``name`` (roles/catalog/defaults/main.yml)."""
    import yaml
    with open(CATALOG) as source:
        models = yaml.safe_load(source)["inference_models"]
    for entry in models:
        if entry["name"] == name:
            return entry["model"]
    raise SystemExit("%s is not in the catalog" % name)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab.tiny_model", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="the model id vLLM is started with (--model)")
    which.add_argument("--name", help="a catalog model name (its model id is read from the catalog)")
    parser.add_argument("--out", help="write the model here instead of the cache")
    args = parser.parse_args(argv)
    model_id = args.model or catalog_model(args.name)
    print(build(model_id, args.out) if args.out else ensure(model_id))


if __name__ == "__main__":
    sys.exit(main())
