//! Advantage computation speed on synthetic batches.
//!
//! `cargo bench -p gigpo-core`. Batches: 128 groups × 8 trajectories × 50 steps, and 1,000,000
//! steps (2,500 × 8 × 50), with about 10% and 90% distinct anchors per episode group. Throughput
//! is reported per step; ns/step = 1e9 / (elements per second).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gigpo_core::{compute, AdvantageConfig, Batch, BatchBuilder, StepInput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

/// A batch where each step opens a new anchor with probability `distinct`, else revisits one
/// already seen in its episode group.
fn synthetic(groups: usize, trajs: usize, steps: usize, distinct: f64, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut b = BatchBuilder::new();
    for g in 0..groups {
        let mut seen: Vec<String> = Vec::new();
        for t in 0..trajs {
            let mut list = Vec::with_capacity(steps);
            for _ in 0..steps {
                if seen.is_empty() || rng.random::<f64>() < distinct {
                    seen.push(format!(
                        "# # # # # #\n# _ _ P _ #\n# _ X _ O #\ngroup {g} state {}",
                        seen.len()
                    ));
                }
                let a = seen[rng.random_range(0..seen.len())].clone();
                let r = if rng.random::<f64>() < 0.05 {
                    10.0
                } else {
                    -0.1
                };
                list.push((a, r, rng.random::<f64>() > 0.05));
            }
            let inputs = list.iter().map(|(a, r, v)| StepInput {
                anchor: a,
                reward: *r,
                action_valid: *v,
                action: None,
            });
            b.push_numbered(g, t, inputs).unwrap();
        }
    }
    b.build()
}

fn bench_compute(c: &mut Criterion) {
    let mut group = c.benchmark_group("compute");
    group.sample_size(10);
    for (label, groups) in [("128x8x50", 128), ("1M", 2500)] {
        for distinct in [0.1, 0.9] {
            let batch = synthetic(groups, 8, 50, distinct, 7);
            group.throughput(Throughput::Elements(batch.num_steps() as u64));
            let id = BenchmarkId::new(label, format!("{}%distinct", (distinct * 100.0) as u32));
            let cfg = AdvantageConfig::default();
            group.bench_with_input(id, &batch, |b, batch| {
                b.iter(|| compute(black_box(batch), &cfg).unwrap())
            });
        }
    }
    group.finish();
}

/// (group, trajectory, steps as (anchor, reward, action_valid)).
type OwnedTrajectory = (String, String, Vec<(String, f64, bool)>);

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build+compute");
    group.sample_size(10);
    let batch = synthetic(128, 8, 50, 0.1, 7);
    let texts: Vec<OwnedTrajectory> = batch
        .trajectories()
        .iter()
        .map(|t| {
            let steps = batch.steps()[t.steps.clone()]
                .iter()
                .map(|s| {
                    (
                        batch.anchors().text(s.anchor).to_owned(),
                        s.reward,
                        s.action_valid,
                    )
                })
                .collect();
            (
                batch.groups()[t.group.index()].name.to_string(),
                t.name.to_string(),
                steps,
            )
        })
        .collect();
    group.throughput(Throughput::Elements(batch.num_steps() as u64));
    group.bench_function("128x8x50/10%distinct", |b| {
        b.iter(|| {
            let mut bb = BatchBuilder::new();
            for (g, t, steps) in &texts {
                let inputs = steps.iter().map(|(a, r, v)| StepInput {
                    anchor: a,
                    reward: *r,
                    action_valid: *v,
                    action: None,
                });
                bb.push_trajectory(g, t, inputs).unwrap();
            }
            compute(&bb.build(), &AdvantageConfig::default()).unwrap()
        })
    });
    group.finish();
}

fn bench_similarity(c: &mut Criterion) {
    let mut group = c.benchmark_group("similarity");
    group.sample_size(10);
    for distinct in [0.1, 0.9] {
        let batch = synthetic(16, 8, 50, distinct, 7);
        group.throughput(Throughput::Elements(batch.num_steps() as u64));
        let cfg = AdvantageConfig {
            anchor_similarity: Some(0.95),
            ..Default::default()
        };
        let id = BenchmarkId::new("16x8x50", format!("{}%distinct", (distinct * 100.0) as u32));
        group.bench_with_input(id, &batch, |b, batch| {
            b.iter(|| compute(black_box(batch), &cfg).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_compute, bench_build, bench_similarity);
criterion_main!(benches);
