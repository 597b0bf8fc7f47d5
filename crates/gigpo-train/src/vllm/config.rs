//! The settings of the vLLM backend (`[rollout.vllm]`) and of its endpoints.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checks::{at_least_one, positive};
use crate::error::{Result, TrainError};

/// Settings of the vLLM backend (`[rollout.vllm]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VllmConfig {
    /// The name the adapter is loaded under on every server, and the model rollouts request.
    /// Default `gigpo`.
    pub lora_name: String,
    /// Where each adapter version is written (`DIR/v<iteration>`), as the servers read it: on
    /// a filesystem they share with the trainer, at the same path, when they run on other
    /// machines. Default none: `RUN_DIR/vllm-adapter`.
    pub adapter_dir: Option<PathBuf>,
    /// Seconds one request may take, generation included. Default 300.
    pub timeout_s: f64,
    /// Further tries of a failed request (no answer or a server error), each on the next
    /// endpoint. Default 2.
    pub retries: u32,
    /// Seconds before the first retry; each further retry waits twice as long. Default 0.5.
    pub retry_wait_s: f64,
    /// The run stops when an endpoint answers none of its requests in this many sampling calls
    /// in a row. Default 3.
    pub max_failed_calls: u32,
    /// Requests in flight per endpoint. Default 32.
    pub concurrency: usize,
}

impl Default for VllmConfig {
    fn default() -> Self {
        Self {
            lora_name: "gigpo".into(),
            adapter_dir: None,
            timeout_s: 300.0,
            retries: 2,
            retry_wait_s: 0.5,
            max_failed_calls: 3,
            concurrency: 32,
        }
    }
}

impl VllmConfig {
    /// Checks ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        let name = &self.lora_name;
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            return Err(TrainError::config(
                "rollout.vllm.lora_name",
                format!("{name:?} must be a non-empty name without spaces"),
            ));
        }
        positive("rollout.vllm.timeout_s", self.timeout_s)?;
        if !(self.retry_wait_s >= 0.0 && self.retry_wait_s <= 3600.0) {
            return Err(TrainError::config(
                "rollout.vllm.retry_wait_s",
                format!("{} must be in [0, 3600]", self.retry_wait_s),
            ));
        }
        if self.retries > 16 {
            return Err(TrainError::config("rollout.vllm.retries", "at most 16"));
        }
        at_least_one(
            "rollout.vllm.max_failed_calls",
            self.max_failed_calls as usize,
        )?;
        at_least_one("rollout.vllm.concurrency", self.concurrency)?;
        if self.concurrency > 4096 {
            return Err(TrainError::config(
                "rollout.vllm.concurrency",
                "at most 4096",
            ));
        }
        Ok(())
    }
}

/// Checks the endpoint list of the vLLM backend: at least one, each `http://host[:port]`,
/// no duplicates.
pub fn check_endpoints(endpoints: &[String]) -> Result<()> {
    if endpoints.is_empty() {
        return Err(TrainError::config(
            "rollout.endpoints",
            "the vllm backend needs at least one server, e.g. [\"http://127.0.0.1:8000\"]",
        ));
    }
    for (i, url) in endpoints.iter().enumerate() {
        let bad = |why: &str| TrainError::config("rollout.endpoints", format!("{url:?}: {why}"));
        if url.starts_with("https://") {
            return Err(bad(
                "https is not supported; give the server's http:// address",
            ));
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(bad("must start with http://"));
        };
        let host = rest.split('/').next().unwrap_or_default();
        if host.is_empty() || host.starts_with(':') || host.chars().any(char::is_whitespace) {
            return Err(bad("no host"));
        }
        let norm = |u: &str| u.trim_end_matches('/').to_string();
        if endpoints[..i].iter().any(|u| norm(u) == norm(url)) {
            return Err(bad("listed twice"));
        }
    }
    Ok(())
}
