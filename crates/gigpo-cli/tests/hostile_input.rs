//! Bad input and faults at the command line: every case ends in a clear error naming the thing
//! that is wrong, printed once, with a non-zero exit and without a crash; nothing already
//! written is replaced or lost, and nothing hangs.

mod common;

use common::{gigpo, run, stderr};
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

/// Fails (rather than passes) when the command crashed instead of reporting an error, or
/// reported it more than once.
fn assert_clean_failure(out: &Output, wanted: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "not a clean failure: {err}");
    let said = err.lines().filter(|l| l.starts_with("error")).count();
    assert_eq!(said, 1, "not said once: {err}");
    for w in wanted {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

/// The PID of a process that has ended.
fn ended_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
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

    // 7. What a killed checkpoint write left is removed when the run resumes; a run that has
    // done all its iterations says so.
    let stale = used.join(format!(
        "checkpoints/.iter-2.gigpo-tmp-{}-AbCdEf",
        ended_pid()
    ));
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("trainable.safetensors"), vec![0u8; 1 << 16]).unwrap();
    let resume = |extra: &[&str]| {
        run(gigpo()
            .args(["train", "--quiet", "--resume"])
            .arg(&used)
            .args(extra))
    };
    let out = resume(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to train"),
        "{}",
        stderr(&out)
    );
    assert!(!stale.exists());

    // 9. A checkpoint whose iteration was edited is refused, naming the file and field.
    let ck = used.join("checkpoints/iter-1");
    let state_path = ck.join("state.json");
    let state = std::fs::read_to_string(&state_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&state).unwrap();
    edited["iteration"] = 5.into();
    std::fs::write(&state_path, edited.to_string()).unwrap();
    assert_clean_failure(&resume(&[]), &["iter-1/state.json", "`iteration` is 5"]);
    std::fs::write(&state_path, &state).unwrap();

    // 9. A truncated trainable.safetensors or an empty optimizer.safetensors is named.
    let trainable = ck.join("trainable.safetensors");
    let weights = std::fs::read(&trainable).unwrap();
    std::fs::write(&trainable, &weights[..100]).unwrap();
    let out = run(gigpo().args(["eval", "--checkpoint"]).arg(&ck));
    assert_clean_failure(&out, &["iter-1/trainable.safetensors"]);
    std::fs::write(&trainable, &weights).unwrap();
    std::fs::write(ck.join("optimizer.safetensors"), b"").unwrap();
    let out = resume(&["--iterations", "2"]);
    assert_clean_failure(&out, &["iter-1/optimizer.safetensors"]);
    assert!(!used.join("checkpoints/iter-2").exists());
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

// 7. Temporaries of killed writes ----------------------------------------------------------

#[test]
fn stale_temporaries_beside_an_output_are_removed_and_live_ones_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let input = trajectories(tmp.path(), &[1.0, 0.0]);
    let output = tmp.path().join("out.jsonl");
    let mut live = Command::new("sleep").arg("60").spawn().unwrap();
    let stale = format!(".out.jsonl.gigpo-tmp-{}-AbCdEf.jsonl", ended_pid());
    let running = format!(".out.jsonl.gigpo-tmp-{}-QwErTy.jsonl", live.id());
    let foreign = ".out.jsonl.tmpXyZ123".to_string();
    for name in [&stale, &running, &foreign] {
        std::fs::write(tmp.path().join(name), vec![0u8; 1 << 16]).unwrap();
    }
    let out = advantages(&input, &output, &[]);
    let _ = live.kill();
    let _ = live.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut expected = vec![foreign, running, "in.jsonl".into(), "out.jsonl".into()];
    expected.sort();
    assert_eq!(names_in(tmp.path()), expected);
}

// 8. Serving over capacity and idle sessions ------------------------------------------------

