//! The OpenEnv WebSocket client against the real OpenEnv server (`openenv-core` from PyPI)
//! hosting python/tests_support/counter_openenv_server.py.

mod remote_support;

use gigpo_env::remote::{RemoteEnv, RemoteSpec};
use gigpo_env::{EnvError, Environment};
use remote_support::{python, remote_message, spec_with_timeouts, step_times_out, PyServer};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One server shared by the tests of this file (starting openenv-core takes seconds).
fn shared_server() -> Option<u16> {
    static SERVER: OnceLock<PyServer> = OnceLock::new();
    let python = python()?;
    Some(
        SERVER
            .get_or_init(|| PyServer::start(&python, "counter_openenv_server.py", &[]))
            .port,
    )
}

fn spec(port: u16) -> RemoteSpec {
    spec_with_timeouts(&format!("openenv+ws://127.0.0.1:{port}"), 20.0, 20.0)
}

/// Play the counter to its goal (`3 + seed % 3` increments) and check every step.
fn play_to_goal(env: &mut RemoteEnv, seed: u64) {
    let goal = 3 + seed % 3;
    let first = env.reset(seed).unwrap();
    assert_eq!(first.text, format!("counter at 0, goal {goal}"));
    assert_eq!(first.anchor, format!("pos=0/goal={goal}"));
    for i in 1..=goal {
        let out = env.step("<think>go</think><action>inc</action>").unwrap();
        assert_eq!(out.observation.anchor, format!("pos={i}/goal={goal}"));
        assert!(out.action_valid);
        if i < goal {
            assert_eq!(out.reward, -0.1);
            assert!(!out.done() && !out.won);
        } else {
            assert_eq!(out.reward, 1.0);
            assert!(out.terminated && !out.truncated && out.won);
        }
    }
}

#[test]
fn full_episodes_against_the_openenv_server() {
    let Some(port) = shared_server() else { return };
    let mut env = RemoteEnv::connect(&spec(port)).unwrap();
    assert_eq!(env.name(), "counter");
    assert_eq!(env.instructions(), "Count up to the goal with inc/dec.");
    assert!(env.blocking_io());
    play_to_goal(&mut env, 1);
    assert!(matches!(
        env.step("<action>inc</action>"),
        Err(EnvError::NotRunning)
    ));

    // Same seed, same start; invalid actions keep the state and say so.
    let again = env.reset(1).unwrap();
    assert_eq!(again.anchor, "pos=0/goal=4");
    assert_eq!(
        again.admissible_actions,
        Some(vec!["inc".into(), "dec".into()])
    );
    let invalid = env.step("I would like to fly").unwrap();
    assert!(!invalid.action_valid && !invalid.done());
    assert_eq!(invalid.observation.anchor, "pos=0/goal=4");
    let state = env.state().unwrap();
    assert_eq!(state["step_count"], 1);
    assert_eq!(state["episode_id"], "seed-1");
    play_to_goal(&mut env, 5);
}

#[test]
fn many_concurrent_sessions() {
    let Some(port) = shared_server() else { return };
    let spec = spec(port);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..16u64)
            .map(|i| {
                let spec = spec.clone();
                scope.spawn(move || {
                    let mut env = RemoteEnv::connect(&spec).unwrap();
                    for episode in 0..3 {
                        play_to_goal(&mut env, i * 3 + episode);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a session failed");
        }
    });
}

#[test]
fn an_error_reply_ends_the_call_but_not_the_session() {
    let Some(port) = shared_server() else { return };
    let mut env = RemoteEnv::connect(&spec(port)).unwrap();
    env.reset(0).unwrap();
    let message = remote_message(env.step("boom").unwrap_err());
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("EXECUTION_ERROR"), "{message}");
    assert!(message.contains("boom requested by the test"), "{message}");
    // The episode is over for the caller; the next one works on the same endpoint.
    assert!(matches!(env.step("inc"), Err(EnvError::NotRunning)));
    play_to_goal(&mut env, 2);
}

