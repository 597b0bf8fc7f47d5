//! Timings of the tiny model for the side-by-side comparison with PyTorch
//! (`bench/model/run.sh` runs this and `bench/model/torch_bench.py` and prints the ratios).
//!
//! Prints one JSON object: median seconds of a training step (batch 16 × 128 tokens, 96 scored
//! per row: forward, PPO clipped loss with per-token advantages, backward, AdamW) and of
//! sampling 64 tokens with a KV cache at batch 1 and 16.
//!
//! The model is the default tiny one ([`TinyConfig::default`]: Qwen2 layout, d = 128, 2 layers,
//! 4 heads, MLP 512), the sizes `bench/model/torch_bench.py` builds.
//!
//! With `GIGPO_BENCH_SMOLLM2` set to a Hugging Face directory of SmolLM2-135M-Instruct (`gigpo
//! model convert` of the GGUF file), it also times that model with a rank-8 LoRA on every
//! projection: forward + backward of the PPO loss over 4 × 256 tokens (192 scored per row),
//! no-gradient scoring of the same batch, and sampling 64 tokens at batch 8 with a KV cache.
//!
//! The settings are the `gigpo` binary's: mimalloc as the allocator, with freed memory kept in
//! the process, and candle's element-wise operations on the calling thread
//! (`bench/model/run.sh` sets `MIMALLOC_PURGE_DELAY=-1` and `CANDLE_NUM_THREADS=1`, which the
//! binary sets itself). `BENCH_ONLY` (names separated by commas) runs only those timings.

use std::time::Instant;

use gigpo_model::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 16;
const SEQ: usize = 128;
const PROMPT: usize = 32;
const NEW: usize = 64;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time<F: FnMut()>(warmup: usize, reps: usize, mut f: F) -> f64 {
    for _ in 0..warmup {
        f();
    }
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn ppo_loss(s: &Scores, old: &Tensor, adv: &Tensor) -> Result<Tensor> {
    let ratio = (&s.logprobs - old)?.exp()?;
    let clipped = ratio.clamp(0.8, 1.2)?;
    let a = (ratio * adv)?;
    let b = (clipped * adv)?;
    let per_token = a.minimum(&b)?.neg()?;
    let n = s.mask.sum_all()?;
    Ok((per_token * &s.mask)?.sum_all()?.broadcast_div(&n)?)
}

fn train_step_seconds() -> Result<f64> {
    let policy = Policy::tiny(&TinyConfig::default(), 0, &Device::Cpu)?;
    let vocab = policy.config().vocab_size as u32;
    let seqs: Vec<Vec<u32>> = (0..BATCH)
        .map(|b| {
            (0..SEQ)
                .map(|t| ((b * 131 + t * 7) as u32) % vocab)
                .collect()
        })
        .collect();
    let start = vec![PROMPT; BATCH];
    let old = policy.score(&seqs, &start, ScoreMode::OLD)?.logprobs;
    let old = (old - 0.01)?;
    let adv: Vec<f32> = (0..BATCH * (SEQ - PROMPT))
        .map(|i| ((i % 7) as f32 - 3.0) / 3.0)
        .collect();
    let adv = Tensor::from_vec(adv, (BATCH, SEQ - PROMPT), &Device::Cpu)?;
    let mut opt = AdamW::new(
        policy.named_trainable_vars().to_vec(),
        AdamWConfig {
            lr: 1e-4,
            ..AdamWConfig::default()
        },
    )?;
    time_fallible(2, 9, || {
        let s = policy.score(&seqs, &start, ScoreMode::TRAIN)?;
        let loss = ppo_loss(&s, &old, &adv)?;
        opt.step(&loss.backward()?).map(drop)
    })
}

/// A seed under which no row draws EOS early, so every run makes exactly `NEW` tokens per row.
fn full_length_seed(policy: &Policy, prompts: &[Vec<u32>], params: &SamplingParams) -> u64 {
    (0..1000u64)
        .find(|&s| {
            policy
                .generate(prompts, params, s)
                .is_ok_and(|g| g.iter().all(|g| g.tokens.len() == NEW))
        })
        .expect("a seed without early EOS")
}

fn sample_seconds(batch: usize) -> Result<f64> {
    let policy = Policy::tiny(&TinyConfig::default(), 0, &Device::Cpu)?;
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|b| (0..16).map(|t| ((b * 31 + t * 3) % 250) as u32).collect())
        .collect();
    let params = SamplingParams {
        max_new_tokens: NEW,
        ..SamplingParams::default()
    };
    let seed = full_length_seed(&policy, &prompts, &params);
    time_fallible(2, 9, || policy.generate(&prompts, &params, seed).map(drop))
}

