#![allow(dead_code)]

use gigpo_model::*;

/// A very small model for fast tests.
pub fn small() -> TinyConfig {
    TinyConfig {
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        intermediate_size: 48,
        init_std: 0.2,
        ..TinyConfig::default()
    }
}

pub fn policy(seed: u64) -> Policy {
    Policy::tiny(&small(), seed, &Device::Cpu).unwrap()
}

pub fn prompts(p: &Policy) -> Vec<Vec<u32>> {
    let tok = p.tokenizer();
    [
        "Push the box left.",
        "up",
        "You are in a room with a wall and a target. Move!",
    ]
    .iter()
    .map(|t| {
        tok.encode(
            &tok.apply_chat(&[ChatMessage::new("user", *t)], true)
                .unwrap(),
        )
        .unwrap()
    })
    .collect()
}

pub fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

pub fn to_vec(t: &Tensor) -> Vec<f32> {
    t.detach().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}
