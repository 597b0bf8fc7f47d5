//! Environments in other processes: OpenEnv over WebSocket and subprocesses over stdio (SPEC §5).
//!
//! A [`RemoteEnv`] implements [`Environment`] like the built-in environments. Where it lives is an
//! [`Endpoint`]:
//!
//! - `openenv+ws://host:port` (or `ws://…`, `http://…`): an OpenEnv server; every `RemoteEnv` holds
//!   its own WebSocket session at `/ws`.
//! - `cmd:python my_env.py --flag …`: a subprocess speaking the same JSON messages, one per line on
//!   standard input/output, with an `id` field that multiplexes many sessions over one process
//!   ([`stdio`]). All `RemoteEnv`s built from the same command share the process(es).
//!
//! Faults never panic and never hang: every call has a timeout, every failure is an
//! [`EnvError::Remote`] naming the endpoint, the session and what happened, and the connection or
//! process is opened again on the next `reset`.
//!
//! ```no_run
//! use gigpo_env::remote::{RemoteEnv, RemoteSpec};
//! use gigpo_env::Environment;
//!
//! let spec = RemoteSpec::new("cmd:python my_env.py".parse().unwrap());
//! let mut env = RemoteEnv::connect(&spec).unwrap();
//! let first = env.reset(7).unwrap();
//! let outcome = env.step("<action>left</action>").unwrap();
//! # let _ = (first, outcome);
//! ```
//!
//! [`server`] serves any [`Environment`] the other way round (`gigpo env serve`).

mod http;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod stdio;
pub mod ws;

use crate::env::{EnvError, Environment, Observation, StepOutcome};
use protocol::{ClientMessage, EnvMetadata, FieldNames, ServerMessage};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use protocol::FieldNames as ObservationFields;

/// Default per-call timeout (`timeout_s`).
pub const DEFAULT_TIMEOUT_S: f64 = 60.0;
/// Default timeout for connecting, the health check and starting a process (`connect_timeout_s`).
pub const DEFAULT_CONNECT_TIMEOUT_S: f64 = 30.0;
/// Default largest message accepted or sent (`max_message_bytes`): 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Where a remote environment lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// An OpenEnv server, reached over WebSocket.
    OpenEnv(WsAddress),
    /// A subprocess speaking the protocol over standard input/output.
    Command(CommandLine),
}

/// An OpenEnv server address: `host:port` and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WsAddress {
    /// `host:port`.
    pub authority: String,
    /// Path prefix without the trailing `/ws` (usually empty).
    pub base_path: String,
}

impl WsAddress {
    /// The WebSocket URL of the session endpoint.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}/ws", self.authority, self.base_path)
    }

    /// The path of an HTTP route under this server (`/health`, `/metadata`).
    pub fn http_path(&self, route: &str) -> String {
        format!("{}{route}", self.base_path)
    }
}

/// A command line that starts a subprocess environment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommandLine {
    /// The program (looked up on `PATH` like a shell would).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::OpenEnv(a) => write!(f, "openenv+ws://{}{}", a.authority, a.base_path),
            Endpoint::Command(c) => {
                let words = std::iter::once(&c.program).chain(&c.args);
                let quoted: Vec<String> = words.map(|w| quote_word(w)).collect();
                write!(f, "cmd:{}", quoted.join(" "))
            }
        }
    }
}

fn quote_word(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| word.to_string(), |q| q.into_owned())
}

impl FromStr for Endpoint {
    type Err = String;

    /// Parse `openenv+ws://host:port`, `ws://host:port`, `http://host:port` or `cmd:program args…`
    /// (arguments split like a POSIX shell does, with quotes).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(command) = text.strip_prefix("cmd:") {
            return parse_command(command);
        }
        let rest = text.strip_prefix("openenv+").unwrap_or(text);
        if let Some(addr) = rest
            .strip_prefix("ws://")
            .or_else(|| rest.strip_prefix("http://"))
        {
            return parse_address(addr, text);
        }
        if rest.starts_with("wss://") || rest.starts_with("https://") {
            return Err(format!(
                "endpoint `{text}`: TLS (wss://, https://) is not supported; reach the server \
                 through a local tunnel or proxy and use ws://"
            ));
        }
        Err(format!(
            "endpoint `{text}`: expected `openenv+ws://host:port`, `ws://host:port` or \
             `cmd:program args…`"
        ))
    }
}

