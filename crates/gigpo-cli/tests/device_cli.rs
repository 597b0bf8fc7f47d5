//! `--device` at the command line on this build, and the two commands bench/gpu.sh runs on a
//! GPU (`gigpo model parity`, `gigpo model bench`), here on the CPU.

mod common;

use common::{repo_path, run_gigpo, text};
use std::process::Output;

fn score(device: &str) -> Output {
    run_gigpo(&[
        "model",
        "score",
        "--prompt",
        "Push the box left.",
        "--response",
        " up",
        "--json",
        "--device",
        device,
    ])
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_cuda_support_is_a_clean_error() {
    let out = score("cuda");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error: no CUDA device: "), "{err}");
    assert!(err.contains("--features cuda"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty());
}

#[cfg(not(feature = "cuda"))]
#[test]
fn auto_falls_back_to_the_cpu_and_says_so() {
    let cpu = score("cpu");
    let auto = score("auto");
    assert!(cpu.status.success() && auto.status.success());
    let err = text(&auto.stderr);
    assert!(
        err.contains("no CUDA device") && err.contains("using the CPU"),
        "{err}"
    );
    assert!(text(&cpu.stderr).is_empty());
    assert_eq!(cpu.stdout, auto.stdout);
}

#[test]
fn an_unknown_device_names_the_option() {
    let out = score("gpu");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("device") && err.contains("expected cpu, auto, cuda or cuda:N"),
        "{err}"
    );
}

#[test]
fn parity_of_the_cpu_with_itself_is_exact() {
    let out = run_gigpo(&["model", "parity", "--model", "tiny", "--device", "cpu"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Three prompts, with and without gradient tracking, then the verdict.
    assert_eq!(stdout.lines().count(), 7, "{stdout}");
    assert!(
        stdout
            .lines()
            .take(6)
            .all(|l| l.ends_with("max |logit difference| 0.00e0")),
        "{stdout}"
    );
    assert!(stdout.contains("within 0.00e0 of the CPU"), "{stdout}");
}

#[test]
fn parity_refuses_a_negative_tolerance() {
    let out = run_gigpo(&["model", "parity", "--device", "cpu", "--tolerance=-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--tolerance"));
}

#[test]
fn bench_times_one_iteration_of_a_given_shape() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "vocab_size": 1000, "max_position_embeddings": 64}"#,
    )
    .unwrap();
    let out = run_gigpo(&[
        "model",
        "bench",
        "--config",
        config.to_str().unwrap(),
        "--batch",
        "3",
        "--prompt-tokens",
        "5",
        "--new-tokens",
        "4",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sampled = v["sampled_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&sampled), "{v}");
    assert_eq!(v["trained_tokens"].as_u64().unwrap(), 15 + sampled, "{v}");
    assert_eq!(v["sequences"], 3);
    assert!(v["trainable_parameters"].as_u64().unwrap() > 0);
    for k in [
        "rollout_tokens_per_second",
        "trained_tokens_per_second",
        "seconds_per_iteration",
    ] {
        let x = v[k].as_f64().unwrap();
        assert!(x.is_finite() && x > 0.0, "{k}: {v}");
    }
    let total = v["rollout_seconds"].as_f64().unwrap() + v["update_seconds"].as_f64().unwrap();
    assert!((v["seconds_per_iteration"].as_f64().unwrap() - total).abs() < 1e-9);
}

#[test]
fn bench_names_a_missing_config() {
    let out = run_gigpo(&["model", "bench", "--config", "/nonexistent/config.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/config.json"));
}

/// The shapes bench/gpu.sh trains are Qwen2.5-0.5B's and 1.5B's.
#[test]
fn the_gpu_bench_shapes_are_the_qwen_models() {
    for (name, hidden, layers, heads) in [
        ("qwen2.5-0.5b", 896, 24, 14),
        ("qwen2.5-1.5b", 1536, 28, 12),
    ] {
        let path = repo_path(&format!("bench/gpu/{name}.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = gigpo_model::ModelConfig::from_hf_json(&text, &path).unwrap();
        assert_eq!(cfg.architecture, gigpo_model::Architecture::Qwen2);
        assert_eq!(
            (
                cfg.hidden_size,
                cfg.num_layers,
                cfg.num_heads,
                cfg.num_kv_heads
            ),
            (hidden, layers, heads, 2),
            "{name}"
        );
        assert_eq!(cfg.vocab_size, 151_936);
        assert!(cfg.tie_word_embeddings && cfg.qkv_bias);
    }
}
