//! The client side: [`RemoteEnv`], one environment instance served by another process, over
//! either transport.

use super::endpoint::Endpoint;
use super::protocol::{self, ClientMessage, EnvMetadata, ServerMessage};
use super::spec::RemoteSpec;
use super::{runtime, stdio, ws};
use crate::env::{EnvError, Environment, Observation, StepOutcome};
use serde_json::{Map, Value};

/// The transport under a [`RemoteEnv`].
enum Link {
    Ws(Box<ws::WsLink>),
    Stdio(stdio::StdioLink),
}

impl Link {
    async fn call(&mut self, message: &ClientMessage) -> Result<ServerMessage, String> {
        match self {
            Link::Ws(l) => l.call(message).await,
            Link::Stdio(l) => l.call(message).await,
        }
    }

    /// Give up the connection / session after a fault so the next call starts afresh.
    fn abandon(&mut self, reason: &str) {
        match self {
            Link::Ws(l) => l.abandon(),
            Link::Stdio(l) => l.abandon(reason),
        }
    }

    /// The server ended the session (an error reply with such a code).
    fn session_ended(&mut self) {
        match self {
            Link::Ws(l) => l.abandon(),
            Link::Stdio(l) => l.forget_session(),
        }
    }

    fn label(&self) -> String {
        match self {
            Link::Ws(l) => l.label(),
            Link::Stdio(l) => l.label(),
        }
    }

    fn close(&mut self) {
        match self {
            Link::Ws(l) => l.close(),
            Link::Stdio(l) => l.close(),
        }
    }
}

/// One environment instance served by another process (see the [module docs](super)).
pub struct RemoteEnv {
    spec: RemoteSpec,
    link: Link,
    name: String,
    instructions: String,
    running: bool,
}

impl RemoteEnv {
    /// Check the endpoint's health (starting the process for `cmd:`), read its metadata, and
    /// return an instance ready for `reset`. The WebSocket session itself opens on the first
    /// `reset`.
    pub fn connect(spec: &RemoteSpec) -> Result<Self, EnvError> {
        spec.validate()?;
        let endpoint = spec.endpoint.to_string();
        let (link, metadata) = runtime::block_on(async {
            match &spec.endpoint {
                Endpoint::OpenEnv(address) => {
                    let link = ws::WsLink::connect(address.clone(), spec).await?;
                    let metadata = link.metadata().await;
                    Ok::<_, String>((Link::Ws(Box::new(link)), metadata))
                }
                Endpoint::Command(command) => {
                    let mut link = stdio::StdioLink::connect(command, spec).await?;
                    let metadata = link.metadata().await;
                    Ok((Link::Stdio(link), metadata))
                }
            }
        })
        .map_err(|e| EnvError::Remote(format!("{endpoint}: {e}")))?;
        let metadata = metadata.unwrap_or_default();
        Ok(RemoteEnv {
            name: pick(&spec.name, &metadata.name, "remote"),
            instructions: instructions_from(spec, &metadata),
            spec: spec.clone(),
            link,
            running: false,
        })
    }

    /// The environment's internal state (OpenEnv `state` message), for inspection.
    pub fn state(&mut self) -> Result<Map<String, Value>, EnvError> {
        match self.exchange(ClientMessage::State)? {
            ServerMessage::State { data } => Ok(data),
            other => Err(self.unexpected(&other, "state")),
        }
    }

    /// Send one message and wait for its reply, within the per-call timeout. Transport faults
    /// abandon the connection; error replies become errors.
    fn exchange(&mut self, message: ClientMessage) -> Result<ServerMessage, EnvError> {
        let timeout = self.spec.timeout();
        let label = self.link.label();
        let kind = message.kind();
        let link = &mut self.link;
        let result =
            runtime::block_on(async { tokio::time::timeout(timeout, link.call(&message)).await });
        let error = match result {
            Ok(Ok(ServerMessage::Error { data })) => {
                if data.code.ends_session() {
                    self.link.session_ended();
                }
                format!("{kind} answered with error {}: {}", data.code, data.message)
            }
            Ok(Ok(reply)) => return Ok(reply),
            Ok(Err(e)) => {
                let e = format!("{kind} failed: {e}");
                self.link.abandon(&format!("{label}: {e}"));
                e
            }
            Err(_) => {
                let e = format!("no reply to {kind} within {timeout:?} (timeout_s)");
                self.link.abandon(&format!("{label}: {e}"));
                e
            }
        };
        Err(EnvError::Remote(format!("{label}: {error}")))
    }

    fn unexpected(&mut self, reply: &ServerMessage, to: &str) -> EnvError {
        let label = self.link.label();
        let e = format!(
            "answered `{}` to {to}; expected `observation`",
            reply.kind()
        );
        self.link.abandon(&format!("{label}: {e}"));
        EnvError::Remote(format!("{label}: {e}"))
    }

    fn decode(&mut self, reply: ServerMessage, to: &str) -> Result<protocol::Decoded, EnvError> {
        let ServerMessage::Observation { data } = &reply else {
            return Err(self.unexpected(&reply, to));
        };
        self.spec
            .fields
            .decode(data)
            .map_err(|e| EnvError::Remote(format!("{}: bad {to} reply: {e}", self.link.label())))
    }
}

fn pick(configured: &Option<String>, served: &str, fallback: &str) -> String {
    match configured {
        Some(name) => name.clone(),
        None if !served.trim().is_empty() => served.to_string(),
        None => fallback.to_string(),
    }
}

fn instructions_from(spec: &RemoteSpec, metadata: &EnvMetadata) -> String {
    let fallback = format!(
        "You are acting in the environment at {}. Reply with your reasoning in \
         <think>…</think> and then your action in <action>…</action>.",
        spec.endpoint
    );
    pick(&spec.instructions, &metadata.description, &fallback)
}

impl Environment for RemoteEnv {
    fn name(&self) -> &str {
        &self.name
    }

    fn instructions(&self) -> String {
        self.instructions.clone()
    }

    fn reset(&mut self, seed: u64) -> Result<Observation, EnvError> {
        self.running = false;
        let reply = self.exchange(ClientMessage::reset(seed))?;
        let decoded = self.decode(reply, "reset")?;
        self.running = true;
        Ok(decoded.observation)
    }

    fn step(&mut self, action_text: &str) -> Result<StepOutcome, EnvError> {
        if !self.running {
            return Err(EnvError::NotRunning);
        }
        self.running = false;
        let message = ClientMessage::step(&self.spec.fields.action, action_text);
        let outcome = self.exchange(message)?;
        let outcome = self.decode(outcome, "step")?.into_outcome();
        self.running = !outcome.done();
        Ok(outcome)
    }

    fn blocking_io(&self) -> bool {
        true
    }
}

impl Drop for RemoteEnv {
    fn drop(&mut self) {
        self.link.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_server_is_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let mut spec = RemoteSpec::new(format!("ws://127.0.0.1:{port}").parse().unwrap());
        spec.connect_timeout_s = 2.0;
        let err = RemoteEnv::connect(&spec).err().unwrap().to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(err.contains("/health"), "{err}");
    }
}
