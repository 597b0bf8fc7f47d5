//! Bad input and faults at the command line: every case ends in a clear error naming the thing
//! that is wrong, with a non-zero exit and without a crash; nothing already written is replaced
//! or lost, and nothing hangs.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TINY_RUN: &str = r#"
iterations = 1
[model.tiny]
hidden_size = 16
num_layers = 1
num_heads = 2
num_kv_heads = 2
intermediate_size = 32
[rollout]
groups = 2
num_generations = 2
max_steps = 2
history_length = 1
[update]
mini_batch_size = 4
[eval]
every = 0
levels = 2
[checkpoint]
every = 1
keep = 1
[sft]
levels = 0
"#;

fn gigpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gigpo"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails (rather than passes) when the command crashed instead of reporting an error.
fn assert_clean_failure(out: &Output, wanted: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "not a clean failure: {err}");
    for w in wanted {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

fn trajectories(dir: &Path, rewards: &[f64]) -> std::path::PathBuf {
    let path = dir.join("in.jsonl");
    let lines: Vec<String> = rewards
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                r#"{{"group":"g","trajectory":"t{i}","steps":[{{"anchor":"s","reward":{r:e}}}]}}"#
            )
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn advantages(input: &Path, output: &Path, extra: &[&str]) -> Output {
    run(gigpo()
        .arg("advantages")
        .arg("-i")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(extra))
}

// 1. Writing files ---------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn output_through_a_symlink_replaces_the_target_and_keeps_the_link() {
    let tmp = tempfile::tempdir().unwrap();
    let input = trajectories(tmp.path(), &[1.0, 0.0]);
    let real = tmp.path().join("real.jsonl");
    let link = tmp.path().join("l.jsonl");
    std::fs::write(&real, "old\n").unwrap();
    std::os::unix::fs::symlink("real.jsonl", &link).unwrap();
    let out = advantages(&input, &link, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&real)
        .unwrap()
        .contains("\"advantage\""));
}

#[cfg(unix)]
#[test]
fn a_fifo_or_device_is_refused_and_left_as_it_is() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let input = trajectories(tmp.path(), &[1.0, 0.0]);
    let fifo = tmp.path().join("pipe");
    if Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        let out = advantages(&input, &fifo, &[]);
        assert_clean_failure(&out, &["pipe", "FIFO"]);
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
    }
    let out = advantages(&input, Path::new("/dev/null"), &[]);
    assert_clean_failure(&out, &["/dev/null", "device"]);
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

#[cfg(unix)]
#[test]
fn a_replaced_output_keeps_its_mode_and_a_missing_directory_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let input = trajectories(tmp.path(), &[1.0, 0.0]);
    let output = tmp.path().join("out.jsonl");
    std::fs::write(&output, "old\n").unwrap();
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(advantages(&input, &output, &[]).status.success());
    let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    let nested = tmp.path().join("no/such/dir/out.jsonl");
    let out = advantages(&input, &nested, &[]);
    assert_clean_failure(&out, &["does not exist"]);
    assert!(!tmp.path().join("no").exists());
    // Nothing but the files written on purpose: no temporaries left behind.
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

// 2. Numbers that overflow -------------------------------------------------------------------

#[test]
fn huge_finite_rewards_give_finite_advantages() {
    let tmp = tempfile::tempdir().unwrap();
    let input = trajectories(tmp.path(), &[1e308, -1e308]);
    let out = advantages(&input, Path::new("-"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("null"), "{text}");
    assert!(text.contains("\"episode_advantage\":0.7071067"), "{text}");
    assert!(text.contains("\"episode_advantage\":-0.7071067"), "{text}");
}

#[test]
fn results_past_the_range_are_errors_naming_the_step_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = trajectories(tmp.path(), &[10.0, 0.0]);
    let output = tmp.path().join("out.jsonl");
    let args = ["--norm", "fixed", "--fixed_norm", "1e-320"];
    let out = advantages(&input, &output, &args);
    assert_clean_failure(&out, &["\"g\"", "\"t0\"", "step 0", "fixed_norm"]);
    assert!(!output.exists());

    let input = tmp.path().join("long.jsonl");
    let line = r#"{"group":"g","trajectory":"big","steps":[{"anchor":"a","reward":1e308},{"anchor":"b","reward":1e308}]}"#;
    let other = r#"{"group":"g","trajectory":"small","steps":[{"anchor":"a","reward":0}]}"#;
    std::fs::write(&input, format!("{line}\n{other}\n")).unwrap();
    let out = advantages(&input, &output, &[]);
    assert_clean_failure(&out, &["\"big\""]);
}

// 3. Plots that cannot be drawn as they are --------------------------------------------------

