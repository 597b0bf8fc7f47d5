#!/usr/bin/env python3
"""transformers + PEFT half of bench/real-model/run.sh: the work of one training iteration of
configs/smollm2-frozenlake.toml, done the usual PyTorch way on the CPU.

    torch_iteration.py MODEL_DIR THREADS [ROUNDS] [CONFIG]

MODEL_DIR is a Hugging Face directory (`gigpo model convert` of the GGUF file); CONFIG (default
configs/smollm2-frozenlake.toml) gives the shapes: its system prompt, episodes per iteration
(groups x num_generations), steps, reply length and micro-batch. A rank-8 LoRA (alpha 16) on
every projection, as gigpo's pretrained profile. Each round:
- rollout: one prompt per episode (the system prompt, a FrozenLake 3x3 map in the user turn, the
  chat template, the answer prefilled with "<action>"), sampled at temperature 1 with `generate`
  (KV cache, stopping at "</action>"), once per step;
- update: the prompt + answer sequences of every step, forward and backward in micro-batches
  with the PPO-clipped loss on the answer tokens, gradient clipping and one AdamW step.
Prints one JSON object: prompt and generated tokens per second of the rollout, and tokens of
the trained sequences per second of the update (medians over ROUNDS after one warm-up round).
"""

import json
import random
import statistics
import sys
import time
import tomllib

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def shapes(path):
    """(system prompt, episodes, steps, new tokens, micro-batch) of a gigpo config."""
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    r, u = cfg["rollout"], cfg["update"]
    return (r["system_prompt"], r["groups"] * r["num_generations"], r["max_steps"],
            r["max_new_tokens"], u["micro_batch_size"])


def frozenlake_prompt(tok, rng, system):
    cells = [["F"] * 3 for _ in range(3)]
    for r in range(3):
        for c in range(3):
            if rng.random() < 0.2:
                cells[r][c] = "H"
    cells[0][0], cells[2][2] = "P", "G"
    grid = "\n".join(" ".join(row) for row in cells)
    user = f"Current observation:\n{grid}\nAdmissible actions: up, down, left, right"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text + "<action>"


def rollout(model, tok, prompts, new_tokens):
    """One batch per step; returns (prompt tokens, generated tokens, seconds, sequences)."""
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    n_prompt = int(enc.attention_mask.sum())
    t = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                             max_new_tokens=new_tokens, stop_strings=["</action>"], tokenizer=tok,
                             pad_token_id=tok.pad_token_id)
    secs = time.perf_counter() - t
    new = out[:, enc.input_ids.shape[1]:]
    seqs, n_new = [], 0
    for i in range(len(prompts)):
        p = enc.input_ids[i][enc.attention_mask[i].bool()].tolist()
        r = [x for x in new[i].tolist() if x != tok.pad_token_id] or [tok.eos_token_id]
        n_new += len(r)
        seqs.append((p, r))
    return n_prompt, n_new, secs, seqs


def update(model, opt, seqs, gen, micro_size):
    """Forward and backward of every sequence in micro-batches, one optimizer step."""
    total = sum(len(r) for _, r in seqs)
    n_tokens = 0
    t = time.perf_counter()
    opt.zero_grad()
    for k in range(0, len(seqs), micro_size):
        micro = seqs[k:k + micro_size]
        width = max(len(p) + len(r) for p, r in micro)
        ids = torch.zeros((len(micro), width), dtype=torch.long)
        mask = torch.zeros((len(micro), width), dtype=torch.long)
        target = torch.zeros((len(micro), width), dtype=torch.bool)
        for i, (p, r) in enumerate(micro):
            s = p + r
            ids[i, :len(s)] = torch.tensor(s)
            mask[i, :len(s)] = 1
            target[i, len(p):len(s)] = True
        n_tokens += int(mask.sum())
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        keep = target[:, 1:]
        adv = torch.randn(lp.shape, generator=gen)
        ratio = torch.exp(lp - lp.detach())
        pg = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
        (pg[keep].sum() / total).backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    return n_tokens, time.perf_counter() - t


def main():
    model_dir, threads = sys.argv[1], int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    config = sys.argv[4] if len(sys.argv) > 4 else "configs/smollm2-frozenlake.toml"
    system, rows, steps, new_tokens, micro_size = shapes(config)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                            target_modules=TARGETS))
    # lr 0: the update costs what it costs, and every round samples the prompted policy, as
    # gigpo's first iteration does
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0,
                            weight_decay=0.0)
    rng, gen = random.Random(0), torch.Generator().manual_seed(0)
    rates = {"prompt": [], "generated": [], "update": []}
    for round_ in range(rounds + 1):
        n_prompt = n_new = 0
        secs = 0.0
        seqs = []
        model.eval()
        for _ in range(steps):
            prompts = [frozenlake_prompt(tok, rng, system) for _ in range(rows)]
            p, g, s, q = rollout(model, tok, prompts, new_tokens)
            n_prompt, n_new, secs, seqs = n_prompt + p, n_new + g, secs + s, seqs + q
        model.train()
        n_seq, up_secs = update(model, opt, seqs, gen, micro_size)
        if round_ == 0:
            continue
        rates["prompt"].append(n_prompt / secs)
        rates["generated"].append(n_new / secs)
        rates["update"].append(n_seq / up_secs)
    print(json.dumps({
        "threads": threads, "torch": torch.__version__,
        "rollout_prompt_tokens_per_s": statistics.median(rates["prompt"]),
        "rollout_generated_tokens_per_s": statistics.median(rates["generated"]),
        "update_tokens_per_s": statistics.median(rates["update"]),
    }))


if __name__ == "__main__":
    main()
