//! Serving any [`Environment`] over the remote protocol: as an OpenEnv server (`/ws`, `/health`,
//! `/schema`, `/metadata`) or over standard input/output. `gigpo env serve` is built on this.
//!
//! Every WebSocket connection (every stdio session id) gets its own environment from the
//! factory. Replies use the default field names of SPEC §5. A malformed message gets an OpenEnv
//! error reply and the session goes on; a message over the size limit closes that connection
//! (code 1009) and the server goes on. A connection over `max_sessions` gets a
//! `CAPACITY_REACHED` error frame and a close (code 1013); a session that sends nothing for
//! `idle_timeout` gets a `SESSION_ERROR` frame and a close (code 1001). Both closes are full
//! WebSocket closing handshakes, so the client reads the error before the connection ends.
//!
//! ```no_run
//! use gigpo_env::remote::server::{EnvFactory, ServeOptions, Server};
//! # fn make() -> Box<dyn gigpo_env::Environment> { unimplemented!() }
//! let factory: EnvFactory = std::sync::Arc::new(|| Ok(make()));
//! let server = Server::start(factory, ServeOptions::default()).unwrap();
//! println!("serving on {}", server.local_addr());
//! server.wait();
//! ```

use super::protocol::{
    encode_observation, ClientMessage, EnvMetadata, ErrorCode, Framed, ServerMessage,
};
use crate::env::{EnvError, Environment};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::io::{BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Makes one environment instance per session.
pub type EnvFactory = Arc<dyn Fn() -> Result<Box<dyn Environment>, EnvError> + Send + Sync>;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on. Default `127.0.0.1:8000`: loopback only.
    pub addr: SocketAddr,
    /// Most sessions at once; more are refused with `CAPACITY_REACHED`. Default 1024.
    pub max_sessions: usize,
    /// Largest message accepted, in bytes. Default 16 MiB.
    pub max_message_bytes: usize,
    /// A session that sends no message for this long is closed, freeing its slot (pings do
    /// not count). `None`: never. Default 300 s.
    pub idle_timeout: Option<Duration>,
}

/// The default of [`ServeOptions::idle_timeout`], in seconds.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 300;

/// How long a closing connection waits for the client's half of the closing handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8000)),
            max_sessions: 1024,
            max_message_bytes: super::DEFAULT_MAX_MESSAGE_BYTES,
            idle_timeout: Some(Duration::from_secs(DEFAULT_IDLE_TIMEOUT_S)),
        }
    }
}

/// One served session: an environment and its episode bookkeeping.
struct Session {
    name: String,
    env: Box<dyn Environment>,
    episode: u64,
    steps: u64,
    seed: Option<u64>,
}

impl Session {
    fn new(name: String, env: Box<dyn Environment>) -> Self {
        Session {
            name,
            env,
            episode: 0,
            steps: 0,
            seed: None,
        }
    }

    /// Answer one message; `None` for `close`.
    fn handle(&mut self, message: ClientMessage, metadata: &EnvMetadata) -> Option<ServerMessage> {
        Some(match message {
            ClientMessage::Reset { data } => self.reset(&data),
            ClientMessage::Step { data } => self.step(&data),
            ClientMessage::State => ServerMessage::State { data: self.state() },
            ClientMessage::Close => return None,
            ClientMessage::Health => ServerMessage::healthy(),
            ClientMessage::Metadata => ServerMessage::Metadata {
                data: Box::new(metadata.clone()),
            },
        })
    }

    /// Parse and answer one text message. Unreadable messages get `INVALID_JSON`, unknown types
    /// `UNKNOWN_TYPE`, malformed ones `VALIDATION_ERROR`.
    fn handle_text(&mut self, text: &str, metadata: &EnvMetadata) -> Option<ServerMessage> {
        match decode_client_message(text) {
            Ok(message) => self.handle(message, metadata),
            Err(reply) => Some(reply),
        }
    }

    fn reset(&mut self, data: &Map<String, Value>) -> ServerMessage {
        let seed = match data.get("seed") {
            None | Some(Value::Null) => self.episode,
            Some(value) => match value.as_u64() {
                Some(seed) => seed,
                None => {
                    return ServerMessage::error(
                        ErrorCode::ValidationError,
                        format!("reset: `seed` must be a non-negative integer, got {value}"),
                    )
                }
            },
        };
        match self.env.reset(seed) {
            Ok(observation) => {
                self.episode += 1;
                self.steps = 0;
                self.seed = Some(seed);
                ServerMessage::Observation {
                    data: encode_observation(&observation, None, None),
                }
            }
            Err(e) => ServerMessage::error(ErrorCode::ExecutionError, format!("reset: {e}")),
        }
    }

