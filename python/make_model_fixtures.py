#!/usr/bin/env python3
"""Make the parity fixtures of crates/gigpo-model from Hugging Face transformers.

Run by hand (not in CI), from the repository root, in a virtual environment:

    python3 -m venv /tmp/venv-fixtures
    /tmp/venv-fixtures/bin/pip install torch transformers safetensors
    /tmp/venv-fixtures/bin/python python/make_model_fixtures.py

It writes two tiny random checkpoints under crates/gigpo-model/tests/fixtures/:
  qwen2/  Qwen2ForCausalLM, grouped-query attention, q/k/v biases, f32, one safetensors file;
  llama/  LlamaForCausalLM, grouped-query attention, Llama 3 rope scaling, tied embeddings,
          bfloat16 weights in two shards with an index (exercises dtype conversion and sharding).
Each holds config.json, the weights, tokenizer.json, tokenizer_config.json (with a chat template)
and expected.json: fixed prompts, transformers' float32 logits at every prompt position, greedy
generations, and a rendered chat template. The Rust tests (tests/parity.rs) must match the logits
to 1e-4 and the greedy tokens exactly. Everything is seeded, so re-running reproduces the files
(up to the library versions recorded in expected.json).
"""

import json
import os
import shutil
import sys

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "crates", "gigpo-model", "tests", "fixtures")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# A template with the Jinja features real chat templates use: namespace, loop variables,
# string methods, raise_exception, a default system turn.
CHAT_TEMPLATE = (
    "{%- set ns = namespace(system=false) -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' %}{% set ns.system = true %}{% endif -%}"
    "{%- endfor -%}"
    "{%- if not ns.system %}<|im_start|>system\nYou are a helpful agent.<|im_end|>\n{% endif -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + m['role']) }}{% endif -%}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n"
    "{%- if loop.last and m['role'] == 'user' and m['content'].startswith('!') %}(bang){% endif %}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}"
)

CHAT = [
    {"role": "user", "content": "  Where is the box?  "},
    {"role": "assistant", "content": "<action>up</action>"},
    {"role": "user", "content": "!now push it"},
]

PROMPTS = [
    [5, 71, 200, 33, 90, 12, 7, 150, 42, 3],
    [100, 101, 102],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 22, 33, 44, 55, 66, 77],
]
MAX_NEW = 12


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def make_tokenizer(path):
    chars = bytes_to_unicode()
    vocab = {chars[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    tok.save(os.path.join(path, "tokenizer.json"))
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
    }
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def record(path, dtype):
    tokzr = transformers.AutoTokenizer.from_pretrained(path)
    chat_text = tokzr.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    # Reload from disk in float32: this checks the saved files, and keeps buffers such as the
    # rotary inverse frequencies at full precision (casting a model to bfloat16 rounds them).
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    logits = []
    greedy = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = torch.tensor([p])
            logits.append(model(ids).logits[0].tolist())
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=MAX_NEW,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
            greedy.append(out[0, len(p):].tolist())
    expected = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "weights_dtype": dtype,
        "prompts": PROMPTS,
        "logits": [[[round(x, 7) for x in row] for row in l] for l in logits],
        "greedy": greedy,
        "max_new_tokens": MAX_NEW,
        "chat_messages": CHAT,
        "chat_text": chat_text,
    }
    with open(os.path.join(path, "expected.json"), "w") as f:
        json.dump(expected, f)


def build(name, config, cls, dtype, shard):
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    torch.manual_seed(1234)
    model = cls(config)
    # Random models are nearly uniform; sharpen them so greedy decoding is far from ties.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
            else:
                p.normal_(1.0 if p.shape[0] == config.hidden_size else 0.0, 0.1)
    model = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": "150KB"} if shard else {}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    gen = os.path.join(path, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    make_tokenizer(path)
    record(path, dtype)
    print(name, sorted(os.listdir(path)), file=sys.stderr)


def main():
    common = dict(
        vocab_size=260,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=258,
        pad_token_id=256,
    )
    qwen = Qwen2Config(max_position_embeddings=128, rope_theta=10000.0, tie_word_embeddings=False, **common)
    build("qwen2", qwen, Qwen2ForCausalLM, "float32", shard=False)
    llama = LlamaConfig(
        max_position_embeddings=256,
        rope_theta=50000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        **common,
    )
    build("llama", llama, LlamaForCausalLM, "bfloat16", shard=True)


if __name__ == "__main__":
    main()
