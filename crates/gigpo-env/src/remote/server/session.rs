//! One served session, and reading the client messages it answers.

use super::super::protocol::{
    encode_observation, ClientMessage, EnvMetadata, ErrorCode, ServerMessage,
};
use crate::env::Environment;
use serde_json::{json, Map, Value};

/// One served session: an environment and its episode bookkeeping.
pub(super) struct Session {
    name: String,
    pub(super) env: Box<dyn Environment>,
    episode: u64,
    steps: u64,
    seed: Option<u64>,
}

impl Session {
    pub(super) fn new(name: String, env: Box<dyn Environment>) -> Self {
        Session {
            name,
            env,
            episode: 0,
            steps: 0,
            seed: None,
        }
    }

    /// Answer one message; `None` for `close`.
    pub(super) fn handle(
        &mut self,
        message: ClientMessage,
        metadata: &EnvMetadata,
    ) -> Option<ServerMessage> {
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
    pub(super) fn handle_text(
        &mut self,
        text: &str,
        metadata: &EnvMetadata,
    ) -> Option<ServerMessage> {
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
    from_value(parse_json(text)?)
}

/// The JSON value of a message, or the `INVALID_JSON` reply.
pub(super) fn parse_json(text: &str) -> Result<Value, ServerMessage> {
    serde_json::from_str(text)
        .map_err(|e| ServerMessage::error(ErrorCode::InvalidJson, format!("Invalid JSON: {e}")))
}

/// The client message a JSON value holds, or the `UNKNOWN_TYPE` or `VALIDATION_ERROR` reply.
pub(super) fn from_value(value: Value) -> Result<ClientMessage, ServerMessage> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
