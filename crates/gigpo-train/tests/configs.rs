//! Every configuration under `configs/` runs: its episodes fit the model's context as shipped,
//! and one small iteration of it trains (warm start, evaluation and checkpoint included).
//!
//! The files are found by listing the directory, so a new configuration is covered without
//! changing this test. A configuration for a pretrained model (`model.profile = "pretrained"`
//! without `model.path`) runs with a small Qwen2-layout Hugging Face directory made here.

use std::path::{Path, PathBuf};

use gigpo_model::{Device, Policy, SaveMode, TinyConfig};
use gigpo_train::config::TrainConfig;
use gigpo_train::metrics::{names, read_jsonl};
use gigpo_train::policy::{check_context, initial_policy};
use gigpo_train::profile::Profile;
use gigpo_train::Trainer;

/// The context of the small pretrained model: that of SmolLM2-135M, a small instruct model.
const PRETRAINED_CONTEXT: usize = 8192;

fn config_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// A small Qwen2-layout model saved in the Hugging Face layout (config.json, weights,
/// tokenizer with its chat template).
fn pretrained_model(dir: &Path) -> PathBuf {
    let tiny = TinyConfig {
        hidden_size: 16,
        num_layers: 1,
        num_heads: 2,
        num_kv_heads: 2,
        intermediate_size: 32,
        max_position_embeddings: PRETRAINED_CONTEXT,
        init_std: 0.1,
        ..TinyConfig::default()
    };
    let out = dir.join("pretrained");
    let policy = Policy::tiny(&tiny, 7, &Device::Cpu).unwrap();
    policy.save(&out, SaveMode::Full).unwrap();
    out
}

/// The configuration of `file` as shipped, with the pretrained model where it needs one.
fn shipped(file: &Path, model: &Path) -> TrainConfig {
    let mut cfg =
        TrainConfig::from_file(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    if cfg.profile() == Profile::Pretrained && cfg.model.path.is_none() {
        cfg.model.path = Some(model.to_path_buf());
    }
    cfg.validate()
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    cfg
}

/// One small iteration of `cfg`: one group of two episodes of at most 5 steps, answers of at
/// most 4 tokens, a warm start on two levels where the configuration has one, an evaluation on
/// one level. (The shipped episode length is covered by the context check.)
fn one_small_iteration(mut cfg: TrainConfig, run_dir: &Path) -> TrainConfig {
    let mut sets = vec![
        ("iterations", "1".to_string()),
        ("rollout.groups", "1".into()),
        ("rollout.num_generations", "2".into()),
        (
            "rollout.max_steps",
            cfg.rollout.max_steps.min(5).to_string(),
        ),
        (
            "rollout.max_new_tokens",
            cfg.max_new_tokens().min(4).to_string(),
        ),
        ("eval.every", "1".into()),
        ("eval.levels", "1".into()),
        ("eval.random_rollouts", "2".into()),
    ];
    if cfg.sft_levels() > 0 {
        sets.extend([("sft.levels", "2".into()), ("sft.epochs", "1".into())]);
    }
    for (field, value) in sets {
        cfg.set(field, &value).unwrap();
    }
    cfg.run_dir = run_dir.to_path_buf();
    cfg
}

#[test]
fn every_shipped_config_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = pretrained_model(tmp.path());
    let files = config_files();
    assert!(files.len() >= 2, "{files:?}");
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let start = std::time::Instant::now();
        let cfg = shipped(file, &model);
        // The episodes of the configuration as shipped fit its model's context.
        let resolved = cfg.resolved().unwrap();
        let policy = initial_policy(&resolved).unwrap();
        check_context(&resolved, &policy).unwrap_or_else(|e| panic!("{name}: {e}"));
        drop(policy);

        let run_dir = tmp.path().join(&name);
        let small = one_small_iteration(cfg, &run_dir);
        let summary = Trainer::new(small)
            .and_then(|mut t| t.run())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(summary.iterations, 1, "{name}");
        assert!(summary.last_eval.is_some(), "{name}");
        let recs = read_jsonl(&run_dir.join("metrics.jsonl")).unwrap();
        let last = recs.last().unwrap();
        assert_eq!(last[names::ITERATION], 1.0, "{name}");
        assert!(last[names::LOSS_TOTAL].is_finite(), "{name}: {last:?}");
        assert!(last[names::TRAIN_LENGTH] >= 1.0, "{name}: {last:?}");
        eprintln!("{name}: {:.1} s", start.elapsed().as_secs_f64());
    }
}
