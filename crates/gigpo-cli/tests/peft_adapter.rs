//! gigpo's LoRA adapters load in transformers + PEFT: a base model plus an adapter with random
//! (non-zero) B, scored by `gigpo model score --adapter --json` and by python/peft_score.py,
//! give the same tokens and log-probabilities to 1e-4.
//!
//! Needs a Python with torch, transformers and peft (python/requirements-torch.txt) in
//! `GIGPO_TORCH_PYTHON`; scripts/test.sh installs one. Skipped without it, except under CI.

mod common;

use common::{gigpo, python_from_env, repo_path, stderr};
use std::path::Path;
use std::process::Command;

use gigpo_model::{Device, LoraConfig, Policy, SaveMode, Tensor, TinyConfig};

const TOL: f32 = 1e-4;
const PROMPT: &str = "The box is left of you. Push it.";
const RESPONSE: &str = "<think>push left</think><action>left</action>";

fn torch_python() -> Option<String> {
    python_from_env("GIGPO_TORCH_PYTHON", "scripts/test.sh sets it")
}

/// Deterministic values in ±scale.
fn pseudo_random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Saves an adapter for `base` whose B matrices are random, so it changes the model.
fn write_adapter(base: &Path, out: &Path) {
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..LoraConfig::default()
    };
    let p = Policy::load(base, &Device::Cpu, Some(lora)).unwrap();
    for (i, (name, var)) in p.named_trainable_vars().iter().enumerate() {
        if name.contains("lora_B") {
            let data = pseudo_random(var.elem_count(), i as u64, 0.3);
            var.set(&Tensor::from_vec(data, var.dims(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    p.save(out, SaveMode::AdapterOnly).unwrap();
}

fn parse(out: std::process::Output, what: &str) -> (Vec<u32>, Vec<f32>) {
    assert!(out.status.success(), "{what} failed: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tokens = serde_json::from_value(v["tokens"].clone()).unwrap();
    let logprobs = serde_json::from_value(v["logprobs"].clone()).unwrap();
    (tokens, logprobs)
}

fn gigpo_score(base: &Path, adapter: Option<&Path>) -> (Vec<u32>, Vec<f32>) {
    let mut cmd = gigpo();
    cmd.args(["model", "score", "--chat", "--json", "--prompt", PROMPT])
        .args(["--response", RESPONSE, "--model"])
        .arg(base);
    if let Some(a) = adapter {
        cmd.arg("--adapter").arg(a);
    }
    parse(cmd.output().unwrap(), "gigpo model score")
}

fn peft_score(python: &str, base: &Path, adapter: &Path) -> (Vec<u32>, Vec<f32>) {
    let out = Command::new(python)
        .arg(repo_path("python/peft_score.py"))
        .arg("--base")
        .arg(base)
        .arg("--adapter")
        .arg(adapter)
        .args(["--chat", "--prompt", PROMPT, "--response", RESPONSE])
        .output()
        .unwrap();
    parse(out, "python/peft_score.py")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn check(python: &str, base: &Path, tmp: &Path) {
    let adapter = tmp.join("adapter");
    write_adapter(base, &adapter);
    let (tokens, ours) = gigpo_score(base, Some(&adapter));
    let (_, plain) = gigpo_score(base, None);
    assert!(
        max_diff(&ours, &plain) > 1e-3,
        "the adapter should change the scores"
    );
    let (peft_tokens, theirs) = peft_score(python, base, &adapter);
    assert_eq!(tokens, peft_tokens, "tokenization differs");
    assert_eq!(ours.len(), theirs.len());
    let d = max_diff(&ours, &theirs);
    eprintln!(
        "{}: gigpo vs peft log-probabilities differ by {d:e}",
        base.display()
    );
    assert!(d < TOL, "log-probabilities differ by {d}");
}

#[test]
fn adapter_on_tiny_qwen2_loads_in_peft() {
    let Some(python) = torch_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let cfg = TinyConfig {
        hidden_size: 64,
        num_kv_heads: 2,
        init_std: 0.1,
        ..TinyConfig::default()
    };
    Policy::tiny(&cfg, 11, &Device::Cpu)
        .unwrap()
        .save(&base, SaveMode::Full)
        .unwrap();
    check(&python, &base, tmp.path());
}

#[test]
fn adapter_on_llama_fixture_loads_in_peft() {
    let Some(python) = torch_python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let base = repo_path("crates/gigpo-model/tests/fixtures/llama");
    check(&python, &base, tmp.path());
}