/// The batch of the real-model timings: `REAL_BATCH` rows of `REAL_SEQ` token ids, scored
/// from `REAL_START`.
const REAL_BATCH: usize = 4;
const REAL_SEQ: usize = 256;
const REAL_START: usize = 64;
const REAL_GEN_BATCH: usize = 8;

fn real_batch(vocab: u32) -> Vec<Vec<u32>> {
    (0..REAL_BATCH)
        .map(|b| {
            (0..REAL_SEQ)
                .map(|t| ((b * 7919 + t * 104729) as u32) % vocab)
                .collect()
        })
        .collect()
}

/// Whether the timing `name` is wanted: all of them unless `BENCH_ONLY` (names separated by
/// commas, e.g. `smollm2.fwd_bwd`) says otherwise.
fn wanted(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|n| n == name))
}

/// Runs `f` into `out[name]` when wanted.
fn record(
    out: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    f: impl FnOnce() -> Result<f64>,
) -> Result<()> {
    if wanted(name) {
        out.insert(name.to_string(), f()?.into());
    }
    Ok(())
}

/// Seconds of `reps` runs of the fallible `f` (median), after `warmup` runs.
fn time_fallible(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut fail = None;
    let secs = time(warmup, reps, || {
        if let Err(e) = f() {
            fail.get_or_insert(e);
        }
    });
    fail.map_or(Ok(secs), Err)
}

/// Timings of the model in `dir` (SmolLM2) with a rank-8 LoRA: forward + backward, no-gradient
/// scoring, sampling 64 tokens at batch 8.
fn real_model_seconds(
    dir: &std::path::Path,
    out: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let policy = Policy::load(dir, &Device::Cpu, Some(LoraConfig::default()))?;
    let seqs = real_batch(policy.config().vocab_size as u32);
    let start = vec![REAL_START; REAL_BATCH];
    record(out, "smollm2.fwd_bwd", || {
        let old = (policy.score(&seqs, &start, ScoreMode::OLD)?.logprobs - 0.01)?;
        let adv: Vec<f32> = (0..REAL_BATCH * (REAL_SEQ - REAL_START))
            .map(|i| ((i % 7) as f32 - 3.0) / 3.0)
            .collect();
        let adv = Tensor::from_vec(adv, (REAL_BATCH, REAL_SEQ - REAL_START), &Device::Cpu)?;
        time_fallible(1, 5, || {
            let memory = TrainMemory::default();
            let pass = policy.train_pass(&seqs, &start, &LogitProcessing::RAW, memory)?;
            let loss = ppo_loss(pass.scores(), &old, &adv)?;
            pass.backward(&loss).map(drop)
        })
    })?;
    record(out, "smollm2.score", || {
        time_fallible(1, 5, || {
            policy.score(&seqs, &start, ScoreMode::OLD).map(drop)
        })
    })?;
    record(out, "smollm2.generate64_b8", || {
        let text =
            "Once upon a time, in a small village by the sea, there lived an old fisherman who";
        let prompts = vec![policy.tokenizer().encode(text)?; REAL_GEN_BATCH];
        let params = SamplingParams {
            max_new_tokens: NEW,
            ..SamplingParams::default()
        };
        let seed = full_length_seed(&policy, &prompts, &params);
        time_fallible(1, 3, || policy.generate(&prompts, &params, seed).map(drop))
    })
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let mut out = serde_json::Map::new();
    record(&mut out, "train_step", train_step_seconds)?;
    record(&mut out, "sample64_b1", || sample_seconds(1))?;
    record(&mut out, "sample64_b16", || sample_seconds(16))?;
    if let Some(dir) = std::env::var_os("GIGPO_BENCH_SMOLLM2").filter(|d| !d.is_empty()) {
        real_model_seconds(std::path::Path::new(&dir), &mut out)?;
    }
    out.insert("threads".into(), rayon::current_num_threads().into());
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