#[test]
fn plot_of_a_series_spanning_the_whole_range_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("d");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::write(
        run_dir.join("metrics.jsonl"),
        "{\"iteration\":0,\"loss/pg\":1e308}\n{\"iteration\":1,\"loss/pg\":-1e308}\n",
    )
    .unwrap();
    let mut child = gigpo()
        .arg("plot")
        .arg(&run_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("gigpo plot did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("loss/pg"), "{}", stderr(&out));
    assert!(run_dir.join("curves.png").is_file());
}

// 4. Sizes -----------------------------------------------------------------------------------

#[test]
fn absurd_sizes_are_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    for (set, field) in [
        (
            "model.tiny.max_position_embeddings=1000000000000",
            "max_position_embeddings",
        ),
        ("model.tiny.hidden_size=100000", "hidden_size"),
        ("rollout.groups=1000000", "rollout.groups"),
    ] {
        let run_dir = tmp.path().join("run");
        let out = run(gigpo()
            .args(["train", "--quiet", "--set", set, "--run-dir"])
            .arg(&run_dir));
        assert_clean_failure(&out, &[field]);
        assert!(!run_dir.exists(), "{set}: a run directory was left behind");
    }
}

/// A model directory written by the tiny model, for editing its `config.json`.
fn saved_tiny_model(dir: &Path) -> std::path::PathBuf {
    let run_dir = dir.join("run");
    let config = dir.join("tiny.toml");
    std::fs::write(&config, TINY_RUN).unwrap();
    let out = run(gigpo()
        .args(["train", "--quiet", "--config"])
        .arg(&config)
        .arg("--run-dir")
        .arg(&run_dir));
    assert!(out.status.success(), "{}", stderr(&out));
    run_dir.join("checkpoints/iter-1")
}

fn edit_config(model: &Path, field: &str, value: serde_json::Value) {
    let path = model.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg[field] = value;
    std::fs::write(&path, cfg.to_string()).unwrap();
}

fn score(model: &Path) -> Output {
    run(gigpo()
        .args(["model", "score", "--model"])
        .arg(model)
        .args(["--prompt", "a", "--response", "b"]))
}

// 4, 5 and 6 share one small trained run (training it is the slow part).
#[test]
fn broken_models_and_used_run_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let checkpoint = saved_tiny_model(tmp.path());
    let model = checkpoint.join("model");
    assert!(score(&model).status.success(), "{}", stderr(&score(&model)));

    // 4. A config.json with a huge max_position_embeddings.
    let copy = tmp.path().join("copy");
    copy_dir(&model, &copy);
    edit_config(
        &copy,
        "max_position_embeddings",
        1_000_000_000_000u64.into(),
    );
    assert_clean_failure(&score(&copy), &["config.json", "max_position_embeddings"]);

    // 5. rope_theta 0 or negative, rms_norm_eps < 0.
    for (field, value) in [
        ("rope_theta", serde_json::json!(0.0)),
        ("rope_theta", serde_json::json!(-1.0)),
        ("rms_norm_eps", serde_json::json!(-1e-6)),
    ] {
        copy_dir(&model, &copy);
        edit_config(&copy, field, value);
        assert_clean_failure(&score(&copy), &["config.json", field]);
    }

    // 5. A checkpoint with a NaN weight.
    poison_first_weight(&checkpoint.join("trainable.safetensors"));
    let out = run(gigpo().args(["eval", "--checkpoint"]).arg(&checkpoint));
    assert_clean_failure(&out, &["trainable.safetensors", "NaN"]);

    // 6. A run directory holding only metrics is refused, the metrics untouched.
    let used = tmp.path().join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("metrics.jsonl"), "{\"iteration\":0}\n").unwrap();
    let config = tmp.path().join("tiny.toml");
    let train = |extra: &[&str]| {
        run(gigpo()
            .args(["train", "--quiet", "--config"])
            .arg(&config)
            .arg("--run-dir")
            .arg(&used)
            .args(extra))
    };
    assert_clean_failure(&train(&[]), &["metrics.jsonl", "--resume", "--force"]);
    assert_eq!(
        std::fs::read_to_string(used.join("metrics.jsonl")).unwrap(),
        "{\"iteration\":0}\n"
    );
    // --force starts over, removing only the run's own files.
    std::fs::write(used.join("notes.txt"), "mine").unwrap();
    assert!(train(&["--force"]).status.success());
    assert!(used.join("notes.txt").is_file());
    assert!(used.join("checkpoints/iter-1").is_dir());

    // 6. A run stopped before its first checkpoint resumes from the start, metrics kept.
    std::fs::remove_dir_all(used.join("checkpoints")).unwrap();
    let before = std::fs::read_to_string(used.join("metrics.jsonl")).unwrap();
    let out = run(gigpo().args(["train", "--quiet", "--resume"]).arg(&used));
    assert!(out.status.success(), "{}", stderr(&out));
    let kept = used.join("metrics.before-restart-1.jsonl");
    assert_eq!(std::fs::read_to_string(kept).unwrap(), before);
    assert!(used.join("metrics.jsonl").is_file());
    assert!(used.join("checkpoints/iter-1").is_dir());
}

fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Sets the first f32 of the first tensor's data to NaN (safetensors: u64 header length, JSON
/// header, data).
fn poison_first_weight(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let start = 8 + header;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}