#[test]
fn observation_field_names_are_configurable() {
    let Some(port) = shared_server() else { return };
    let mut spec = spec(port);
    spec.fields.text = "prompt".into();
    spec.fields.anchor = "state_key".into();
    spec.fields.won = "success".into();
    spec.fields.action_valid = "valid".into();
    let mut env = RemoteEnv::connect(&spec).unwrap();
    let first = env.reset(0).unwrap();
    assert_eq!(first.text, "P: counter at 0, goal 3");
    assert_eq!(first.anchor, "K: pos=0/goal=3");
    assert!(!env.step("nonsense").unwrap().action_valid);
    env.step("inc").unwrap();
    env.step("inc").unwrap();
    assert!(env.step("inc").unwrap().won);

    // A field the server does not send is a clear error naming it.
    spec.fields.text = "missing_text".into();
    let mut env = RemoteEnv::connect(&spec).unwrap();
    let message = remote_message(env.reset(0).unwrap_err());
    assert!(message.contains("`missing_text`"), "{message}");
}

#[test]
fn a_slow_reply_times_out_and_the_next_episode_reconnects() {
    let Some(port) = shared_server() else { return };
    let mut spec = spec(port);
    spec.timeout_s = 1.0;
    let mut env = RemoteEnv::connect(&spec).unwrap();
    env.reset(0).unwrap();
    step_times_out(&mut env, "sleep:3", Duration::from_millis(2500));
    play_to_goal(&mut env, 0);
}

#[test]
fn server_killed_mid_episode_truncates_and_recovers() {
    let Some(python) = python() else { return };
    let mut server = PyServer::start(&python, "counter_openenv_server.py", &[]);
    let port = server.port;
    let spec = spec_with_timeouts(&format!("openenv+ws://127.0.0.1:{port}"), 5.0, 5.0);
    let mut envs: Vec<RemoteEnv> = (0..4).map(|_| RemoteEnv::connect(&spec).unwrap()).collect();
    for (i, env) in envs.iter_mut().enumerate() {
        env.reset(i as u64).unwrap();
        env.step("inc").unwrap();
    }
    server.kill();

    // Every running episode ends with a remote error naming the endpoint; nothing panics or hangs.
    let started = Instant::now();
    for env in envs.iter_mut() {
        let message = remote_message(env.step("inc").unwrap_err());
        assert!(
            message.contains(&format!("ws://127.0.0.1:{port}/ws")),
            "{message}"
        );
        assert!(matches!(env.step("inc"), Err(EnvError::NotRunning)));
    }
    // While the server is down, a new episode fails fast at the health check.
    let message = remote_message(envs[0].reset(0).unwrap_err());
    assert!(message.contains("health check failed"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The server comes back on the same port: the same instances carry on.
    let _server = PyServer::start(&python, "counter_openenv_server.py", &[&port.to_string()]);
    for (i, env) in envs.iter_mut().enumerate() {
        play_to_goal(env, i as u64);
    }
}

#[test]
fn the_adapter_serves_gymnasium_frozenlake_over_openenv() {
    let Some(python) = python() else { return };
    let adapter = remote_support::python_dir().join("gigpo_env_adapter.py");
    let args = [
        "--gym",
        "FrozenLake-v1",
        "--gym-kwargs",
        r#"{"is_slippery": false}"#,
        "--text",
        "render",
        "--actions",
        "left,down,right,up",
        "--won-reward",
        "1",
        "--openenv",
        "--port",
        "0",
        "--port-file",
        "-",
        "--exit-on-stdin-eof",
    ];
    let server = PyServer::start_file(&python, &adapter.to_string_lossy(), &args);
    let mut env = RemoteEnv::connect(&spec(server.port)).unwrap();
    assert_eq!(env.name(), "FrozenLake-v1");
    let first = env.reset(0).unwrap();
    assert!(first.text.contains("SFFF"), "{}", first.text);
    assert_eq!(first.anchor, "0");
    let mut last = None;
    for word in ["down", "down", "right", "right", "down", "right"] {
        last = Some(env.step(&format!("<action>{word}</action>")).unwrap());
    }
    let last = last.unwrap();
    assert!(last.terminated && last.won && last.reward == 1.0);
    assert_eq!(last.observation.anchor, "15");
}
