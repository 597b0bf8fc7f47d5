//! The subprocess (stdio) transport with python/gigpo_env_adapter.py wrapping real Gymnasium
//! environments, and with processes that crash, hang and print garbage.

mod remote_support;

use gigpo_env::remote::{RemoteEnv, RemoteSpec};
use gigpo_env::Environment;
use remote_support::{
    cmd_endpoint, python, python_dir, remote_message, spec_with_timeouts, step_times_out,
};
use std::time::Duration;

fn spec(endpoint: &str) -> RemoteSpec {
    spec_with_timeouts(endpoint, 20.0, 30.0)
}

fn act(word: &str) -> String {
    format!("<think>thinking</think><action>{word}</action>")
}

const START: &str = "P F F F\nF H F H\nF F F H\nH F F G";

/// The shortest way from S to G on the test map.
const PATH: [&str; 6] = ["down", "down", "right", "right", "down", "right"];

fn play_frozenlake_to_goal(env: &mut RemoteEnv, seed: u64) {
    let first = env.reset(seed).unwrap();
    assert_eq!(first.text, START);
    assert_eq!(first.anchor, "0");
    let anchors = ["4", "8", "9", "10", "14", "15"];
    for (i, (word, anchor)) in PATH.iter().zip(anchors).enumerate() {
        let out = env.step(&act(word)).unwrap();
        assert_eq!(out.observation.anchor, anchor, "step {i}");
        assert!(out.action_valid);
        if i + 1 < PATH.len() {
            assert!(!out.done() && out.reward == 0.0 && !out.won);
        } else {
            assert!(out.terminated && !out.truncated && out.won && out.reward == 1.0);
        }
    }
}

#[test]
fn frozenlake_episodes_through_the_adapter() {
    let Some(python) = python() else { return };
    let mut env =
        RemoteEnv::connect(&spec(&cmd_endpoint(&python, "frozenlake_text.py", &[]))).unwrap();
    assert_eq!(env.name(), "frozenlake");
    assert!(env.instructions().contains("frozen lake"));
    play_frozenlake_to_goal(&mut env, 0);

    // Falling into a hole ends the episode, lost.
    env.reset(1).unwrap();
    env.step(&act("right")).unwrap();
    let hole = env.step(&act("down")).unwrap();
    assert!(hole.terminated && !hole.won && hole.reward == 0.0);
    assert_eq!(hole.observation.anchor, "5");

    // Unparseable text is an invalid action: same state, flagged, counted toward the limit.
    env.reset(2).unwrap();
    let invalid = env.step("I refuse to move").unwrap();
    assert!(!invalid.action_valid && !invalid.done());
    assert_eq!(invalid.observation.text, START);
    // The adapter's step limit (20) truncates instead of terminating.
    let mut last = invalid;
    for _ in 1..20 {
        last = env.step(&act("left")).unwrap();
    }
    assert!(last.truncated && !last.terminated && !last.won);
}

#[test]
fn many_sessions_share_one_process() {
    let Some(python) = python() else { return };
    let spec = spec(&cmd_endpoint(&python, "frozenlake_text.py", &[]));
    let envs: Vec<RemoteEnv> = (0..16)
        .map(|_| RemoteEnv::connect(&spec).unwrap())
        .collect();
    std::thread::scope(|scope| {
        for (i, mut env) in envs.into_iter().enumerate() {
            scope.spawn(move || {
                for episode in 0..3 {
                    play_frozenlake_to_goal(&mut env, (i * 3 + episode) as u64);
                }
            });
        }
    });
}

#[test]
fn the_adapter_command_line_serves_a_registered_gymnasium_env() {
    let Some(python) = python() else { return };
    let adapter = python_dir().join("gigpo_env_adapter.py");
    let endpoint = format!(
        "cmd:{python} {} --gym FrozenLake-v1 --gym-kwargs '{{\"is_slippery\": false}}' \
         --text render --actions left,down,right,up --max-steps 5 --won-reward 1",
        adapter.display()
    );
    let mut env = RemoteEnv::connect(&spec(&endpoint)).unwrap();
    assert_eq!(env.name(), "FrozenLake-v1");
    let first = env.reset(0).unwrap();
    assert!(
        first.text.contains("SFFF") && first.text.contains("HFFG"),
        "{}",
        first.text
    );
    assert!(
        !first.text.contains('\u{1b}'),
        "ANSI colours must be stripped"
    );
    assert_eq!(first.anchor, "0");
    let down = env.step(&act("down")).unwrap();
    assert_eq!(down.observation.anchor, "4");
    assert!(
        down.observation.text.contains("(Down)"),
        "{}",
        down.observation.text
    );
    assert!(!env.step(&act("jump")).unwrap().action_valid);
}

/// A spec for misbehaving_env.py. `tag` makes the command line unique to one test: processes are
/// shared by all instances of one command line, and tests run in parallel.
fn misbehaving(python: &str, tag: &str, timeout_s: f64) -> RemoteSpec {
    let endpoint = cmd_endpoint(python, "misbehaving_env.py", &["--tag", tag]);
    spec_with_timeouts(&endpoint, timeout_s, 30.0)
}

