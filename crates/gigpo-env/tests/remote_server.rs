//! Our OpenEnv server (the library behind `gigpo env serve`) against our own client and against
//! the stock OpenEnv client; the stdio server with in-memory streams.

mod remote_support;

use futures_util::{SinkExt, StreamExt};
use gigpo_env::remote::runtime::block_on;
use gigpo_env::remote::server::{serve_stdio, EnvFactory, ServeOptions, Server};
use gigpo_env::remote::{RemoteEnv, RemoteSpec};
use gigpo_env::Environment;
use remote_support::{python, remote_message, spec_with_timeouts, support_script, Walk};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn walk_factory() -> EnvFactory {
    Arc::new(|| Ok(Box::new(Walk::new()) as Box<dyn Environment>))
}

fn start(max_sessions: usize, max_message_bytes: usize) -> Server {
    start_with_idle(max_sessions, max_message_bytes, None)
}

fn start_with_idle(
    max_sessions: usize,
    max_message_bytes: usize,
    idle_timeout: Option<Duration>,
) -> Server {
    let options = ServeOptions {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        max_sessions,
        max_message_bytes,
        idle_timeout,
    };
    Server::start(walk_factory(), options).unwrap()
}

fn client_spec(server: &Server) -> RemoteSpec {
    spec_with_timeouts(&format!("ws://{}", server.local_addr()), 10.0, 10.0)
}

/// Play the walk to its goal through `env`, checking what comes back is what `Walk` produces.
fn play_walk(env: &mut dyn Environment, seed: u64) {
    let mut local = Walk::new();
    assert_eq!(env.reset(seed).unwrap(), local.reset(seed).unwrap());
    for action in ["<action>jump</action>", "<action>left</action>"] {
        assert_eq!(env.step(action).unwrap(), local.step(action).unwrap());
    }
    loop {
        let (remote, expected) = (
            env.step("<action>right</action>").unwrap(),
            local.step("<action>right</action>").unwrap(),
        );
        assert_eq!(remote, expected);
        if expected.done() {
            break;
        }
    }
}

#[test]
fn our_client_against_our_server() {
    let server = start(64, 1 << 20);
    let mut env = RemoteEnv::connect(&client_spec(&server)).unwrap();
    assert_eq!(env.name(), "walk");
    assert_eq!(env.instructions(), "Walk right to the goal.");
    for seed in 0..4 {
        play_walk(&mut env, seed);
    }
    // Truncation travels too: six invalid steps hit the limit.
    env.reset(9).unwrap();
    let mut last = None;
    for _ in 0..6 {
        last = Some(env.step("nothing").unwrap());
    }
    let last = last.unwrap();
    assert!(last.truncated && !last.terminated && !last.action_valid);
    let state = env.state().unwrap();
    assert_eq!(state["step_count"], 6);
    assert_eq!(state["seed"], 9);
}

#[test]
fn concurrent_sessions_on_our_server() {
    let server = start(256, 1 << 20);
    let spec = client_spec(&server);
    std::thread::scope(|scope| {
        for i in 0..64u64 {
            let spec = spec.clone();
            scope.spawn(move || {
                let mut env = RemoteEnv::connect(&spec).unwrap();
                for episode in 0..3 {
                    play_walk(&mut env, i * 7 + episode);
                }
            });
        }
    });
}