fn parse_command(command: &str) -> Result<Endpoint, String> {
    let words = shlex::split(command)
        .ok_or_else(|| format!("endpoint `cmd:{command}`: unbalanced quotes"))?;
    let mut words = words.into_iter();
    let program = words
        .next()
        .ok_or_else(|| "endpoint `cmd:` names no program".to_string())?;
    Ok(Endpoint::Command(CommandLine {
        program,
        args: words.collect(),
    }))
}

/// `host:port` → (host, Some(port)); `[v6]:port` keeps the brackets on the host.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    let colon = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return (authority, None),
    };
    (&authority[..colon], Some(&authority[colon + 1..]))
}

fn parse_address(addr: &str, original: &str) -> Result<Endpoint, String> {
    let (authority, path) = match addr.find('/') {
        Some(i) => (&addr[..i], &addr[i..]),
        None => (addr, ""),
    };
    if authority.is_empty() || authority.contains('@') || authority.contains('?') {
        return Err(format!(
            "endpoint `{original}`: expected host:port after the scheme"
        ));
    }
    let (host, port) = split_host_port(authority);
    if host.is_empty() || host == "[]" {
        return Err(format!(
            "endpoint `{original}`: expected host:port after the scheme"
        ));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("endpoint `{original}`: port `{p}` is not a number 0-65535"))?,
        None => 80,
    };
    let authority = format!("{host}:{port}");
    let mut base = path.trim_end_matches('/');
    base = base.strip_suffix("/ws").unwrap_or(base);
    if base.contains('?') || base.contains('#') {
        return Err(format!(
            "endpoint `{original}`: query strings are not supported"
        ));
    }
    Ok(Endpoint::OpenEnv(WsAddress {
        authority,
        base_path: base.to_string(),
    }))
}

