//! The parts of vLLM's OpenAI-compatible HTTP API the backend uses: `GET /health`,
//! `GET /v1/models`, `POST /v1/completions` with token ids in and out, and
//! `POST /v1/load_lora_adapter`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a call to an endpoint failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallError {
    /// No answer: the connection was refused or broke, or the call timed out.
    Transport(String),
    /// An HTTP error status, with the server's message.
    Status { code: u16, message: String },
    /// An answer that is not what the API promises.
    Answer(String),
}

impl CallError {
    /// Whether another try may succeed: no answer, a server error, or a request the server
    /// aborted.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            CallError::Transport(_) => true,
            CallError::Status { code, .. } => *code >= 500,
            CallError::Answer(_) => false,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Transport(m) => write!(f, "no answer: {m}"),
            CallError::Status { code, message } => write!(f, "HTTP {code}: {message}"),
            CallError::Answer(m) => write!(f, "unexpected answer: {m}"),
        }
    }
}

/// One `/v1/completions` request: a single prompt of token ids, one choice.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CompletionRequest<'a> {
    /// The model or adapter name to sample from.
    pub model: &'a str,
    /// The prompt's token ids.
    pub prompt: &'a [u32],
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    /// Omitted when off (0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// The row's seed (at most `i64::MAX`, what the server accepts).
    pub seed: u64,
    /// Log-probability of each sampled token (and of the most likely one).
    pub logprobs: u32,
    /// Answer the generated token ids, so nothing is re-tokenized.
    pub return_token_ids: bool,
    /// Generation ends at these ids (the tokenizer's end-of-sequence ids).
    pub stop_token_ids: &'a [u32],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub stop: &'a [String],
    /// Keep the stop string in the text, as the in-process sampler does.
    pub include_stop_str_in_output: bool,
}

/// One choice of a completion answer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Choice {
    /// The generated token ids (with `return_token_ids`).
    #[serde(default)]
    pub token_ids: Option<Vec<u32>>,
    #[serde(default)]
    pub logprobs: Option<ChoiceLogprobs>,
    /// `stop` (an end-of-sequence id, a stop id or a stop string) or `length`.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// The stop string or id that ended generation; none for the model's own EOS.
    #[serde(default)]
    pub stop_reason: Option<serde_json::Value>,
}

/// The log-probabilities of a choice.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ChoiceLogprobs {
    /// The log-probability of each generated token.
    pub token_logprobs: Vec<Option<f32>>,
}

#[derive(Debug, Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

/// One entry of `/v1/models`: the base model (no parent) or a loaded adapter.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ModelCard {
    /// The name requests use.
    pub id: String,
    /// Where it was loaded from (an adapter's directory).
    #[serde(default)]
    pub root: Option<String>,
    /// The base model of an adapter.
    #[serde(default)]
    pub parent: Option<String>,
    /// The context the server serves (base model).
    #[serde(default)]
    pub max_model_len: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct ModelList {
    data: Vec<ModelCard>,
}

#[derive(Debug, Serialize)]
struct LoadAdapter<'a> {
    lora_name: &'a str,
    lora_path: &'a str,
    load_inplace: bool,
}

/// An HTTP client of one server.
#[derive(Debug)]
pub(crate) struct Client {
    /// `http://host:port`, without a trailing slash.
    pub url: String,
    agent: ureq::Agent,
}

/// Seconds to wait for a connection to open.
const CONNECT_TIMEOUT_S: u64 = 10;

