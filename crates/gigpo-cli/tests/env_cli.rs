//! `gigpo env play` and `gigpo env show` as scripts use them.

mod common;

use common::{gigpo, json_lines, run_gigpo, run_with_input, stderr};
use std::path::Path;
use std::process::Output;

const LEVEL: &str =
    "# # # # # #\n# _ _ O _ #\n# _ X _ _ #\n# _ P _ _ #\n# _ _ _ _ #\n# # # # # #\n";

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", stderr(out));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `gigpo env play sokoban --level LEVEL --actions ACTIONS EXTRA…`.
fn play_level(level: &str, actions: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "env",
        "play",
        "sokoban",
        "--level",
        level,
        "--actions",
        actions,
    ];
    args.extend_from_slice(extra);
    run_gigpo(&args)
}

fn write_level(dir: &Path, text: &str) -> String {
    let path = dir.join("level.txt");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn scripted_json_play_prints_one_object_per_step() {
    let dir = tempfile::tempdir().unwrap();
    let level = write_level(dir.path(), LEVEL);
    let out = play_level(&level, "up,l,jump,up,right", &["--json"]);
    let text = stdout(&out);
    let keys = [
        "observation",
        "reward",
        "terminated",
        "truncated",
        "won",
        "action_valid",
    ];
    for line in text.lines() {
        // The fields of docs/formats.md, in its order, and nothing else.
        let at: Vec<usize> = keys
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert!(line.starts_with("{\"observation\":"), "{line}");
    }
    let steps = json_lines(&text);
    assert_eq!(steps.len(), 5);
    assert!(steps
        .iter()
        .all(|s| s.as_object().unwrap().len() == keys.len()));
    assert_eq!(steps[0]["reward"], -0.1);
    assert_eq!(
        steps[0]["observation"],
        "# # # # # #\n# _ X O _ #\n# _ P _ _ #\n# _ _ _ _ #\n# _ _ _ _ #\n# # # # # #"
    );
    assert_eq!(steps[2]["action_valid"], false);
    assert_eq!(steps[2]["observation"], steps[1]["observation"]);
    let last = &steps[4];
    assert_eq!(last["reward"], 10.9);
    assert_eq!(last["terminated"], true);
    assert_eq!(last["won"], true);
    assert_eq!(last["truncated"], false);
}

#[test]
fn play_stops_when_the_episode_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("env.toml");
    std::fs::write(&config, "[env]\nkind = \"sokoban\"\nmax_steps = 2\n").unwrap();
    let out = run_gigpo(&[
        "env",
        "play",
        "sokoban",
        "--seed",
        "5",
        "--config",
        config.to_str().unwrap(),
        "--actions",
        "up,up,up,up",
        "--json",
    ]);
    let steps = json_lines(&stdout(&out));
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1]["truncated"], true);
    assert!(stderr(&out).contains("2 actions not played"));
}

#[test]
fn same_seed_same_episode() {
    let args = [
        "env",
        "play",
        "sokoban",
        "--seed",
        "11",
        "--actions",
        "u,d,l,r",
        "--json",
    ];
    assert_eq!(stdout(&run_gigpo(&args)), stdout(&run_gigpo(&args)));
}

#[test]
fn raw_actions_go_through_the_parser() {
    let out = run_gigpo(&[
        "env",
        "play",
        "frozenlake",
        "--seed",
        "0",
        "--actions",
        "<think>go</think><action>down</action>",
        "down",
        "--raw",
        "--json",
    ]);
    let steps = json_lines(&stdout(&out));
    assert_eq!(steps[0]["action_valid"], true);
    // A bare word is not an action in the default tagged format.
    assert_eq!(steps[1]["action_valid"], false);
    assert_eq!(steps[1]["reward"], 0.0);
}

#[test]
fn show_prints_level_and_optimal_length() {
    let dir = tempfile::tempdir().unwrap();
    let level = write_level(dir.path(), LEVEL);
    let text = stdout(&run_gigpo(&["env", "show", "sokoban", "--level", &level]));
    assert!(text.starts_with(LEVEL.trim_end()), "{text}");
    assert!(text.contains("optimal solution: 4 steps"), "{text}");
    assert!(text.contains("solution: up,left,up,right"), "{text}");

    let text = stdout(&run_gigpo(&["env", "show", "sokoban", "--seed", "7"]));
    assert!(text.contains("optimal solution: 5 steps"), "{text}");

    let lake = dir.path().join("lake.txt");
    std::fs::write(&lake, "SFFF\nFHFH\nFFFH\nHFFG\n").unwrap();
    let text = stdout(&run_gigpo(&[
        "env",
        "show",
        "frozenlake",
        "--level",
        lake.to_str().unwrap(),
    ]));
    assert!(text.starts_with("P F F F\nF H F H"), "{text}");
    assert!(text.contains("shortest path: 6 steps"), "{text}");
}

fn error_of(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure");
    stderr(out)
}

#[test]
fn level_errors_name_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("# # # #\n# P ? #\n# X O #\n# # # #\n", "line 2, column 5"),
        ("# # # #\n# _ _ #\n# X O #\n# # # #\n", "no player"),
        (
            "# # # #\n# P X #\n# X O #\n# # # #\n",
            "2 boxes but 1 targets",
        ),
        ("# # # #\n# P √ #\n# # # #\n", "already on a target"),
    ];
    for (text, want) in cases {
        let level = write_level(dir.path(), text);
        let err = error_of(&play_level(&level, "up", &[]));
        assert!(err.contains("level.txt") && err.contains(want), "{err}");
    }
    let err = error_of(&run_gigpo(&[
        "env",
        "show",
        "sokoban",
        "--level",
        "/nonexistent/x.txt",
    ]));
    assert!(err.contains("/nonexistent/x.txt"), "{err}");
}

#[test]
fn config_kind_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("env.toml");
    let show = || {
        let config = config.to_str().unwrap();
        error_of(&run_gigpo(&["env", "show", "sokoban", "--config", config]))
    };
    std::fs::write(&config, "[env]\nkind = \"frozenlake\"\n").unwrap();
    let err = show();
    assert!(
        err.contains("configures `frozenlake`, not `sokoban`"),
        "{err}"
    );
    std::fs::write(&config, "[env]\nkind = \"sokoban\"\nnum_box = 2\n").unwrap();
    let err = show();
    assert!(err.contains("env.toml") && err.contains("num_box"), "{err}");
}

#[test]
fn usage_errors() {
    let err = error_of(&run_gigpo(&["env", "play", "chess", "--actions", "up"]));
    assert!(err.contains("chess") && err.contains("sokoban"), "{err}");
    let err = error_of(&run_gigpo(&["env", "play", "sokoban", "--json"]));
    assert!(err.contains("--actions"), "{err}");
    let err = error_of(&run_gigpo(&[
        "env",
        "play",
        "sokoban",
        "--seed",
        "1",
        "--level",
        "x",
        "--actions",
        "up",
    ]));
    assert!(err.contains("--level") || err.contains("--seed"), "{err}");
}

#[test]
fn line_input_plays_from_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let level = write_level(dir.path(), LEVEL);
    let out = run_with_input(
        gigpo().args(["env", "play", "sokoban", "--level", &level]),
        b"u\nbogus\nleft\nup\nr\n",
    );
    let text = stdout(&out);
    assert!(text.contains("unknown move `bogus`"), "{text}");
    assert!(
        text.contains("step 4: right  reward 10.9  return 10.6"),
        "{text}"
    );
    assert!(text.contains("won after 4 steps"), "{text}");
}