impl TryFrom<String> for Endpoint {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Endpoint> for String {
    fn from(endpoint: Endpoint) -> String {
        endpoint.to_string()
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Configuration of one remote environment (the `[env]` table with `kind = "remote"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// Where the environment lives.
    pub endpoint: Endpoint,
    /// Names of the action and observation fields (defaults of SPEC §5).
    #[serde(default)]
    pub fields: FieldNames,
    /// Longest wait for one reply, in seconds (default 60).
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Longest wait for connecting, the health check and a process start, in seconds (default 30).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_s: f64,
    /// Largest message sent or accepted, in bytes (default 16 MiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// `cmd:` only: how many processes serve the sessions (round-robin; default 1).
    #[serde(default = "default_processes")]
    pub processes: usize,
    /// The environment's name; default: the server's metadata, else `remote`.
    #[serde(default)]
    pub name: Option<String>,
    /// Instructions for the agent; default: the server's metadata description.
    #[serde(default)]
    pub instructions: Option<String>,
}

fn default_timeout() -> f64 {
    DEFAULT_TIMEOUT_S
}
fn default_connect_timeout() -> f64 {
    DEFAULT_CONNECT_TIMEOUT_S
}
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn default_processes() -> usize {
    1
}

impl RemoteSpec {
    /// A spec with every setting at its default.
    pub fn new(endpoint: Endpoint) -> Self {
        RemoteSpec {
            endpoint,
            fields: FieldNames::default(),
            timeout_s: DEFAULT_TIMEOUT_S,
            connect_timeout_s: DEFAULT_CONNECT_TIMEOUT_S,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            processes: 1,
            name: None,
            instructions: None,
        }
    }

    /// Check every setting; the error names the field.
    pub fn validate(&self) -> Result<(), EnvError> {
        let bad = |msg: String| Err(EnvError::Config(format!("remote environment: {msg}")));
        for (field, value) in [
            ("timeout_s", self.timeout_s),
            ("connect_timeout_s", self.connect_timeout_s),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
                return bad(format!("{field} = {value} must be in (0, 86400] seconds"));
            }
        }
        if self.max_message_bytes < 1024 {
            return bad(format!(
                "max_message_bytes = {} must be at least 1024",
                self.max_message_bytes
            ));
        }
        if self.processes == 0 || self.processes > 1024 {
            return bad(format!(
                "processes = {} must be in 1..=1024",
                self.processes
            ));
        }
        self.fields.validate().or_else(bad)
    }

    /// Per-call timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_s)
    }

    /// Connection, health check and process start timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_s)
    }

    /// Connect one environment instance (see [`RemoteEnv::connect`]).
    pub fn build(&self) -> Result<Box<dyn Environment>, EnvError> {
        Ok(Box::new(RemoteEnv::connect(self)?))
    }
}

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

/// One environment instance served by another process (see the [module docs](self)).
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
    fn parses_websocket_endpoints() {
        let e: Endpoint = "openenv+ws://127.0.0.1:8000".parse().unwrap();
        let Endpoint::OpenEnv(a) = &e else { panic!() };
        assert_eq!(a.ws_url(), "ws://127.0.0.1:8000/ws");
        assert_eq!(a.http_path("/health"), "/health");
        assert_eq!(e.to_string(), "openenv+ws://127.0.0.1:8000");
        let e: Endpoint = "ws://localhost:9/prefix/ws/".parse().unwrap();
        let Endpoint::OpenEnv(a) = &e else { panic!() };
        assert_eq!(a.ws_url(), "ws://localhost:9/prefix/ws");
        assert_eq!(a.http_path("/health"), "/prefix/health");
        let e: Endpoint = "http://[::1]:8000".parse().unwrap();
        let Endpoint::OpenEnv(a) = &e else { panic!() };
        assert_eq!(a.authority, "[::1]:8000");
        let e: Endpoint = "ws://example".parse().unwrap();
        let Endpoint::OpenEnv(a) = &e else { panic!() };
        assert_eq!(a.authority, "example:80");
    }

    #[test]
    fn parses_command_endpoints() {
        let e: Endpoint = r#"cmd:python "my env.py" --size 4"#.parse().unwrap();
        let Endpoint::Command(c) = &e else { panic!() };
        assert_eq!(c.program, "python");
        assert_eq!(c.args, vec!["my env.py", "--size", "4"]);
        assert_eq!(e.to_string(), "cmd:python 'my env.py' --size 4");
    }

    #[test]
    fn rejects_bad_endpoints_with_a_reason() {
        for (text, needle) in [
            ("wss://x:1", "TLS"),
            ("tcp://x:1", "expected"),
            ("ws://x:99999", "port"),
            ("cmd:", "no program"),
            ("cmd:python 'x", "quotes"),
            ("ws://:8000", "host"),
        ] {
            let err = text.parse::<Endpoint>().unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn spec_reads_from_toml_with_defaults() {
        let spec: RemoteSpec = serde_json::from_value(serde_json::json!({
            "endpoint": "cmd:python env.py",
            "timeout_s": 5.0,
            "fields": {"text": "prompt"}
        }))
        .unwrap();
        assert_eq!(spec.timeout(), Duration::from_secs(5));
        assert_eq!(spec.fields.text, "prompt");
        assert_eq!(spec.fields.anchor, "anchor");
        assert_eq!(spec.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        spec.validate().unwrap();
        let unknown = serde_json::from_value::<RemoteSpec>(serde_json::json!({
            "endpoint": "cmd:x", "timeout": 5
        }));
        assert!(unknown.unwrap_err().to_string().contains("timeout"));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut spec = RemoteSpec::new("ws://127.0.0.1:1".parse().unwrap());
        spec.timeout_s = 0.0;
        assert!(spec
            .validate()
            .unwrap_err()
            .to_string()
            .contains("timeout_s"));
        spec.timeout_s = 1.0;
        spec.processes = 0;
        assert!(spec
            .validate()
            .unwrap_err()
            .to_string()
            .contains("processes"));
    }

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
