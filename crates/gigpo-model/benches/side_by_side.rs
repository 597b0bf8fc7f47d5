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
//! The allocator is the `gigpo` binary's: mimalloc, with freed memory kept in the process
//! (`bench/model/run.sh` sets `MIMALLOC_PURGE_DELAY=-1`, which the binary sets itself).

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
    let mut err = None;
    let secs = time(2, 9, || {
        let r = (|| -> Result<()> {
            let s = policy.score(&seqs, &start, ScoreMode::TRAIN)?;
            let loss = ppo_loss(&s, &old, &adv)?;
            opt.step(&loss.backward()?)?;
            Ok(())
        })();
        if let Err(e) = r {
            err = Some(e);
        }
    });
    match err {
        Some(e) => Err(e),
        None => Ok(secs),
    }
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
    // A seed under which no row draws EOS early, so every run makes exactly 64 tokens per row.
    let seed = (0..1000u64)
        .find(|&s| {
            policy
                .generate(&prompts, &params, s)
                .is_ok_and(|g| g.iter().all(|g| g.tokens.len() == NEW))
        })
        .expect("a seed without early EOS");
    Ok(time(2, 9, || {
        policy
            .generate(&prompts, &params, seed)
            .expect("generation");
    }))
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let train = train_step_seconds()?;
    let s1 = sample_seconds(1)?;
    let s16 = sample_seconds(16)?;
    println!(
        "{}",
        serde_json::json!({"train_step": train, "sample64_b1": s1, "sample64_b16": s16, "threads": rayon::current_num_threads()})
    );
    Ok(())
}