#[test]
fn sessions_over_capacity_are_refused_clearly() {
    let server = start(2, 1 << 20);
    let spec = client_spec(&server);
    let mut a = RemoteEnv::connect(&spec).unwrap();
    let mut b = RemoteEnv::connect(&spec).unwrap();
    let mut c = RemoteEnv::connect(&spec).unwrap();
    a.reset(0).unwrap();
    b.reset(0).unwrap();
    let message = remote_message(c.reset(0).unwrap_err());
    assert!(message.contains("CAPACITY_REACHED"), "{message}");
    drop(a);
    // The slot frees once the server sees the first connection close.
    let mut recovered = false;
    for _ in 0..50 {
        if c.reset(0).is_ok() {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(recovered, "a freed slot was never reused");
    b.step("<action>right</action>").unwrap();
}

/// Send raw text frames on one WebSocket and collect the replies.
async fn raw_exchange(addr: SocketAddr, frames: Vec<String>) -> Vec<Result<Value, String>> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut replies = Vec::new();
    for frame in frames {
        if let Err(e) = socket.send(Message::text(frame)).await {
            replies.push(Err(format!("send: {e}")));
            break;
        }
        let reply = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
        replies.push(match reply {
            Ok(Some(Ok(Message::Text(t)))) => Ok(serde_json::from_str(t.as_str()).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => Err(format!(
                "closed {}",
                frame.map(|f| u16::from(f.code)).unwrap_or(0)
            )),
            other => Err(format!("{other:?}")),
        });
    }
    replies
}

#[test]
fn malformed_messages_get_error_replies_and_the_session_goes_on() {
    let server = start(8, 64 << 10);
    let frames = vec![
        "{oops".to_string(),
        json!({"type": "teleport"}).to_string(),
        json!({"type": "step", "data": {"move": "right"}}).to_string(),
        json!({"type": "reset", "data": {"seed": -3}}).to_string(),
        json!({"type": "step", "data": {"action": "right"}}).to_string(),
        json!({"type": "reset", "data": {"seed": 0}}).to_string(),
        json!({"type": "step", "data": {"action": "<action>right</action>"}}).to_string(),
    ];
    let replies = block_on(raw_exchange(server.local_addr(), frames));
    let codes: Vec<&str> = replies[..5]
        .iter()
        .map(|r| r.as_ref().unwrap()["data"]["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "INVALID_JSON",
            "UNKNOWN_TYPE",
            "VALIDATION_ERROR",
            "VALIDATION_ERROR",
            "EXECUTION_ERROR"
        ]
    );
    let reset = replies[5].as_ref().unwrap();
    assert_eq!(reset["type"], "observation");
    assert_eq!(reset["data"]["observation"]["text"], "at 0 of 2");
    assert_eq!(reset["data"]["reward"], Value::Null);
    let step = replies[6].as_ref().unwrap();
    assert_eq!(step["data"]["observation"]["anchor"], "1/2");
    assert_eq!(step["data"]["done"], false);

    // Over the size limit: that connection is closed with 1009, the server keeps serving.
    let huge = json!({"type": "step", "data": {"action": "x".repeat(100 << 10)}}).to_string();
    let replies = block_on(raw_exchange(server.local_addr(), vec![huge]));
    assert_eq!(replies[0], Err("closed 1009".to_string()), "{replies:?}");
    let mut env = RemoteEnv::connect(&client_spec(&server)).unwrap();
    play_walk(&mut env, 1);
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_session(addr: SocketAddr) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    socket
}

/// Sends a reset without a seed.
async fn send_reset(socket: &mut Socket) {
    let reset = json!({"type": "reset"}).to_string();
    socket.send(Message::text(reset)).await.unwrap();
}

/// Everything the server sends until the connection ends, as `text CODE` for error frames,
/// `text TYPE` for other text, `close CODE`, or `error: ...` for a transport error (a reset).
async fn frames_until_the_end(socket: &mut Socket) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
        let item = match next {
            Err(_) => {
                seen.push("no frame within 10 s".into());
                return seen;
            }
            Ok(None) => return seen,
            Ok(Some(item)) => item,
        };
        seen.push(match item {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str() {
                    Some("error") => format!("text {}", v["data"]["code"].as_str().unwrap()),
                    other => format!("text {other:?}"),
                }
            }
            Ok(Message::Close(frame)) => {
                format!("close {}", frame.map(|f| u16::from(f.code)).unwrap_or(0))
            }
            Ok(other) => format!("{other:?}"),
            Err(e) => {
                seen.push(format!("error: {e}"));
                return seen;
            }
        });
    }
}