#[test]
fn a_crash_fails_every_session_of_the_process_and_the_next_reset_restarts_it() {
    let Some(python) = python() else { return };
    let spec = misbehaving(&python, "crash", 10.0);
    let mut a = RemoteEnv::connect(&spec).unwrap();
    let mut b = RemoteEnv::connect(&spec).unwrap();
    a.reset(0).unwrap();
    b.reset(1).unwrap();
    let message = remote_message(a.step("crash").unwrap_err());
    assert!(message.contains("misbehaving_env.py"), "{message}");
    assert!(message.contains("session s"), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("crashing on purpose"), "{message}");
    // The other session lived in the same process: its episode ends too, with the same cause.
    let message = remote_message(b.step("fine").unwrap_err());
    assert!(message.contains("exit status: 3"), "{message}");
    // Both carry on with a new process.
    for env in [&mut a, &mut b] {
        assert_eq!(env.reset(5).unwrap().text, "start 5");
        assert_eq!(env.step("fine").unwrap().observation.text, "step 1");
    }
}

#[test]
fn a_hung_process_times_out_and_is_replaced() {
    let Some(python) = python() else { return };
    let mut env = RemoteEnv::connect(&misbehaving(&python, "hang", 1.0)).unwrap();
    env.reset(0).unwrap();
    step_times_out(&mut env, "hang", Duration::from_secs(3));
    assert_eq!(env.reset(1).unwrap().text, "start 1");
    let out = env.step("fine").unwrap();
    assert_eq!(out.observation.text, "step 1");
}

#[test]
fn garbage_on_the_protocol_stream_is_a_fault_and_prints_are_harmless() {
    let Some(python) = python() else { return };
    let mut env = RemoteEnv::connect(&misbehaving(&python, "garbage", 10.0)).unwrap();
    env.reset(0).unwrap();
    // `print` inside the environment goes to standard error, not into the protocol.
    assert_eq!(env.step("print").unwrap().observation.text, "step 1");
    let message = remote_message(env.step("garbage").unwrap_err());
    assert!(message.contains("not a protocol message"), "{message}");
    assert!(
        message.contains("this is not a protocol message"),
        "{message}"
    );
    assert_eq!(env.reset(3).unwrap().text, "start 3");
}

#[test]
fn oversized_replies_are_rejected() {
    let Some(python) = python() else { return };
    let mut spec = misbehaving(&python, "huge", 10.0);
    spec.max_message_bytes = 1 << 20;
    let mut env = RemoteEnv::connect(&spec).unwrap();
    env.reset(0).unwrap();
    let message = remote_message(env.step("huge").unwrap_err());
    assert!(
        message.contains("longer than max_message_bytes = 1048576"),
        "{message}"
    );
    env.reset(0).unwrap();
    // Oversized requests never leave.
    let message = remote_message(env.step(&"y".repeat(2 << 20)).unwrap_err());
    assert!(message.contains("over max_message_bytes"), "{message}");
}

#[test]
fn a_process_that_dies_at_start_is_a_clear_error() {
    let Some(python) = python() else { return };
    let endpoint = cmd_endpoint(&python, "misbehaving_env.py", &["--die-at-start"]);
    let err = RemoteEnv::connect(&spec(&endpoint)).err().unwrap();
    let message = remote_message(err);
    assert!(message.contains("exit status: 2"), "{message}");
    assert!(message.contains("missing configuration"), "{message}");

    let err = RemoteEnv::connect(&spec("cmd:/nonexistent/program --x"))
        .err()
        .unwrap();
    let message = remote_message(err);
    assert!(
        message.contains("cannot start `/nonexistent/program`"),
        "{message}"
    );
}

#[test]
fn the_pool_turns_a_crashed_process_into_truncated_episodes_and_carries_on() {
    use gigpo_env::pool::{EnvIndex, EnvPool, PoolConfig};
    let Some(python) = python() else { return };
    let spec = misbehaving(&python, "pool", 10.0);
    let mut pool = EnvPool::from_fn(2, 2, PoolConfig::default(), || spec.build()).unwrap();
    let resets = pool.reset_groups(&[10, 11]).unwrap();
    assert!(resets.iter().all(|r| r.fault.is_none()));
    // Environment 0 crashes the process that all four share.
    let actions: Vec<(EnvIndex, String)> = (0..4)
        .map(|i| {
            (
                EnvIndex(i),
                if i == 0 { "crash" } else { "fine" }.to_string(),
            )
        })
        .collect();
    let results = pool.step(&actions).unwrap();
    let crashed = results.iter().find(|r| r.index == EnvIndex(0)).unwrap();
    let fault = crashed
        .fault
        .as_deref()
        .expect("the crashing session reports a fault");
    assert!(fault.contains("exit status: 3"), "{fault}");
    // The other sessions run concurrently: a step the process answered before it died succeeds,
    // one still in flight dies with the process. Every fault is reported, none is dropped.
    let mut faults = 0;
    for result in &results {
        if let Some(fault) = result.fault.as_deref() {
            assert!(fault.contains("exit status: 3"), "{fault}");
            assert!(result.outcome.truncated);
            faults += 1;
        } else {
            assert_eq!(result.outcome.observation.text, "step 1");
        }
    }
    assert_eq!(pool.fault_count(), faults);
    // The next round starts a new process and plays normally.
    let resets = pool.reset_groups(&[12, 13]).unwrap();
    assert!(resets.iter().all(|r| r.fault.is_none()), "{resets:?}");
    let actions: Vec<(EnvIndex, String)> = (0..4).map(|i| (EnvIndex(i), "fine".into())).collect();
    let results = pool.step(&actions).unwrap();
    assert!(results
        .iter()
        .all(|r| r.fault.is_none() && r.outcome.observation.text == "step 1"));
}
