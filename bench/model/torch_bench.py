#!/usr/bin/env python3
"""PyTorch (CPU) half of the side-by-side benchmark of the tiny model; see run.sh.

The same architecture and sizes as benches/side_by_side.rs: Qwen2 layout, 2 layers, d = 128,
4 heads, MLP 512, the tiny tokenizer's vocabulary (339); batch 16 x 128 tokens with 96 scored per
row for the training step (forward, PPO clipped loss with per-token advantages, backward, AdamW
with gradient clipping), and sampling 64 tokens with a KV cache at batch 1 and 16, both through
transformers' forward with its cache and through a plain decoder loop over the same weights
(PlainDecoder: preallocated KV cache, checked against transformers' logits before it is timed).

With a second argument, a Hugging Face directory of SmolLM2-135M-Instruct, it also times that
model with a rank-8 PEFT LoRA (alpha 16) on every projection, the sizes of benches/side_by_side.rs:
forward + backward of the PPO loss over 4 x 256 tokens (192 scored per row, logits only where
they are scored), no-gradient scoring of the same batch, and sampling 64 tokens at batch 8 with
transformers' `generate` and with the plain decoder loop (adapter on in both).

Prints one JSON object of median seconds (the SmolLM2 keys prefixed with `smollm2.`).
"""

import json
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, Qwen2Config, Qwen2ForCausalLM

BATCH, SEQ, PROMPT, NEW, VOCAB, ROPE_THETA = 16, 128, 32, 64, 339, 10000.0


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
        rope_theta=ROPE_THETA, tie_word_embeddings=False, attn_implementation="sdpa",
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


def sample_prompts(batch):
    """The prompts both samplers continue: `batch` rows of 16 tokens."""
    return torch.tensor([[(b * 31 + t * 3) % 250 for t in range(16)] for b in range(batch)])


def sample_seconds(batch):
    m = model().eval()
    prompts = sample_prompts(batch)
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


class PlainDecoder:
    """The same Qwen2 weights in a hand-written decoder loop: preallocated KV cache, fused
    scaled-dot-product attention, no framework cache objects; what a peer writing a sampler
    for this model directly in PyTorch would write."""

    def __init__(self, m, batch, max_len):
        c = m.config
        self.m, self.heads, self.kv_heads = m.model, c.num_attention_heads, c.num_key_value_heads
        self.head_dim = c.hidden_size // c.num_attention_heads
        self.eps, self.lm_head = c.rms_norm_eps, m.lm_head
        theta = c.rope_parameters["rope_theta"]
        inv = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2).float() / self.head_dim))
        ang = torch.outer(torch.arange(max_len).float(), inv)
        ang = torch.cat([ang, ang], -1)
        self.cos, self.sin = ang.cos(), ang.sin()
        shape = (batch, self.kv_heads, max_len, self.head_dim)
        self.k = [torch.zeros(shape) for _ in self.m.layers]
        self.v = [torch.zeros(shape) for _ in self.m.layers]

    def rms(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, pos):
        cos, sin = self.cos[pos], self.sin[pos]
        h = x.shape[-1] // 2
        rot = torch.cat([-x[..., h:], x[..., :h]], -1)
        return x * cos + rot * sin

    def forward(self, ids, start):
        """Logits of the last position of `ids` (batch × t), written at positions start..start+t."""
        b, t = ids.shape
        pos = torch.arange(start, start + t)
        x = self.m.embed_tokens(ids)
        for i, layer in enumerate(self.m.layers):
            a = layer.self_attn
            h = self.rms(x, layer.input_layernorm.weight)
            q = a.q_proj(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
            k = a.k_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
            v = a.v_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
            self.k[i][:, :, start:start + t] = self.rope(k, pos)
            self.v[i][:, :, start:start + t] = v
            keys, values = self.k[i][:, :, :start + t], self.v[i][:, :, :start + t]
            o = torch.nn.functional.scaled_dot_product_attention(
                self.rope(q, pos), keys, values, is_causal=t > 1,
                enable_gqa=self.heads != self.kv_heads)
            x = x + a.o_proj(o.transpose(1, 2).reshape(b, t, -1))
            h = self.rms(x, layer.post_attention_layernorm.weight)
            mlp = layer.mlp
            x = x + mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(h)) * mlp.up_proj(h))
        return self.lm_head(self.rms(x[:, -1], self.m.norm.weight))


