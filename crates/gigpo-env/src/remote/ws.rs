//! OpenEnv client: one WebSocket session at `/ws` per environment instance.
//!
//! The server creates a fresh environment for each WebSocket connection and keeps it for the
//! connection's lifetime, so an instance keeps its connection from episode to episode. After a
//! fault (timeout, closed connection, unreadable reply) the connection is dropped, and the next
//! call checks `GET /health` again and opens a new one. A session the server ended while the
//! client was not waiting for a reply (an idle timeout) is noticed before the next message: a
//! reset opens a new session, any other message fails naming why the server ended it.

use super::protocol::{ClientMessage, EnvMetadata, ServerMessage};
use super::{http, RemoteSpec, WsAddress};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Numbers the connections of the process, so errors can name one.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// The client side of one OpenEnv session.
pub struct WsLink {
    address: WsAddress,
    socket: Option<Socket>,
    connection: u64,
    check_health: bool,
    connect_timeout: Duration,
    max_message_bytes: usize,
}

impl WsLink {
    /// Check the server's health; the session opens on the first call.
    pub async fn connect(address: WsAddress, spec: &RemoteSpec) -> Result<Self, String> {
        let link = WsLink {
            address,
            socket: None,
            connection: 0,
            check_health: false,
            connect_timeout: spec.connect_timeout(),
            max_message_bytes: spec.max_message_bytes,
        };
        link.health().await?;
        Ok(link)
    }

    /// `GET /health`: the server must answer 2xx, and `status` (when present) must not say
    /// `unhealthy`.
    pub async fn health(&self) -> Result<(), String> {
        let path = self.address.http_path("/health");
        let body = http::get(
            &self.address.authority,
            &path,
            self.connect_timeout,
            64 << 10,
        )
        .await
        .map_err(|e| format!("health check failed: {e}"))?;
        let status = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_owned));
        match status.as_deref() {
            Some("unhealthy") => Err(format!("health check: GET {path} says unhealthy")),
            _ => Ok(()),
        }
    }

    /// `GET /metadata`, when the server has it.
    pub async fn metadata(&self) -> Option<EnvMetadata> {
        let path = self.address.http_path("/metadata");
        let body = http::get(
            &self.address.authority,
            &path,
            self.connect_timeout,
            1 << 20,
        )
        .await
        .ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// Who this session is, for error messages.
    pub fn label(&self) -> String {
        match self.connection {
            0 => self.address.ws_url(),
            n => format!("{} (connection {n})", self.address.ws_url()),
        }
    }

    async fn open(&mut self) -> Result<&mut Socket, String> {
        if self.socket.is_none() {
            if self.check_health {
                self.health().await?;
            }
            let config = WebSocketConfig::default()
                .max_message_size(Some(self.max_message_bytes))
                .max_frame_size(Some(self.max_message_bytes));
            let url = self.address.ws_url();
            let connecting = tokio_tungstenite::connect_async_with_config(&url, Some(config), true);
            let (socket, _) = tokio::time::timeout(self.connect_timeout, connecting)
                .await
                .map_err(|_| format!("no WebSocket connection within {:?}", self.connect_timeout))?
                .map_err(|e| format!("cannot open the WebSocket session: {e}"))?;
            self.connection = CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1;
            self.socket = Some(socket);
        }
        Ok(self.socket.as_mut().expect("socket was just opened"))
    }

    /// Send `message` and wait for the server's reply (no timeout here: the caller bounds it).
    pub async fn call(&mut self, message: &ClientMessage) -> Result<ServerMessage, String> {
        let text = serde_json::to_string(message).map_err(|e| e.to_string())?;
        if text.len() > self.max_message_bytes {
            return Err(format!(
                "the {} message is {} bytes, over max_message_bytes = {}",
                message.kind(),
                text.len(),
                self.max_message_bytes
            ));
        }
        if let Some(why) = self.ended_by_server() {
            self.abandon();
            if !matches!(message, ClientMessage::Reset { .. }) {
                return Err(why);
            }
        }
        let socket = self.open().await?;
        socket
            .send(Message::text(text))
            .await
            .map_err(|e| describe(&e, "sending"))?;
        loop {
            let frame = socket
                .next()
                .await
                .ok_or_else(|| "the server closed the connection".to_string())?
                .map_err(|e| describe(&e, "waiting for the reply"))?;
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str())
                        .map_err(|e| format!("unreadable reply ({e}): {}", preview(text.as_str())))
                }
                Message::Binary(_) => return Err("the server sent a binary message".into()),
                Message::Close(frame) => {
                    return Err(match frame {
                        Some(f) => format!(
                            "the server closed the session (code {}: {})",
                            u16::from(f.code),
                            f.reason
                        ),
                        None => "the server closed the session".into(),
                    })
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    /// Whether the server has ended the open session since its last reply (it sends nothing
    /// unasked but the error and close of an ended session), and why; reads only what has
    /// already arrived.
    fn ended_by_server(&mut self) -> Option<String> {
        let socket = self.socket.as_mut()?;
        let mut why = None;
        loop {
            match socket.next().now_or_never() {
                None => return why,
                Some(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
                Some(Some(Ok(Message::Text(text)))) => {
                    let said = match serde_json::from_str::<ServerMessage>(text.as_str()) {
                        Ok(ServerMessage::Error { data }) => {
                            format!("{}: {}", data.code, data.message)
                        }
                        _ => preview(text.as_str()),
                    };
                    why = Some(format!("the server ended the session ({said})"));
                }
                Some(Some(Ok(Message::Close(frame)))) => {
                    let closed = match frame {
                        Some(f) => format!(
                            "the server closed the session (code {}: {})",
                            u16::from(f.code),
                            f.reason
                        ),
                        None => "the server closed the session".into(),
                    };
                    return Some(why.unwrap_or(closed));
                }
                Some(Some(Ok(Message::Binary(_)))) | Some(Some(Err(_))) | Some(None) => {
                    return Some(why.unwrap_or_else(|| "the server closed the connection".into()))
                }
            }
        }
    }

    /// Drop the connection after a fault; the next call checks health and reconnects.
    pub fn abandon(&mut self) {
        self.socket = None;
        self.check_health = true;
    }

    /// Tell the server the session is over and close the connection, in the background.
    pub fn close(&mut self) {
        if let Some(mut socket) = self.socket.take() {
            super::runtime::runtime().spawn(async move {
                let bye = async {
                    let close = serde_json::to_string(&ClientMessage::Close).unwrap_or_default();
                    let _ = socket.send(Message::text(close)).await;
                    let _ = socket.close(None).await;
                };
                let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
            });
        }
    }
}

fn describe(error: &WsError, doing: &str) -> String {
    match error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            format!("the connection was closed while {doing}")
        }
        WsError::Capacity(e) => format!("message too large while {doing}: {e}"),
        WsError::Io(e) => format!("connection failed while {doing}: {e}"),
        WsError::Protocol(e) => format!("WebSocket protocol error while {doing}: {e}"),
        other => format!("WebSocket error while {doing}: {other}"),
    }
}

/// The first 200 characters of a message, for error messages.
pub(crate) fn preview(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    format!("{out:?}")
}