impl Client {
    /// A client of the server at `url`; every call may take `timeout` at most, and up to
    /// `connections` connections are kept open.
    pub(crate) fn new(url: &str, timeout: Duration, connections: usize) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(Duration::from_secs(CONNECT_TIMEOUT_S).min(timeout)))
            .http_status_as_error(false)
            .max_idle_connections_per_host(connections)
            .max_idle_connections(connections)
            .build();
        Self {
            url: url.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// `GET /health`: whether the server is up.
    pub(crate) fn health(&self) -> Result<(), CallError> {
        let resp = self
            .agent
            .get(format!("{}/health", self.url))
            .call()
            .map_err(transport)?;
        read_body(resp).map(drop)
    }

    /// `GET /v1/models`: the base model and the loaded adapters.
    pub(crate) fn models(&self) -> Result<Vec<ModelCard>, CallError> {
        let resp = self
            .agent
            .get(format!("{}/v1/models", self.url))
            .call()
            .map_err(transport)?;
        let list: ModelList = parse(&read_body(resp)?)?;
        Ok(list.data)
    }

    /// `POST /v1/completions` with one prompt; its one choice.
    pub(crate) fn complete(&self, req: &CompletionRequest<'_>) -> Result<Choice, CallError> {
        let body = self.post("/v1/completions", req)?;
        let c: Completion = parse(&body)?;
        let n = c.choices.len();
        c.choices
            .into_iter()
            .next()
            .filter(|_| n == 1)
            .ok_or_else(|| CallError::Answer(format!("{n} choices for one prompt")))
    }

    /// `POST /v1/load_lora_adapter`: loads the adapter at `path` as `name`, replacing an
    /// adapter of that name in place.
    pub(crate) fn load_adapter(&self, name: &str, path: &str) -> Result<(), CallError> {
        let req = LoadAdapter {
            lora_name: name,
            lora_path: path,
            load_inplace: true,
        };
        self.post("/v1/load_lora_adapter", &req).map(drop)
    }

    fn post(&self, path: &str, body: &impl Serialize) -> Result<String, CallError> {
        let resp = self
            .agent
            .post(format!("{}{path}", self.url))
            .send_json(body)
            .map_err(transport)?;
        read_body(resp)
    }
}

fn transport(e: ureq::Error) -> CallError {
    CallError::Transport(e.to_string())
}

/// The body of an answer; an error status becomes [`CallError::Status`] with the server's
/// message.
fn read_body(mut resp: ureq::http::Response<ureq::Body>) -> Result<String, CallError> {
    let code = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| CallError::Transport(format!("reading the answer: {e}")))?;
    if (200..300).contains(&code) {
        return Ok(body);
    }
    Err(CallError::Status {
        code,
        message: error_message(&body),
    })
}

/// The message of an error answer (`{"error": {"message": …}}` or `{"message": …}`), or the
/// start of the body.
fn error_message(body: &str) -> String {
    let v: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let found = v.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .and_then(|m| m.as_str())
    });
    match found {
        Some(m) => m.to_string(),
        None => body.chars().take(500).collect(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, CallError> {
    serde_json::from_str(body).map_err(|e| CallError::Answer(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_read_from_either_shape() {
        assert_eq!(
            error_message(r#"{"error": {"message": "no such model", "code": 404}}"#),
            "no such model"
        );
        assert_eq!(
            error_message(r#"{"object": "error", "message": "bad prompt"}"#),
            "bad prompt"
        );
        assert_eq!(
            error_message("Internal Server Error"),
            "Internal Server Error"
        );
    }

    #[test]
    fn only_missing_answers_and_server_errors_are_retried() {
        assert!(CallError::Transport("refused".into()).retryable());
        let status = |code| CallError::Status {
            code,
            message: String::new(),
        };
        assert!(status(503).retryable());
        assert!(!status(400).retryable() && !status(404).retryable());
        assert!(!CallError::Answer("x".into()).retryable());
    }

    #[test]
    fn a_request_leaves_out_what_is_off() {
        let req = CompletionRequest {
            model: "gigpo",
            prompt: &[1, 2],
            max_tokens: 4,
            temperature: 1.0,
            top_p: 1.0,
            top_k: None,
            seed: 7,
            logprobs: 1,
            return_token_ids: true,
            stop_token_ids: &[3],
            stop: &[],
            include_stop_str_in_output: true,
        };
        let v = serde_json::to_value(&req).unwrap();
        assert!(v.get("top_k").is_none() && v.get("stop").is_none());
        assert_eq!(v["prompt"], serde_json::json!([1, 2]));
        assert_eq!(v["return_token_ids"], serde_json::json!(true));
    }
}
