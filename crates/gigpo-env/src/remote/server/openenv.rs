//! The OpenEnv server: `/ws` sessions, `/health`, `/metadata` and `/schema` over HTTP.

use super::super::protocol::{EnvMetadata, ErrorCode, ServerMessage};
use super::super::runtime;
use super::schema::schema;
use super::session::Session;
use super::{metadata_of, EnvFactory, ServeOptions};
use crate::env::EnvError;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a closing connection waits for the client's half of the closing handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

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
        let metadata = metadata_of(&factory)?;
        let addr = options.addr;
        let state = Arc::new(AppState {
            factory,
            metadata,
            active: AtomicUsize::new(0),
            sessions: AtomicU64::new(0),
            options,
        });
        let app = router(state);
        let runtime = runtime::runtime();
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
        match runtime::block_on(task) {
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

/// The routes of the server.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ws", get(ws_route))
        .route(
            "/health",
            get(|| async { Json(json!({"status": "healthy"})) }),
        )
        .route("/metadata", get(metadata_route))
        .route("/schema", get(|| async { Json(schema()) }))
        .with_state(state)
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
    if let Some((slot, session)) = open_session(&mut socket, &state).await {
        serve_session(&mut socket, &state, slot, session).await;
    }
}

/// A slot and a new environment for a new connection, or `None` once the client has been told
/// why not (`CAPACITY_REACHED` or `FACTORY_ERROR`).
async fn open_session<'a>(
    socket: &mut WebSocket,
    state: &'a AppState,
) -> Option<(Slot<'a>, Session)> {
    let max = state.options.max_sessions;
    let Some(slot) = Slot::take(&state.active, max) else {
        let message = format!("Server at capacity: all {max} sessions are in use");
        let reply = ServerMessage::error(ErrorCode::CapacityReached, message);
        end_session(socket, &reply, 1013, "server at capacity").await;
        return None;
    };
    let number = state.sessions.fetch_add(1, Ordering::Relaxed) + 1;
    match (state.factory)() {
        Ok(env) => Some((slot, Session::new(format!("session{number}"), env))),
        Err(e) => {
            drop(slot);
            let reply = ServerMessage::error(ErrorCode::FactoryError, e.to_string());
            end_session(socket, &reply, 1011, "cannot create the environment").await;
            None
        }
    }
}

/// Answers the client's messages until it closes, goes idle or the connection ends.
async fn serve_session(
    socket: &mut WebSocket,
    state: &AppState,
    slot: Slot<'_>,
    mut session: Session,
) {
    let idle = state.options.idle_timeout;
    loop {
        let frame = match next_frame(socket, idle).await {
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
                end_session(socket, &reply, 1001, "idle timeout").await;
                return;
            }
        };
        let reply = match frame {
            Ok(Message::Text(text)) => answer(&mut session, text.as_str(), &state.metadata),
            Ok(Message::Binary(_)) => Some(ServerMessage::error(
                ErrorCode::InvalidJson,
                "binary messages are not supported; send JSON text",
            )),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => break,
            Err(e) => {
                let reason: String = format!("message refused: {e}").chars().take(100).collect();
                let _ = close(socket, 1009, &reason).await;
                return;
            }
        };
        let Some(reply) = reply else { break };
        if send(socket, &reply).await.is_err() {
            return;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// The reply to one text message; an environment that blocks on I/O is called off the
/// runtime's async workers.
fn answer(session: &mut Session, text: &str, metadata: &EnvMetadata) -> Option<ServerMessage> {
    if session.env.blocking_io() {
        tokio::task::block_in_place(|| session.handle_text(text, metadata))
    } else {
        session.handle_text(text, metadata)
    }
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
    if close(socket, code, reason).await.is_err() {
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

/// Sends a close frame with `code` and `reason`.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) -> Result<(), axum::Error> {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    socket.send(Message::Close(Some(frame))).await
}

/// Sends one protocol message as a text frame.
async fn send(socket: &mut WebSocket, reply: &ServerMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(reply).unwrap_or_default();
    socket.send(Message::Text(text.into())).await
}