def plain_sample_seconds(batch, m=None, prompts=None, warmup=2, reps=9):
    m = (m or model()).eval()
    prompts = sample_prompts(batch) if prompts is None else prompts
    gen = torch.Generator().manual_seed(0)
    dec = PlainDecoder(m, batch, prompts.shape[1] + NEW)
    with torch.inference_mode():
        ref = m(prompts).logits[:, -1]
        got = dec.forward(prompts, 0)
    assert torch.allclose(ref, got, atol=1e-4), "the plain decoder disagrees with transformers"

    @torch.inference_mode()
    def run():
        logits = dec.forward(prompts, 0)
        tokens = []
        for i in range(NEW):
            nxt = torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=gen)
            tokens.append(nxt)
            logits = dec.forward(nxt, prompts.shape[1] + i)
        return torch.cat(tokens, 1)

    return timed(run, warmup, reps)


REAL_BATCH, REAL_SEQ, REAL_START, REAL_GEN_BATCH = 4, 256, 64, 8
REAL_PROMPT = "Once upon a time, in a small village by the sea, there lived an old fisherman who"


def real_model_seconds(path):
    """(forward + backward, scoring, generate, plain loop) seconds of the model in `path`."""
    from peft import LoraConfig, get_peft_model
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    m = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    vocab = base.config.vocab_size
    ids = torch.tensor([[(b * 7919 + t * 104729) % vocab for t in range(REAL_SEQ)]
                        for b in range(REAL_BATCH)])
    targets_ids = ids[:, REAL_START:]
    adv = torch.tensor([((i % 7) - 3.0) / 3.0
                        for i in range(REAL_BATCH * (REAL_SEQ - REAL_START))]).view(REAL_BATCH, -1)

    def logprobs():
        logits = m(input_ids=ids, logits_to_keep=REAL_SEQ - REAL_START + 1).logits[:, :-1]
        return torch.log_softmax(logits.float(), -1).gather(-1, targets_ids.unsqueeze(-1)).squeeze(-1)

    with torch.inference_mode():
        old = logprobs() - 0.01
    m.train()

    def fwd_bwd():
        ratio = torch.exp(logprobs() - old)
        loss = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv).mean()
        m.zero_grad(set_to_none=True)
        loss.backward()

    res = {"fwd_bwd": timed(fwd_bwd, 1, 5)}
    m.eval()

    @torch.inference_mode()
    def score():
        logprobs()

    res["score"] = timed(score, 1, 5)
    tok = AutoTokenizer.from_pretrained(path)
    prompts = torch.tensor([tok(REAL_PROMPT, add_special_tokens=False).input_ids] * REAL_GEN_BATCH)

    @torch.inference_mode()
    def generate():
        m.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                   max_new_tokens=NEW, min_new_tokens=NEW, top_k=0, top_p=1.0)

    res["generate64_b8"] = timed(generate, 1, 3)
    res["plain_generate64_b8"] = plain_sample_seconds(REAL_GEN_BATCH, base, prompts, 1, 3)
    return res


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    res = {
        "train_step": train_step_seconds(),
        "sample64_b1": sample_seconds(1),
        "sample64_b16": sample_seconds(16),
        "plain_sample64_b1": plain_sample_seconds(1),
        "plain_sample64_b16": plain_sample_seconds(16),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if len(sys.argv) > 2:
        res.update({f"smollm2.{k}": v for k, v in real_model_seconds(sys.argv[2]).items()})
    print(json.dumps(res))


if __name__ == "__main__":
    main()
