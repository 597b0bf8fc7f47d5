//! Criterion benchmarks of the default tiny model (d = 128, 2 layers, 4 heads, MLP 512): a
//! PPO-style training step and sampling 64 tokens.
//!
//! The side-by-side comparison with PyTorch is `bench/model/run.sh`.

use criterion::{criterion_group, criterion_main, Criterion};
use gigpo_model::{AdamW, AdamWConfig, Device, Policy, SamplingParams, ScoreMode, TinyConfig};

fn train_step(c: &mut Criterion) {
    let policy = Policy::tiny(&TinyConfig::default(), 0, &Device::Cpu).expect("tiny model");
    let mut opt = AdamW::new(
        policy.named_trainable_vars().to_vec(),
        AdamWConfig::default(),
    )
    .expect("optimizer");
    let vocab = policy.config().vocab_size as u32;
    let seqs: Vec<Vec<u32>> = (0..16)
        .map(|b| (0..128).map(|t| (b * 131 + t * 7) as u32 % vocab).collect())
        .collect();
    let start = vec![32; 16];
    c.bench_function("train_step_b16_t128", |bench| {
        bench.iter(|| {
            let s = policy.score(&seqs, &start, ScoreMode::TRAIN).unwrap();
            let loss = (s.logprobs.exp().unwrap() * 0.5)
                .unwrap()
                .sum_all()
                .unwrap()
                .neg()
                .unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        })
    });
}

fn sampling(c: &mut Criterion) {
    let policy = Policy::tiny(&TinyConfig::default(), 0, &Device::Cpu).expect("tiny model");
    let params = SamplingParams {
        max_new_tokens: 64,
        ..SamplingParams::default()
    };
    for batch in [1usize, 16] {
        let prompts: Vec<Vec<u32>> = (0..batch)
            .map(|b| (0..16).map(|t| (b + t * 3) as u32 % 200).collect())
            .collect();
        c.bench_function(&format!("sample64_b{batch}"), |bench| {
            bench.iter(|| policy.generate(&prompts, &params, 1).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = train_step, sampling
}
criterion_main!(benches);
