//! The configuration of one remote environment and its checks.

use super::client::RemoteEnv;
use super::endpoint::Endpoint;
use super::protocol::FieldNames;
use super::{DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TIMEOUT_S};
use crate::env::{EnvError, Environment};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Configuration of one remote environment (the `[env]` table with `kind = "remote"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// Where the environment lives.
    pub endpoint: Endpoint,
    /// Names of the action and observation fields (defaults in docs/remote-environments.md).
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let error = |spec: &RemoteSpec| spec.validate().unwrap_err().to_string();
        let mut spec = RemoteSpec::new("ws://127.0.0.1:1".parse().unwrap());
        spec.timeout_s = 0.0;
        assert!(error(&spec).contains("timeout_s"));
        spec.timeout_s = 1.0;
        spec.processes = 0;
        assert!(error(&spec).contains("processes"));
    }
}
