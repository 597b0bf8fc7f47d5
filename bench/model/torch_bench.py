#!/usr/bin/env python3
"""PyTorch (CPU) half of the side-by-side benchmark of the tiny model; see run.sh.

The same architecture and sizes as benches/side_by_side.rs: Qwen2 layout, 2 layers, d = 128,
4 heads, MLP 512, the tiny tokenizer's vocabulary (339); batch 16 x 128 tokens with 96 scored per
row for the training step (forward, PPO clipped loss with per-token advantages, backward, AdamW
with gradient clipping), and sampling 64 tokens with a KV cache at batch 1 and 16.
Prints one JSON object of median seconds.
"""

import json
import statistics
import sys
import time

import torch
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

BATCH, SEQ, PROMPT, NEW, VOCAB = 16, 128, 32, 64, 339


def timed(fn, warmup=2, reps=9):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def model():
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
        rope_theta=10000.0, tie_word_embeddings=False, attn_implementation="sdpa",
    )
    return Qwen2ForCausalLM(cfg).float()


def train_step_seconds():
    m = model().train()
    ids = torch.tensor([[(b * 131 + t * 7) % VOCAB for t in range(SEQ)] for b in range(BATCH)])
    targets = ids[:, PROMPT:]
    adv = torch.tensor([((i % 7) - 3.0) / 3.0 for i in range(BATCH * (SEQ - PROMPT))]).view(BATCH, -1)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.01)

    def logprobs():
        logits = m(ids).logits[:, PROMPT - 1:-1]
        return torch.log_softmax(logits.float(), -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    with torch.no_grad():
        old = logprobs() - 0.01

    def step():
        lp = logprobs()
        ratio = torch.exp(lp - old)
        loss = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()

    return timed(step)


def sample_seconds(batch):
    m = model().eval()
    prompts = torch.tensor([[(b * 31 + t * 3) % 250 for t in range(16)] for b in range(batch)])
    gen = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def run():
        cache = DynamicCache()
        out = m(prompts, past_key_values=cache, use_cache=True)
        tokens = []
        for _ in range(NEW):
            probs = torch.softmax(out.logits[:, -1].float(), -1)
            nxt = torch.multinomial(probs, 1, generator=gen)
            tokens.append(nxt)
            out = m(nxt, past_key_values=out.past_key_values, use_cache=True)
        return torch.cat(tokens, 1)

    return timed(run)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    res = {
        "train_step": train_step_seconds(),
        "sample64_b1": sample_seconds(1),
        "sample64_b16": sample_seconds(16),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
