//! Environments in other processes: OpenEnv over WebSocket and subprocesses over stdio
//! (docs/remote-environments.md). Built with the `remote` feature (on by default).
//!
//! A [`RemoteEnv`] implements [`Environment`](crate::Environment) like the built-in environments. Where it lives is an
//! [`Endpoint`]:
//!
//! - `openenv+ws://host:port` (or `ws://…`, `http://…`): an OpenEnv server; every `RemoteEnv` holds
//!   its own WebSocket session at `/ws`.
//! - `cmd:python my_env.py --flag …`: a subprocess speaking the same JSON messages, one per line on
//!   standard input/output, with an `id` field that multiplexes many sessions over one process
//!   ([`stdio`]). All `RemoteEnv`s built from the same command share the process(es).
//!
//! Faults never panic and never hang: every call has a timeout, every failure is an
//! [`EnvError::Remote`](crate::EnvError::Remote) naming the endpoint, the session and what happened, and the connection or
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
//! [`server`] serves any [`Environment`](crate::Environment) the other way round
//! (`gigpo env serve`).

mod client;
mod endpoint;
mod http;
pub mod protocol;
pub mod runtime;
pub mod server;
mod spec;
pub mod stdio;
pub mod ws;

pub use client::RemoteEnv;
pub use endpoint::{CommandLine, Endpoint, WsAddress};
pub use protocol::FieldNames as ObservationFields;
pub use spec::RemoteSpec;

/// Default per-call timeout (`timeout_s`).
pub const DEFAULT_TIMEOUT_S: f64 = 60.0;
/// Default timeout for connecting, the health check and starting a process (`connect_timeout_s`).
pub const DEFAULT_CONNECT_TIMEOUT_S: f64 = 30.0;
/// Default largest message accepted or sent (`max_message_bytes`): 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;
