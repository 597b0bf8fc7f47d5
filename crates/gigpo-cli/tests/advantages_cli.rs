//! `gigpo advantages` end to end: files, standard streams, errors with line numbers, atomic output.

mod common;

use common::{gigpo, json_lines, repo_path, run, run_with_input, stderr};

fn example() -> String {
    repo_path("examples/trajectories.jsonl")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn example_file_gives_one_line_per_trajectory_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adv.jsonl");
    let diag = dir.path().join("diag.json");
    let status = run(gigpo()
        .args(["advantages", "--input", &example(), "--output"])
        .arg(&out)
        .arg("--diagnostics")
        .arg(&diag));
    let err = stderr(&status);
    assert!(status.status.success(), "{err}");
    assert!(err.contains("step groups: 7"), "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    let lines = json_lines(&text);
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
    let input = b"{\"group\":1,\"trajectory\":2,\"steps\":[{\"anchor\":\"a\",\"reward\":1},{\"anchor\":\"b\",\"reward\":1}]}\n\
                  {\"group\":1,\"trajectory\":3,\"steps\":[{\"anchor\":\"a\",\"reward\":0}],\"extra\":true}\n";
    let args = [
        "advantages",
        "-i",
        "-",
        "-o",
        "-",
        "--advantage_estimator",
        "grpo",
        "--gamma",
        "1.0",
    ];
    let out = run_with_input(gigpo().args(args), input);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(lines[0]["group"], 1);
    assert_eq!(lines[0]["steps"][0]["return"], 2.0);
    assert_eq!(lines[0]["steps"][0]["step_advantage"], 0.0);
    assert!(lines[0]["steps"][0]["advantage"].as_f64().unwrap() > 0.7);
}

#[test]
fn action_keys_levels_and_the_new_diagnostics() {
    let input = b"{\"group\":\"g\",\"trajectory\":\"a\",\"steps\":[{\"anchor\":\"s\",\"reward\":1,\"action\":\"up\"}]}\n\
                  {\"group\":\"g\",\"trajectory\":\"b\",\"steps\":[{\"anchor\":\"s\",\"reward\":0,\"action\":\"down\"}]}\n";
    let dir = tempfile::tempdir().unwrap();
    let diag = dir.path().join("diag.json");
    let args = ["advantages", "-i", "-", "-o", "-", "--levels", "step"];
    let out = run_with_input(gigpo().args(args).arg("--diagnostics").arg(&diag), input);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("with distinct actions: 100.0%"), "{err}");
    let lines = json_lines(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(lines[0]["steps"][0]["episode_advantage"], 0.0);
    let a = &lines[0]["steps"][0];
    assert_eq!(a["advantage"], a["step_advantage"]);
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&diag).unwrap()).unwrap();
    assert_eq!(d["distinct_action_step_group_share"], 1.0);
    assert_eq!(d["distinct_return_step_group_share"], 1.0);
    assert_eq!(d["singleton_step_group_share"], 0.0);
    assert_eq!(d["mean_abs_episode_advantage"], 0.0);
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
    let convert = || {
        run(gigpo()
            .args(["advantages", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out))
    };
    let res = convert();
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(err.contains("line 3"), "{err}");
    assert!(!out.exists());
    // An existing output file is left as it was.
    std::fs::write(&out, "previous").unwrap();
    let res = convert();
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
    let error = |extra: &[&str]| {
        let res = run(gigpo()
            .args(["advantages", "--output", "-", "--input"])
            .arg(&input)
            .args(extra));
        assert!(!res.status.success());
        stderr(&res)
    };
    let err = error(&[]);
    assert!(err.contains("line 1") && err.contains("no steps"), "{err}");
    assert!(error(&["--gamma", "2"]).contains("gamma = 2"));
    assert!(error(&["--gigpo_step_advantage_weight", "-1"]).contains("step_advantage_weight"));
    assert!(error(&[
        "--combine",
        "convex",
        "--gigpo_step_advantage_weight",
        "1.5"
    ])
    .contains("convex"));
    assert!(error(&["--anchor_similarity", "1.0"]).contains("anchor_similarity"));
    assert!(error(&["--advantage_estimator", "ppo"]).contains("ppo"));
}

#[test]
fn verl_agent_preset_is_selectable() {
    let example = example();
    let convert = |extra: &[&str]| {
        run(gigpo()
            .args(["advantages", "--input", &example, "--output", "-"])
            .args(extra))
    };
    let a = convert(&["--preset", "verl-agent"]);
    let b = convert(&[]);
    assert!(a.status.success() && b.status.success());
    assert_ne!(a.stdout, b.stdout);
}
