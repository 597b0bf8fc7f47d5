//! What the command-line tests share: running the `gigpo` program, reading what it printed, and
//! finding the files of the repository.
// Each test file uses some of these.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The `gigpo` program under test.
pub fn gigpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gigpo"))
}

/// Runs `cmd` with nothing on standard input and collects what it printed.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// Runs `cmd` with `input` on standard input and collects what it printed.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `gigpo ARGS` with nothing on standard input.
pub fn run_gigpo(args: &[&str]) -> Output {
    run(gigpo().args(args))
}

/// Bytes printed by a program, as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What a program printed on standard error.
pub fn stderr(out: &Output) -> String {
    text(&out.stderr)
}

/// A file or directory of the repository, by its path from the repository root.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// One JSON value per line of `text`.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The Python interpreter named by the environment variable `var`. Unset, the test is skipped
/// (`None`), except under CI (`CI=true`), where it fails; `setup` says what sets it.
pub fn python_from_env(var: &str, setup: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(python) => Some(python),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but {var} is not set ({setup})")
        }
        Err(_) => {
            eprintln!("skipping: {var} is not set ({setup})");
            None
        }
    }
}