    fn step(&mut self, data: &Map<String, Value>) -> ServerMessage {
        let Some(Value::String(action)) = data.get("action") else {
            return ServerMessage::error(
                ErrorCode::ValidationError,
                "step: `data` needs a string field `action` holding the model's text",
            );
        };
        match self.env.step(action) {
            Ok(outcome) => {
                self.steps += 1;
                ServerMessage::Observation {
                    data: encode_observation(
                        &outcome.observation,
                        Some(outcome.reward),
                        Some(&outcome),
                    ),
                }
            }
            Err(e) => ServerMessage::error(ErrorCode::ExecutionError, format!("step: {e}")),
        }
    }

    fn state(&self) -> Map<String, Value> {
        let episode_id = match self.episode {
            0 => Value::Null,
            n => Value::from(format!("{}-{n}", self.name)),
        };
        let value = json!({
            "episode_id": episode_id,
            "step_count": self.steps,
            "seed": self.seed,
            "environment": self.env.name(),
        });
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

/// Reads one client message as the server does. The error is the OpenEnv error reply the
/// server sends: `INVALID_JSON`, `UNKNOWN_TYPE` or `VALIDATION_ERROR`.
pub fn decode_client_message(text: &str) -> Result<ClientMessage, ServerMessage> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ServerMessage::error(ErrorCode::InvalidJson, format!("Invalid JSON: {e}")))?;
    from_value(value)
}

