//! `gigpo advantages` end to end: files, standard streams, errors with line numbers, atomic output.

use std::io::Write;
use std::process::{Command, Stdio};

fn gigpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gigpo"))
}

fn example() -> String {
    format!(
        "{}/../../examples/trajectories.jsonl",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn example_file_gives_one_line_per_trajectory_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adv.jsonl");
    let diag = dir.path().join("diag.json");
    let status = gigpo()
        .args(["advantages", "--input", &example(), "--output"])
        .arg(&out)
        .arg("--diagnostics")
        .arg(&diag)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("step groups: 7"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["trajectory"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["t0", "t1", "t2", "soon", "later", "fail"]);
    // Keys in the documented order.
    assert!(text
        .lines()
        .next()
        .unwrap()
        .starts_with(r#"{"group":"level-7","trajectory":"t0","steps":[{"advantage":"#));
    let soon = lines[3]["steps"][1]["step_advantage"].as_f64().unwrap();
    let later = lines[4]["steps"][1]["step_advantage"].as_f64().unwrap();
    let fail = lines[5]["steps"][1]["step_advantage"].as_f64().unwrap();
    assert!(soon > later && later > fail);
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&diag).unwrap()).unwrap();
    assert_eq!(d["step_groups"], 7);
    assert_eq!(d["steps"], 16);
}

#[test]
fn standard_streams_and_flags() {
    let mut child = gigpo()
        .args([
            "advantages",
            "-i",
            "-",
            "-o",
            "-",
            "--advantage_estimator",
            "grpo",
            "--gamma",
            "1.0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"{\"group\":1,\"trajectory\":2,\"steps\":[{\"anchor\":\"a\",\"reward\":1},{\"anchor\":\"b\",\"reward\":1}]}\n\
              {\"group\":1,\"trajectory\":3,\"steps\":[{\"anchor\":\"a\",\"reward\":0}],\"extra\":true}\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["group"], 1);
    assert_eq!(lines[0]["steps"][0]["return"], 2.0);
    assert_eq!(lines[0]["steps"][0]["step_advantage"], 0.0);
    assert!(lines[0]["steps"][0]["advantage"].as_f64().unwrap() > 0.7);
}

#[test]
fn malformed_line_is_reported_with_its_number_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"group\":\"g\",\"trajectory\":\"a\",\"steps\":[{\"anchor\":\"s\",\"reward\":1}]}\n\n\
         {\"group\":\"g\",\"trajectory\":\"b\",\"steps\":[{\"anchor\":\"s\",\"reward\":\"high\"}]}\n",
    )
    .unwrap();
    let out = dir.path().join("out.jsonl");
    let res = gigpo()
        .args(["advantages", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("line 3"), "{err}");
    assert!(!out.exists());
    // An existing output file is left as it was.
    std::fs::write(&out, "previous").unwrap();
    let res = gigpo()
        .args(["advantages", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "previous");
}

#[test]
fn bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"group\":\"g\",\"trajectory\":\"a\",\"steps\":[]}\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let res = gigpo()
            .args(["advantages", "--output", "-", "--input"])
            .arg(&input)
            .args(extra)
            .output()
            .unwrap();
        assert!(!res.status.success());
        String::from_utf8_lossy(&res.stderr).into_owned()
    };
    let err = run(&[]);
    assert!(err.contains("line 1") && err.contains("no steps"), "{err}");
    assert!(run(&["--gamma", "2"]).contains("gamma = 2"));
    assert!(run(&["--gigpo_step_advantage_weight", "-1"]).contains("step_advantage_weight"));
    assert!(run(&[
        "--combine",
        "convex",
        "--gigpo_step_advantage_weight",
        "1.5"
    ])
    .contains("convex"));
    assert!(run(&["--anchor_similarity", "1.0"]).contains("anchor_similarity"));
    assert!(run(&["--advantage_estimator", "ppo"]).contains("ppo"));
}

#[test]
fn verl_agent_preset_is_selectable() {
    let a = gigpo()
        .args([
            "advantages",
            "--input",
            &example(),
            "--output",
            "-",
            "--preset",
            "verl-agent",
        ])
        .output()
        .unwrap();
    let b = gigpo()
        .args(["advantages", "--input", &example(), "--output", "-"])
        .output()
        .unwrap();
    assert!(a.status.success() && b.status.success());
    assert_ne!(a.stdout, b.stdout);
}
