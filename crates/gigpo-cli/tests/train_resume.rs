//! `gigpo train` killed with SIGKILL after its iteration-2 checkpoint and resumed with
//! `--resume` ends with the same weights, bit for bit, as a run of 4 iterations straight.

mod common;

use common::{gigpo, run, stderr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
iterations = 4
[model.tiny]
hidden_size = 16
num_layers = 1
num_heads = 2
num_kv_heads = 2
intermediate_size = 32
[rollout]
groups = 2
num_generations = 3
max_steps = 4
history_length = 1
[update]
mini_batch_size = 8
[eval]
every = 2
levels = 2
[checkpoint]
every = 2
keep = 3
[sft]
levels = 0
"#;

/// CONFIG written to `dir`.
fn small_config(dir: &Path) -> PathBuf {
    let config = dir.join("small.toml");
    std::fs::write(&config, CONFIG).unwrap();
    config
}

/// `gigpo train --quiet EXTRA --config CONFIG --run-dir RUN_DIR`, which must succeed.
fn train(config: &Path, run_dir: &Path, extra: &[&str]) {
    let status = gigpo()
        .args(["train", "--quiet"])
        .args(extra)
        .arg("--config")
        .arg(config)
        .arg("--run-dir")
        .arg(run_dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn trainable(run_dir: &Path, iteration: usize) -> Vec<u8> {
    let p = run_dir.join(format!(
        "checkpoints/iter-{iteration}/trainable.safetensors"
    ));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn sigkill_and_resume_matches_a_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(tmp.path());
    let straight = tmp.path().join("straight");
    let killed = tmp.path().join("killed");

    train(&config, &straight, &[]);

    // The interrupted run is configured for many iterations so it cannot end on its own; it is
    // resumed with --iterations 4 (the iteration count only decides when the run stops).
    let mut child = gigpo()
        .args(["train", "--quiet", "--iterations", "100", "--config"])
        .arg(&config)
        .arg("--run-dir")
        .arg(&killed)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = killed.join("checkpoints/iter-2/state.json");
    let start = Instant::now();
    while !marker.is_file() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no iteration-2 checkpoint"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    // Resume from the iteration-2 checkpoint even if a slow poll let the run get further.
    for later in ["checkpoints/iter-4", "checkpoints/iter-6"] {
        let _ = std::fs::remove_dir_all(killed.join(later));
    }

    let status = gigpo()
        .args(["train", "--quiet", "--iterations", "4", "--resume"])
        .arg(&killed)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(trainable(&straight, 4), trainable(&killed, 4));
    assert_eq!(trainable(&straight, 2), trainable(&killed, 2));
    // The metrics of the interrupted iteration were replaced, not duplicated.
    let lines = std::fs::read_to_string(killed.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 5);
}

#[test]
fn resume_rejects_other_overrides_and_bad_flags_are_named() {
    let out = run(gigpo().args(["train", "--resume", "/nonexistent", "--seed", "3"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--resume"));
    let out = run(gigpo().args(["train", "--print-config", "--set", "rollout.gruops=2"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("gruops"));
}

#[test]
fn print_config_shows_the_levels() {
    let levels = |args: &[&str]| {
        let out = run(gigpo().args(["train", "--print-config"]).args(args));
        assert!(out.status.success(), "{}", stderr(&out));
        let v: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
        v["algorithm"]["levels"].as_str().unwrap().to_string()
    };
    assert_eq!(levels(&[]), "both");
    assert_eq!(levels(&["--set", "algorithm.levels=step"]), "step");
    let out = run(gigpo().args([
        "train",
        "--print-config",
        "--set",
        "algorithm.levels=episode",
        "--advantage_estimator",
        "rloo",
    ]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("levels = episode"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn seed_flags_are_accepted_verbatim() {
    let out = run(gigpo().args([
        "train",
        "--print-config",
        "--advantage_estimator",
        "grpo",
        "--use_gym_env",
        "true",
        "--gigpo_step_advantage_weight",
        "0.5",
        "--num_generations",
        "4",
        "--beta",
        "0.02",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let v: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(v["algorithm"]["estimator"].as_str(), Some("grpo"));
    assert_eq!(
        v["algorithm"]["step_advantage_weight"].as_float(),
        Some(0.5)
    );
    assert_eq!(v["rollout"]["num_generations"].as_integer(), Some(4));
    assert_eq!(v["loss"]["beta"].as_float(), Some(0.02));
}

#[test]
fn eval_reports_greedy_sampled_and_both_baselines() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(tmp.path());
    let run_dir = tmp.path().join("run");
    train(&config, &run_dir, &["--iterations", "2"]);
    let checkpoint = run_dir.join("checkpoints/iter-2");
    let out = run(gigpo()
        .args(["eval", "--json", "--checkpoint"])
        .arg(&checkpoint));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["levels"], 2);
    let random = v["baselines"]["random_success_rate"].as_f64().unwrap();
    let optimal = v["baselines"]["optimal_success_rate"].as_f64().unwrap();
    assert!((0.0..=optimal).contains(&random), "{v}");
    for mode in ["sampled", "greedy"] {
        let s = &v[mode]["success"];
        let (r, lo, hi) = (
            s["rate"].as_f64().unwrap(),
            s["low"].as_f64().unwrap(),
            s["high"].as_f64().unwrap(),
        );
        assert!(lo <= r && r <= hi, "{v}");
    }
    // More levels than the run holds out is refused: they could have been trained on.
    let out = run(gigpo()
        .args(["eval", "--episodes", "3", "--checkpoint"])
        .arg(&checkpoint));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("eval.levels"));
}