#[test]
fn a_client_over_capacity_reads_the_error_frame_and_a_clean_close() {
    let server = start(2, 1 << 20);
    let addr = server.local_addr();
    block_on(async {
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut socket = open_session(addr).await;
            send_reset(&mut socket).await;
            assert!(matches!(socket.next().await, Some(Ok(Message::Text(_)))));
            held.push(socket);
        }
        // Clients that write at once (as the stock client does) must still read the error.
        for attempt in 0..20 {
            let mut socket = open_session(addr).await;
            let reset = json!({"type": "reset", "data": {"seed": attempt}}).to_string();
            let _ = socket.send(Message::text(reset)).await;
            let seen = frames_until_the_end(&mut socket).await;
            assert_eq!(
                seen,
                ["text CAPACITY_REACHED", "close 1013"],
                "attempt {attempt}"
            );
        }
        // The refused connections held no slot: closing one session lets the next one in.
        let mut first = held.remove(0);
        first.close(None).await.unwrap();
        let _ = frames_until_the_end(&mut first).await;
        let mut served = false;
        for _ in 0..50 {
            let mut socket = open_session(addr).await;
            send_reset(&mut socket).await;
            if let Some(Ok(Message::Text(t))) = socket.next().await {
                if t.as_str().contains("observation") {
                    served = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(served, "the freed slot was never given out");
    });
}

#[test]
fn idle_sessions_are_closed_and_free_their_slot() {
    let server = start_with_idle(1, 1 << 20, Some(Duration::from_millis(500)));
    let addr = server.local_addr();
    block_on(async {
        let mut idle = open_session(addr).await;
        send_reset(&mut idle).await;
        assert!(matches!(idle.next().await, Some(Ok(Message::Text(_)))));
        // Pings keep the connection alive but not the session.
        idle.send(Message::Ping(vec![1].into())).await.unwrap();
        let started = std::time::Instant::now();
        let seen = frames_until_the_end(&mut idle).await;
        let seen: Vec<&str> = seen
            .iter()
            .map(String::as_str)
            .filter(|f| !f.starts_with("Pong"))
            .collect();
        assert_eq!(seen, ["text SESSION_ERROR", "close 1001"]);
        assert!(started.elapsed() < Duration::from_secs(5));
        // Its slot is free again.
        let mut next = open_session(addr).await;
        send_reset(&mut next).await;
        match next.next().await {
            Some(Ok(Message::Text(t))) => assert!(t.as_str().contains("observation"), "{t}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn our_client_reopens_a_session_the_server_closed_while_idle() {
    let server = start_with_idle(4, 1 << 20, Some(Duration::from_millis(300)));
    let mut env = RemoteEnv::connect(&client_spec(&server)).unwrap();
    play_walk(&mut env, 0);
    std::thread::sleep(Duration::from_millis(800));
    // A reset needs nothing of the old session: a new one is opened.
    play_walk(&mut env, 1);
    env.reset(2).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // A step needs the episode the server dropped: a clear error, then resets work again.
    let message = remote_message(env.step("<action>right</action>").unwrap_err());
    assert!(
        message.contains("SESSION_ERROR") && message.contains("without a message"),
        "{message}"
    );
    play_walk(&mut env, 3);
}

#[test]
fn the_stock_openenv_client_can_use_our_server() {
    let Some(python) = python() else { return };
    let server = start(16, 1 << 20);
    let out = Command::new(&python)
        .arg(support_script("stock_client_check.py"))
        .arg(format!("http://{}", server.local_addr()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("OK"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn stdio_server_answers_line_by_line() {
    let input = [
        json!({"id": "h", "type": "health"}).to_string(),
        json!({"id": "a", "type": "reset", "data": {"seed": 1}}).to_string(),
        json!({"id": "b", "type": "reset", "data": {"seed": 0}}).to_string(),
        "this is not json".to_string(),
        json!({"type": "state"}).to_string(),
        json!({"id": "a", "type": "step", "data": {"action": "<action>right</action>"}})
            .to_string(),
        json!({"id": "b", "type": "step", "data": {"action": "<action>right</action>"}})
            .to_string(),
        json!({"id": "a", "type": "close"}).to_string(),
        json!({"id": "a", "type": "step", "data": {"action": "<action>right</action>"}})
            .to_string(),
        format!(
            "{{\"id\":\"b\",\"type\":\"step\",\"data\":{{\"action\":\"{}\"}}}}",
            "z".repeat(5000)
        ),
        json!({"id": "m", "type": "metadata"}).to_string(),
    ]
    .join("\n");
    let mut output = Vec::new();
    serve_stdio(walk_factory(), input.as_bytes(), &mut output, 4096).unwrap();
    let replies: Vec<Value> = String::from_utf8(output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(Value, String)> = replies
        .iter()
        .map(|r| {
            let detail = match r["type"].as_str().unwrap() {
                "observation" => r["data"]["observation"]["anchor"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                "error" => r["data"]["code"].as_str().unwrap().to_string(),
                other => other.to_string(),
            };
            (r["id"].clone(), detail)
        })
        .collect();
    let expected: Vec<(Value, String)> = [
        (json!("h"), "health"),
        (json!("a"), "0/3"),
        (json!("b"), "0/2"),
        (Value::Null, "INVALID_JSON"),
        (Value::Null, "VALIDATION_ERROR"),
        (json!("a"), "1/3"),
        (json!("b"), "1/2"),
        // `a` was closed: its next message opens a fresh session that has no episode yet.
        (json!("a"), "EXECUTION_ERROR"),
        (Value::Null, "VALIDATION_ERROR"),
        (json!("m"), "metadata"),
    ]
    .into_iter()
    .map(|(id, d)| (id, d.to_string()))
    .collect();
    assert_eq!(summary, expected);
    assert_eq!(replies[9]["data"]["name"], "walk");
}