/// `gigpo env serve` on a free port; the child and its `ws://` address.
fn serve(args: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = gigpo()
        .args(["env", "serve", "sokoban", "--port", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("listening on http://")
        .to_string();
    (child, format!("ws://{addr}"))
}

fn remote(url: &str) -> gigpo_env::remote::RemoteEnv {
    let mut spec = gigpo_env::remote::RemoteSpec::new(url.parse().unwrap());
    spec.timeout_s = 10.0;
    spec.connect_timeout_s = 10.0;
    gigpo_env::remote::RemoteEnv::connect(&spec).unwrap()
}

#[test]
fn serve_refuses_sessions_over_capacity_clearly_and_closes_idle_ones() {
    use gigpo_env::Environment;
    let (mut server, url) = serve(&["--max-sessions", "1", "--idle-timeout", "1"]);
    let mut first = remote(&url);
    first.reset(0).unwrap();
    for _ in 0..5 {
        let mut extra = remote(&url);
        let e = extra.reset(0).unwrap_err().to_string();
        assert!(e.contains("CAPACITY_REACHED"), "{e}");
    }
    // After a second without a message the first session is closed and its slot is free.
    std::thread::sleep(Duration::from_millis(1600));
    let mut second = remote(&url);
    let reset = second.reset(0);
    // The first session's episode is gone: its next step says why.
    let e = first.step("<action>up</action>").unwrap_err().to_string();
    let _ = server.kill();
    let _ = server.wait();
    reset.unwrap();
    assert!(e.contains("without a message"), "{e}");
}

// 9. Errors that name the thing ------------------------------------------------------------

#[test]
fn trajectory_files_with_bad_bytes_or_a_byte_order_mark() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(trajectories(tmp.path(), &[1.0, 0.0])).unwrap();
    let input = tmp.path().join("bad.jsonl");
    let output = tmp.path().join("out.jsonl");
    let mut bytes = good.clone().into_bytes();
    bytes.extend_from_slice(b"{\"group\": \"\xff\"}\n");
    std::fs::write(&input, bytes).unwrap();
    let out = advantages(&input, &output, &[]);
    assert_clean_failure(&out, &["bad.jsonl line 3", "UTF-8"]);

    std::fs::write(&input, format!("\u{feff}{good}")).unwrap();
    let out = advantages(&input, &output, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 2);

    std::fs::write(&input, format!("{good}{{\"group\": }}\n")).unwrap();
    let out = advantages(&input, &output, &[]);
    assert_clean_failure(&out, &["bad.jsonl line 3: column 11: expected value"]);
}

#[test]
fn diagnostics_to_standard_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = trajectories(tmp.path(), &[1.0, 0.0]);
    let output = tmp.path().join("out.jsonl");
    let out = run(gigpo()
        .current_dir(tmp.path())
        .args(["advantages", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args(["--diagnostics", "-"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let diagnostics: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(diagnostics["trajectories"], 2);
    assert!(!tmp.path().join("-").exists());
    let out = advantages(&input, Path::new("-"), &["--diagnostics", "-"]);
    assert_clean_failure(&out, &["--output", "--diagnostics", "standard output"]);
}

#[test]
fn bad_sampling_and_device_settings_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("run");
    let train = |set: &str| {
        run(gigpo()
            .args(["train", "--quiet", "--set", set, "--run-dir"])
            .arg(&run_dir))
    };
    let out = train("rollout.top_p=0");
    assert_clean_failure(&out, &["rollout.top_p", "(0, 1]"]);
    assert!(!run_dir.exists(), "a run directory was left behind");
    let out = train("model.device=\"gpu\"");
    assert_clean_failure(
        &out,
        &[
            "model.device",
            "\"gpu\": expected cpu, auto, cuda or cuda:N",
        ],
    );
    assert!(!stderr(&out).contains("variant"), "{}", stderr(&out));
    assert!(!run_dir.exists(), "a run directory was left behind");
    let out = run(gigpo().args([
        "train",
        "--print-config",
        "--set",
        "model.device=\"cuda:1\"",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cuda = 1"));
}

#[test]
fn a_level_file_far_too_large_is_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.txt");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(3_000_000)
        .unwrap();
    let out = run(gigpo()
        .args(["env", "show", "sokoban", "--level"])
        .arg(&big));
    assert_clean_failure(&out, &["big.txt", "3000000 bytes"]);
}

#[test]
fn plot_into_a_missing_directory_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = tmp.path().join("d");
    std::fs::create_dir(&run_dir).unwrap();
    std::fs::write(
        run_dir.join("metrics.jsonl"),
        "{\"iteration\":0,\"loss/pg\":1}\n",
    )
    .unwrap();
    let out = run(gigpo()
        .arg("plot")
        .arg(&run_dir)
        .args(["--out", "/missing/dir/p.png"]));
    assert_clean_failure(&out, &["/missing/dir"]);
}

/// Runs `gigpo ARGS` with writes limited to about 20 kB (`ulimit -f 40`: 512- or 1024-byte
/// blocks, by shell), so that a larger file fails as on a full disk.
#[cfg(unix)]
fn with_small_file_limit(args: &[&std::ffi::OsStr]) -> Output {
    run(Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; ulimit -f 40; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_gigpo"))
        .args(args))
}

#[cfg(unix)]
#[test]
fn a_write_that_fails_midway_is_reported_once_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("tiny.toml");
    std::fs::write(&config, TINY_RUN).unwrap();
    let run_dir = tmp.path().join("run");
    let os = |s: &str| std::ffi::OsString::from(s);
    let out = with_small_file_limit(&[
        &os("train"),
        &os("--quiet"),
        &os("--config"),
        config.as_os_str(),
        &os("--run-dir"),
        run_dir.as_os_str(),
    ]);
    assert_clean_failure(&out, &["trainable.safetensors", "File too large"]);
    assert_eq!(stderr(&out).matches("File too large").count(), 1);
    // The metrics written before stay; the checkpoint's temporary does not.
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"iteration\":1"), "{metrics}");
    assert_eq!(names_in(&run_dir.join("checkpoints")), Vec::<String>::new());

    let png = tmp.path().join("p.png");
    let out = with_small_file_limit(&[
        &os("plot"),
        run_dir.as_os_str(),
        &os("--out"),
        png.as_os_str(),
    ]);
    assert_clean_failure(&out, &["p.png", "File too large"]);
    assert!(!stderr(&out).contains("ImageError"), "{}", stderr(&out));
}
