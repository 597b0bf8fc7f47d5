//! Serving any [`Environment`] over the remote protocol: as an OpenEnv server (`/ws`, `/health`,
//! `/schema`, `/metadata`) or over standard input/output. `gigpo env serve` is built on this.
//!
//! Every WebSocket connection (every stdio session id) gets its own environment from the
//! factory. Replies use the default field names (docs/remote-environments.md). A malformed
//! message gets an OpenEnv error reply and the session goes on; a message over the size limit
//! closes that connection (code 1009) and the server goes on. A connection over `max_sessions` gets a
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

mod lines;
mod openenv;
mod schema;
mod session;
mod stdio;

pub use openenv::Server;
pub use session::decode_client_message;
pub use stdio::serve_stdio;

use super::protocol::EnvMetadata;
use crate::env::{EnvError, Environment};
use std::net::{Ipv4Addr, SocketAddr};
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

/// Creates one environment to check the factory, and describes it as `/metadata` does.
fn metadata_of(factory: &EnvFactory) -> Result<EnvMetadata, EnvError> {
    let probe = factory()?;
    Ok(EnvMetadata {
        name: probe.name().to_string(),
        description: probe.instructions(),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        ..EnvMetadata::default()
    })
}
