"""Scores a response with transformers + PEFT, as `gigpo model score --json` does with gigpo.

    peft_score.py --base DIR [--adapter DIR] --prompt TEXT --response TEXT [--chat]

prints `{"tokens": [ids], "logprobs": [...]}`: the response's token ids (the base model's
tokenizer, no special tokens added) and their log-probabilities given the prompt, in f32 with
the adapter (a PEFT LoRA directory, e.g. one gigpo saved) applied. crates/gigpo-cli/tests/
peft_adapter.rs compares the two. Needs torch, transformers and peft
(python/requirements-torch.txt).
"""

import argparse
import json

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--response", required=True)
    ap.add_argument("--chat", action="store_true")
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(a.base)
    model = AutoModelForCausalLM.from_pretrained(a.base, dtype=torch.float32)
    if a.adapter:
        model = PeftModel.from_pretrained(model, a.adapter)
    model.eval()
    prompt = a.prompt
    if a.chat:
        messages = [{"role": "user", "content": a.prompt}]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    p = tok.encode(prompt, add_special_tokens=False)
    r = tok.encode(a.response, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([p + r])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    lps = [logp[len(p) - 1 + i, t].item() for i, t in enumerate(r)]
    print(json.dumps({"tokens": r, "logprobs": lps}))


if __name__ == "__main__":
    main()
