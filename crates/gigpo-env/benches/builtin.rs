//! Speed of the built-in environments on one core: Sokoban steps (the bare rule and the full
//! trait step with parsing and observation text), Sokoban level generation, FrozenLake steps.
//!
//! Run with `cargo bench -p gigpo-env --bench builtin`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gigpo_env::action::Direction;
use gigpo_env::frozenlake::{FrozenLake, FrozenLakeConfig, LakeMap};
use gigpo_env::sokoban::{generate_level, GeneratorParams, Sokoban, SokobanConfig};
use gigpo_env::Environment;

/// Steps per measured batch.
const STEPS: u64 = 10_000;

/// A fixed cycle of actions; episodes restart when they end.
const CYCLE: [Direction; 8] = [
    Direction::Up,
    Direction::Left,
    Direction::Down,
    Direction::Right,
    Direction::Right,
    Direction::Up,
    Direction::Left,
    Direction::Down,
];

/// A generated 6×6 level, fixed so that resets are cheap and only steps are measured.
fn sokoban_env() -> Sokoban {
    let config = SokobanConfig {
        max_steps: 100,
        ..Default::default()
    };
    let level = generate_level(&config.generator_params(), 5).unwrap();
    Sokoban::with_level(config, level).unwrap()
}

fn sokoban_steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("sokoban_step");
    group.throughput(Throughput::Elements(STEPS));
    let texts: Vec<String> = CYCLE
        .iter()
        .map(|d| format!("<think>the box is near</think><action>{d}</action>"))
        .collect();

    group.bench_function("raw_rule", |b| {
        let mut env = sokoban_env();
        env.reset_room(1).unwrap();
        b.iter(|| {
            for i in 0..STEPS as usize {
                let t = env.step_action(Some(CYCLE[i % CYCLE.len()])).unwrap();
                if t.terminated || t.truncated {
                    env.reset_room(1).unwrap();
                }
                black_box(t);
            }
        })
    });

    group.bench_function("trait_step_with_text", |b| {
        let mut env = sokoban_env();
        env.reset(1).unwrap();
        b.iter(|| {
            for i in 0..STEPS as usize {
                let s = env.step(&texts[i % texts.len()]).unwrap();
                if s.done() {
                    env.reset(1).unwrap();
                }
                black_box(s);
            }
        })
    });
    group.finish();
}

fn sokoban_generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("sokoban_generate");
    for (rows, boxes, n) in [(6, 1, 1000u64), (7, 2, 50), (8, 2, 20)] {
        group.throughput(Throughput::Elements(n));
        let params = GeneratorParams::new(rows, rows, boxes);
        group.bench_function(format!("{rows}x{rows}_{boxes}box"), |b| {
            let mut seed = 0u64;
            b.iter_batched(
                || {
                    seed += n;
                    seed
                },
                |start| {
                    for s in start..start + n {
                        black_box(generate_level(&params, s).unwrap());
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn frozenlake_steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("frozenlake_step");
    group.throughput(Throughput::Elements(STEPS));
    let texts: Vec<String> = CYCLE
        .iter()
        .map(|d| format!("<action>{d}</action>"))
        .collect();
    group.bench_function("trait_step_with_text_8x8_slippery", |b| {
        let mut env = FrozenLake::new(FrozenLakeConfig {
            map: LakeMap::Standard8x8,
            slippery: true,
            max_steps: 100,
            ..Default::default()
        })
        .unwrap();
        env.reset(1).unwrap();
        let mut seed = 1;
        b.iter(|| {
            for i in 0..STEPS as usize {
                let s = env.step(&texts[i % texts.len()]).unwrap();
                if s.done() {
                    seed += 1;
                    env.reset(seed).unwrap();
                }
                black_box(s);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, sokoban_steps, sokoban_generation, frozenlake_steps);
criterion_main!(benches);