fn from_value(value: Value) -> Result<ClientMessage, ServerMessage> {
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !matches!(
        kind.as_str(),
        "reset" | "step" | "state" | "close" | "health" | "metadata"
    ) {
        return Err(ServerMessage::error(
            ErrorCode::UnknownType,
            format!("Unknown message type: {kind}"),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ServerMessage::error(ErrorCode::ValidationError, format!("Invalid message: {e}"))
    })
}

/// What every connection of a server shares.
struct AppState {
    factory: EnvFactory,
    metadata: EnvMetadata,
    active: AtomicUsize,
    sessions: AtomicU64,
    options: ServeOptions,
}

/// A running OpenEnv server. Dropping it stops it.
pub struct Server {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Server {
    /// Bind `options.addr` (port 0 picks a free one) and serve in the background. One environment
    /// is created up front to check the factory and read the name and instructions.
    pub fn start(factory: EnvFactory, options: ServeOptions) -> Result<Server, EnvError> {
        let probe = factory()?;
        let metadata = EnvMetadata {
            name: probe.name().to_string(),
            description: probe.instructions(),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            ..EnvMetadata::default()
        };
        drop(probe);
        let addr = options.addr;
        let state = Arc::new(AppState {
            factory,
            metadata,
            active: AtomicUsize::new(0),
            sessions: AtomicU64::new(0),
            options,
        });
        let app = Router::new()
            .route("/ws", get(ws_route))
            .route(
                "/health",
                get(|| async { Json(json!({"status": "healthy"})) }),
            )
            .route("/metadata", get(metadata_route))
            .route("/schema", get(|| async { Json(schema()) }))
            .with_state(state);
        let runtime = super::runtime::runtime();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| EnvError::Io(format!("cannot listen on {addr}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| EnvError::Io(format!("listening on {addr}: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .map_err(|e| format!("server on {local_addr} failed: {e}"))
        });
        Ok(Server {
            local_addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serve until the server fails (normally: forever).
    pub fn wait(mut self) -> Result<(), EnvError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match super::runtime::block_on(task) {
            Ok(result) => result.map_err(EnvError::Io),
            Err(e) => Err(EnvError::Io(format!("server task ended: {e}"))),
        }
    }

    /// Stop accepting connections and close the open ones.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

async fn metadata_route(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    Json(state.metadata.clone())
}

async fn ws_route(
    State(state): State<Arc<AppState>>,
    upgrade: WebSocketUpgrade,
) -> impl IntoResponse {
    let max = state.options.max_message_bytes;
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| serve_socket(socket, state))
}

/// A session slot, released when the connection ends.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    /// Takes a slot when fewer than `max` are taken.
    fn take(active: &'a AtomicUsize, max: usize) -> Option<Self> {
        active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(active))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_socket(mut socket: WebSocket, state: Arc<AppState>) {
    let max = state.options.max_sessions;
    let Some(slot) = Slot::take(&state.active, max) else {
        let message = format!("Server at capacity: all {max} sessions are in use");
        let reply = ServerMessage::error(ErrorCode::CapacityReached, message);
        end_session(&mut socket, &reply, 1013, "server at capacity").await;
        return;
    };
    let number = state.sessions.fetch_add(1, Ordering::Relaxed) + 1;
    let env = match (state.factory)() {
        Ok(env) => env,
        Err(e) => {
            drop(slot);
            let reply = ServerMessage::error(ErrorCode::FactoryError, e.to_string());
            end_session(&mut socket, &reply, 1011, "cannot create the environment").await;
            return;
        }
    };
    let mut session = Session::new(format!("session{number}"), env);
    let idle = state.options.idle_timeout;
    loop {
        let frame = match next_frame(&mut socket, idle).await {
            Next::Frame(frame) => frame,
            Next::Ended => break,
            Next::Idle(limit) => {
                // The slot is free from now on, not only once the client has answered.
                drop(session);
                drop(slot);
                let message = format!(
                    "session closed after {} s without a message",
                    limit.as_secs_f64()
                );
                let reply = ServerMessage::error(ErrorCode::SessionError, message);
                end_session(&mut socket, &reply, 1001, "idle timeout").await;
                return;
            }
        };
        let reply = match frame {
            Ok(Message::Text(text)) => {
                let blocking = session.env.blocking_io();
                let metadata = &state.metadata;
                let answer = |s: &mut Session| s.handle_text(text.as_str(), metadata);
                match blocking {
                    true => tokio::task::block_in_place(|| answer(&mut session)),
                    false => answer(&mut session),
                }
            }
            Ok(Message::Binary(_)) => Some(ServerMessage::error(
                ErrorCode::InvalidJson,
                "binary messages are not supported; send JSON text",
            )),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => break,
            Err(e) => {
                let frame = CloseFrame {
                    code: 1009,
                    reason: format!("message refused: {e}")
                        .chars()
                        .take(100)
                        .collect::<String>()
                        .into(),
                };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
        };
        let Some(reply) = reply else { break };
        if send(&mut socket, &reply).await.is_err() {
            return;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// What waiting for the client's next frame gave.
enum Next {
    Frame(Result<Message, axum::Error>),
    /// The connection ended.
    Ended,
    /// Nothing but pings for this long.
    Idle(Duration),
}

/// The client's next frame, waiting at most `idle` for a message (pings and pongs do not
/// reset the wait).
async fn next_frame(socket: &mut WebSocket, idle: Option<Duration>) -> Next {
    let Some(limit) = idle else {
        return socket.recv().await.map_or(Next::Ended, Next::Frame);
    };
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => return Next::Idle(limit),
            Ok(None) => return Next::Ended,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(frame)) => return Next::Frame(frame),
        }
    }
}

/// Ends a session the server will not serve further: sends `reply` (an OpenEnv error frame),
/// then a close frame with `code`, and reads (and drops) what the client still sends until it
/// answers the close or [`CLOSE_WAIT`] passes, so that the connection ends with a closing
/// handshake rather than a reset that could discard the error before the client reads it.
async fn end_session(socket: &mut WebSocket, reply: &ServerMessage, code: u16, reason: &str) {
    if send(socket, reply).await.is_err() {
        return;
    }
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let drain = async {
        while let Some(Ok(frame)) = socket.recv().await {
            if matches!(frame, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
}

async fn send(socket: &mut WebSocket, reply: &ServerMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(reply).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}

/// The `/schema` body: JSON schemas of the action, the observation and the state.
fn schema() -> Value {
    json!({
        "action": {
            "title": "Action",
            "type": "object",
            "properties": {
                "action": {"type": "string", "description": "The model's text; the action is read from <action>…</action>"},
                "metadata": {"type": "object"}
            },
            "required": ["action"]
        },
        "observation": {
            "title": "Observation",
            "type": "object",
            "properties": {
                "text": {"type": "string", "description": "The text shown to the model"},
                "anchor": {"type": "string", "description": "Canonical state key (no history)"},
                "won": {"type": "boolean"},
                "action_valid": {"type": "boolean"},
                "admissible_actions": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
                "truncated": {"type": "boolean", "description": "The episode was cut off (step limit)"},
                "done": {"type": "boolean"},
                "reward": {"anyOf": [{"type": "number"}, {"type": "null"}]}
            },
            "required": ["text", "anchor"]
        },
        "state": {
            "title": "State",
            "type": "object",
            "properties": {
                "episode_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "step_count": {"type": "integer", "minimum": 0},
                "seed": {"anyOf": [{"type": "integer"}, {"type": "null"}]}
            }
        }
    })
}

/// Serve over standard input/output ([`super::stdio`] framing): read one message per line from
/// `input`, answer on `output`, until `input` ends. Sessions are created on their first message
/// and dropped on `close`.
pub fn serve_stdio(
    factory: EnvFactory,
    input: impl BufRead,
    mut output: impl Write,
    max_message_bytes: usize,
) -> Result<(), EnvError> {
    let probe = factory()?;
    let metadata = EnvMetadata {
        name: probe.name().to_string(),
        description: probe.instructions(),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        ..EnvMetadata::default()
    };
    drop(probe);
    let mut sessions: std::collections::HashMap<String, Session> = Default::default();
    let mut lines = LimitedLines::new(input, max_message_bytes);
    while let Some(line) = lines
        .next_line()
        .map_err(|e| EnvError::Io(format!("reading standard input: {e}")))?
    {
        let reply = match line {
            Line::TooLong(n) => Some(Framed {
                id: None,
                message: ServerMessage::error(
                    ErrorCode::ValidationError,
                    format!("message of {n} bytes is over the limit of {max_message_bytes}"),
                ),
            }),
            Line::Text(text) if text.trim().is_empty() => None,
            Line::Text(text) => stdio_answer(&text, &mut sessions, &factory, &metadata),
        };
        if let Some(reply) = reply {
            let mut text = serde_json::to_string(&reply).unwrap_or_default();
            text.push('\n');
            output
                .write_all(text.as_bytes())
                .and_then(|_| output.flush())
                .map_err(|e| EnvError::Io(format!("writing standard output: {e}")))?;
        }
    }
    Ok(())
}

fn stdio_answer(
    text: &str,
    sessions: &mut std::collections::HashMap<String, Session>,
    factory: &EnvFactory,
    metadata: &EnvMetadata,
) -> Option<Framed<ServerMessage>> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let message =
                ServerMessage::error(ErrorCode::InvalidJson, format!("Invalid JSON: {e}"));
            return Some(Framed { id: None, message });
        }
    };
    let id = match value.get("id") {
        Some(Value::String(id)) => id.clone(),
        _ => {
            let message = ServerMessage::error(
                ErrorCode::ValidationError,
                "every message needs a string `id` naming its session",
            );
            return Some(Framed { id: None, message });
        }
    };
    let message = match from_value(value) {
        Ok(m) => m,
        Err(reply) => {
            return Some(Framed {
                id: Some(id),
                message: reply,
            })
        }
    };
    let reply = match message {
        ClientMessage::Close => {
            sessions.remove(&id);
            return None;
        }
        ClientMessage::Health => ServerMessage::healthy(),
        ClientMessage::Metadata => ServerMessage::Metadata {
            data: Box::new(metadata.clone()),
        },
        other => match session_for(sessions, &id, factory) {
            Ok(session) => session.handle(other, metadata)?,
            Err(e) => ServerMessage::error(ErrorCode::FactoryError, e.to_string()),
        },
    };
    Some(Framed {
        id: Some(id),
        message: reply,
    })
}

fn session_for<'a>(
    sessions: &'a mut std::collections::HashMap<String, Session>,
    id: &str,
    factory: &EnvFactory,
) -> Result<&'a mut Session, EnvError> {
    if !sessions.contains_key(id) {
        let env = factory()?;
        sessions.insert(id.to_string(), Session::new(id.to_string(), env));
    }
    Ok(sessions.get_mut(id).expect("session was just inserted"))
}

/// One line of input, or the length of one that was too long (and was skipped).
enum Line {
    Text(String),
    TooLong(usize),
}

/// Reads lines without ever holding more than the size limit in memory.
struct LimitedLines<R> {
    input: R,
    max: usize,
}

impl<R: BufRead> LimitedLines<R> {
    fn new(input: R, max: usize) -> Self {
        LimitedLines { input, max }
    }

    fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        let mut buf = Vec::new();
        let mut total = 0usize;
        loop {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                return Ok(match (total, buf.is_empty()) {
                    (0, _) => None,
                    (n, true) if n > self.max => Some(Line::TooLong(n)),
                    _ => Some(Line::Text(String::from_utf8_lossy(&buf).into_owned())),
                });
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], Some(i + 1)),
                None => (available, None),
            };
            total += chunk.len();
            if total <= self.max {
                buf.extend_from_slice(chunk);
            } else {
                buf.clear();
            }
            let used = done.unwrap_or(chunk.len());
            self.input.consume(used);
            if done.is_some() {
                return Ok(Some(if total > self.max {
                    Line::TooLong(total)
                } else {
                    Line::Text(String::from_utf8_lossy(&buf).into_owned())
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_lines_skips_long_lines() {
        let input = b"short\nthis line is too long\nok\nlast-no-newline".as_slice();
        let mut lines = LimitedLines::new(input, 15);
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().unwrap() {
            seen.push(match line {
                Line::Text(t) => t,
                Line::TooLong(n) => format!("<{n}>"),
            });
        }
        assert_eq!(seen, vec!["short", "<21>", "ok", "last-no-newline"]);
    }

    #[test]
    fn parse_errors_are_openenv_error_replies() {
        let code = |text: &str| match decode_client_message(text) {
            Err(ServerMessage::Error { data }) => data.code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code("{not json"), ErrorCode::InvalidJson);
        assert_eq!(code(r#"{"type":"fly"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"step"}"#), ErrorCode::ValidationError);
        assert_eq!(
            decode_client_message(r#"{"type":"state"}"#).unwrap(),
            ClientMessage::State
        );
    }
}
