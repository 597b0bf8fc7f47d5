//! Fuzzing the trajectory-file reader (and the advantages of whatever it accepts) with
//! arbitrary bytes and near-valid JSON lines. Every input must give trajectories or an error
//! naming the file, never a panic.
//!
//! `GIGPO_FUZZ_CASES` sets the cases per target (default 256); `.ci/run` runs many more.

use gigpo_core::{compute, read_trajectories, AdvantageConfig, BatchBuilder, StepInput};
use proptest::prelude::*;

#[path = "support/fuzz_config.rs"]
mod fuzz_config;

/// A line that is often a valid trajectory: fragments of one spliced with noise.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let value = proptest::sample::select(vec![
        "0",
        "-0.1",
        "1e308",
        "-1e308",
        "1e999",
        "null",
        "true",
        "\"s\"",
        "\"t\"",
        "[]",
        "{}",
        "\"\\ud800\"",
        "18446744073709551616",
        "NaN",
    ]);
    let step = (value.clone(), value.clone(), prop::bool::ANY)
        .prop_map(|(a, r, v)| format!(r#"{{"anchor":{a},"reward":{r},"action_valid":{v}}}"#));
    let valid =
        (value.clone(), value, proptest::collection::vec(step, 0..4)).prop_map(|(g, t, steps)| {
            format!(
                r#"{{"group":{g},"trajectory":{t},"steps":[{}]}}"#,
                steps.join(",")
            )
        });
    let good = (
        0u8..3,
        0u8..4,
        proptest::collection::vec((0u8..3, -2i8..3), 1..4),
    )
        .prop_map(|(g, t, steps)| {
            let steps: Vec<String> = steps
                .iter()
                .map(|(a, r)| format!(r#"{{"anchor":"s{a}","reward":{r}}}"#))
                .collect();
            format!(
                r#"{{"group":"g{g}","trajectory":{t},"steps":[{}]}}"#,
                steps.join(",")
            )
        });
    prop_oneof![
        4 => good.prop_map(String::into_bytes),
        3 => valid.prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
        1 => Just(b"\xEF\xBB\xBF".to_vec()),
        1 => Just(Vec::new()),
    ]
}

/// What `gigpo advantages` does with the lines it read.
fn advantages_of(bytes: &[u8]) {
    let Ok(read) = read_trajectories("in.jsonl", bytes) else {
        return;
    };
    let mut builder = BatchBuilder::new();
    for t in &read {
        let steps = t.steps.iter().map(|s| StepInput {
            anchor: &s.anchor,
            reward: s.reward,
            action_valid: s.action_valid,
            action: s.action.as_deref(),
        });
        if builder
            .push_trajectory(&t.group_name(), &t.trajectory_name(), steps)
            .is_err()
        {
            return;
        }
    }
    let _ = compute(&builder.build(), &AdvantageConfig::default());
}

proptest! {
    #![proptest_config(fuzz_config::config())]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = read_trajectories("in.jsonl", &bytes) {
            prop_assert!(e.to_string().starts_with("in.jsonl"), "{e}");
        }
    }

    #[test]
    fn near_valid_lines(lines in proptest::collection::vec(line(), 0..12)) {
        let bytes = lines.join(&b'\n');
        match read_trajectories("in.jsonl", &bytes) {
            Ok(read) => prop_assert!(!read.is_empty()),
            Err(e) => prop_assert!(e.to_string().starts_with("in.jsonl"), "{e}"),
        }
        advantages_of(&bytes);
    }
}
