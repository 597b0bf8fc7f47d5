//! The JSON messages of the remote-environment protocol (docs/remote-environments.md, "Messages").
//!
//! The envelope is OpenEnv's WebSocket protocol: every message is a JSON object with a `type` and,
//! for most types, a `data` object.
//!
//! Client → server: `{"type":"reset","data":{"seed":7}}`, `{"type":"step","data":{"action":"…"}}`,
//! `{"type":"state"}`, `{"type":"close"}`.
//!
//! Server → client: `{"type":"observation","data":{"observation":{…},"reward":…,"done":…}}`,
//! `{"type":"state","data":{…}}`, `{"type":"error","data":{"message":…,"code":…}}`.
//!
//! Over standard input/output ([`super::stdio`]) the same objects travel one per line with an extra
//! `id` field naming the session, and two more types answer what OpenEnv serves over HTTP:
//! `{"id":…,"type":"health"}` → `{"id":…,"type":"health","data":{"status":"healthy"}}` and
//! `{"id":…,"type":"metadata"}` → `{"id":…,"type":"metadata","data":{"name":…,"description":…}}`.
//!
//! The observation object carries the fields this crate needs under configurable names
//! ([`FieldNames`]); the defaults are `text`, `anchor`, `won`, `action_valid`,
//! `admissible_actions` and `truncated`.

use crate::env::{Observation, StepOutcome};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A message from the client (the trainer) to the server (the environment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    /// Start a new episode; `data` holds `seed` and any extra reset parameters.
    Reset {
        #[serde(default)]
        data: Map<String, Value>,
    },
    /// Apply an action; `data` holds the action fields (by default `{"action": "<model text>"}`).
    Step { data: Map<String, Value> },
    /// Ask for the environment's internal state (episode id, step count, ...).
    State,
    /// End the session; the server answers nothing and frees the environment.
    Close,
    /// Liveness probe (standard input/output only; OpenEnv serves `GET /health`).
    Health,
    /// Name and description (standard input/output only; OpenEnv serves `GET /metadata`).
    Metadata,
}

impl ClientMessage {
    /// The reset message for `seed`.
    pub fn reset(seed: u64) -> Self {
        let mut data = Map::new();
        data.insert("seed".into(), Value::from(seed));
        ClientMessage::Reset { data }
    }

    /// The step message that sends `action_text` under the field `action_field`.
    pub fn step(action_field: &str, action_text: &str) -> Self {
        let mut data = Map::new();
        data.insert(action_field.into(), Value::from(action_text));
        ClientMessage::Step { data }
    }

    /// The `type` of this message, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Reset { .. } => "reset",
            ClientMessage::Step { .. } => "step",
            ClientMessage::State => "state",
            ClientMessage::Close => "close",
            ClientMessage::Health => "health",
            ClientMessage::Metadata => "metadata",
        }
    }
}

/// A message from the server to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage {
    /// The answer to `reset` and `step`.
    Observation { data: ObservationReply },
    /// The answer to `state`.
    State { data: Map<String, Value> },
    /// Anything the server could not do.
    Error { data: ErrorReply },
    /// The answer to `health` (standard input/output only).
    Health { data: Map<String, Value> },
    /// The answer to `metadata` (standard input/output only).
    Metadata { data: Box<EnvMetadata> },
}

impl ServerMessage {
    /// An error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            data: ErrorReply {
                message: message.into(),
                code,
                extra: Map::new(),
            },
        }
    }

    /// The healthy answer to a health probe (the body of OpenEnv's `GET /health`).
    pub fn healthy() -> Self {
        let mut data = Map::new();
        data.insert("status".into(), Value::from("healthy"));
        ServerMessage::Health { data }
    }

    /// The `type` of this message, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Observation { .. } => "observation",
            ServerMessage::State { .. } => "state",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Health { .. } => "health",
            ServerMessage::Metadata { .. } => "metadata",
        }
    }
}

/// The `data` of an observation reply, as OpenEnv serializes it: the observation's own fields, and
/// the reward and done flag beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationReply {
    /// The observation's fields (text, anchor, flags, ...).
    pub observation: Map<String, Value>,
    /// The step reward; `null` after a reset. OpenEnv also allows booleans.
    #[serde(default)]
    pub reward: Option<Value>,
    /// The episode is over (terminated or truncated).
    #[serde(default)]
    pub done: bool,
}

/// The `data` of an error reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong, for people.
    pub message: String,
    /// What went wrong, for programs.
    #[serde(default = "ErrorCode::unknown")]
    pub code: ErrorCode,
    /// Whatever else the server sent (OpenEnv adds validation details, session counts, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// OpenEnv's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The message was not JSON.
    InvalidJson,
    /// The message had a `type` the server does not know.
    UnknownType,
    /// The message was JSON but not of the expected shape (missing action field, ...).
    ValidationError,
    /// The environment raised while resetting or stepping.
    ExecutionError,
    /// The server holds its maximum number of sessions.
    CapacityReached,
    /// The server could not create an environment for the session.
    FactoryError,
    /// The session failed as a whole.
    SessionError,
    /// A code this crate does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    fn unknown() -> Self {
        ErrorCode::Unknown
    }

    /// Whether the server ends the session after sending this error (the connection or session
    /// must then be opened again).
    pub fn ends_session(self) -> bool {
        matches!(
            self,
            ErrorCode::CapacityReached | ErrorCode::FactoryError | ErrorCode::SessionError
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            ErrorCode::InvalidJson => "INVALID_JSON",
            ErrorCode::UnknownType => "UNKNOWN_TYPE",
            ErrorCode::ValidationError => "VALIDATION_ERROR",
            ErrorCode::ExecutionError => "EXECUTION_ERROR",
            ErrorCode::CapacityReached => "CAPACITY_REACHED",
            ErrorCode::FactoryError => "FACTORY_ERROR",
            ErrorCode::SessionError => "SESSION_ERROR",
            ErrorCode::Unknown => "UNKNOWN",
        };
        f.write_str(text)
    }
}

/// Name and description of an environment: OpenEnv's `GET /metadata` body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EnvMetadata {
    /// Short name.
    #[serde(default)]
    pub name: String,
    /// What the environment is; this crate uses it as the agent's instructions when the
    /// configuration gives none.
    #[serde(default)]
    pub description: String,
    /// Longer documentation.
    #[serde(default)]
    pub readme_content: Option<String>,
    /// Version of the environment.
    #[serde(default)]
    pub version: Option<String>,
    /// Author.
    #[serde(default)]
    pub author: Option<String>,
    /// Where the environment is documented.
    #[serde(default)]
    pub documentation_url: Option<String>,
}

/// A message framed for standard input/output: the OpenEnv message plus the session `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Framed<T> {
    /// The session this message belongs to; any string chosen by the client. Replies carry the
    /// id of the request; a reply to a line that could not be read carries `null`.
    pub id: Option<String>,
    /// The message itself.
    #[serde(flatten)]
    pub message: T,
}

/// Names of the action field and of the observation fields, per environment
/// (docs/remote-environments.md, "Configuration").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldNames {
    /// The step field that carries the model's text.
    pub action: String,
    /// The observation field with the text shown to the model (required).
    pub text: String,
    /// The observation field with the canonical state key; when absent the text is the anchor.
    pub anchor: String,
    /// The observation field saying the task was accomplished (default false).
    pub won: String,
    /// The observation field saying the action could be parsed (default true).
    pub action_valid: String,
    /// The observation field listing the admissible actions (optional).
    pub admissible_actions: String,
    /// The observation field saying the episode was cut off rather than finished (default false).
    /// OpenEnv's `done` alone cannot tell the two apart.
    pub truncated: String,
}

impl Default for FieldNames {
    fn default() -> Self {
        FieldNames {
            action: "action".into(),
            text: "text".into(),
            anchor: "anchor".into(),
            won: "won".into(),
            action_valid: "action_valid".into(),
            admissible_actions: "admissible_actions".into(),
            truncated: "truncated".into(),
        }
    }
}

/// An observation reply decoded with a [`FieldNames`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The observation.
    pub observation: Observation,
    /// The reward (`null` reads as 0).
    pub reward: f64,
    /// The `done` flag of the reply.
    pub done: bool,
    /// The `won` field.
    pub won: bool,
    /// The `action_valid` field.
    pub action_valid: bool,
    /// The `truncated` field.
    pub truncated: bool,
}

impl Decoded {
    /// The step outcome: `done` without `truncated` is a terminal state.
    pub fn into_outcome(self) -> StepOutcome {
        StepOutcome {
            observation: self.observation,
            reward: self.reward,
            terminated: self.done && !self.truncated,
            truncated: self.truncated,
            won: self.won,
            action_valid: self.action_valid,
        }
    }
}

impl FieldNames {
    /// Check that every name is non-empty.
    pub fn validate(&self) -> Result<(), String> {
        let all = [
            ("action", &self.action),
            ("text", &self.text),
            ("anchor", &self.anchor),
            ("won", &self.won),
            ("action_valid", &self.action_valid),
            ("admissible_actions", &self.admissible_actions),
            ("truncated", &self.truncated),
        ];
        match all.iter().find(|(_, name)| name.is_empty()) {
            Some((key, _)) => Err(format!("fields.{key} must not be empty")),
            None => Ok(()),
        }
    }

    /// Read an observation reply. Errors name the field that is missing or of the wrong type.
    pub fn decode(&self, reply: &ObservationReply) -> Result<Decoded, String> {
        let obs = &reply.observation;
        let text = match obs.get(&self.text) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(format!(
                    "observation field `{}` must be a string, got {}",
                    self.text,
                    type_name(other)
                ))
            }
            None => {
                return Err(format!(
                    "observation has no field `{}` (fields present: {}); set the observation \
                     field names in the environment's configuration",
                    self.text,
                    field_list(obs)
                ))
            }
        };
        let anchor = match obs.get(&self.anchor) {
            None | Some(Value::Null) => text.clone(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let admissible_actions = match obs.get(&self.admissible_actions) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(string_list(&self.admissible_actions, items)?),
            Some(other) => {
                return Err(format!(
                    "observation field `{}` must be a list of strings, got {}",
                    self.admissible_actions,
                    type_name(other)
                ))
            }
        };
        Ok(Decoded {
            observation: Observation {
                text,
                anchor,
                admissible_actions,
            },
            reward: reward_value(reply.reward.as_ref())?,
            done: reply.done,
            won: flag(obs, &self.won, false)?,
            action_valid: flag(obs, &self.action_valid, true)?,
            truncated: flag(obs, &self.truncated, false)?,
        })
    }
}

/// The observation reply that [`FieldNames::default`] decodes back into `outcome`: how
/// `gigpo env serve` answers. `reward` is `None` after a reset.
pub fn encode_observation(
    observation: &Observation,
    reward: Option<f64>,
    outcome: Option<&StepOutcome>,
) -> ObservationReply {
    let names = FieldNames::default();
    let mut obs = Map::new();
    obs.insert(names.text, Value::from(observation.text.clone()));
    obs.insert(names.anchor, Value::from(observation.anchor.clone()));
    let admissible = match &observation.admissible_actions {
        Some(list) => Value::from(list.clone()),
        None => Value::Null,
    };
    obs.insert(names.admissible_actions, admissible);
    let (won, valid, terminated, truncated) = match outcome {
        Some(o) => (o.won, o.action_valid, o.terminated, o.truncated),
        None => (false, true, false, false),
    };
    obs.insert(names.won, Value::from(won));
    obs.insert(names.action_valid, Value::from(valid));
    obs.insert(names.truncated, Value::from(truncated));
    ObservationReply {
        observation: obs,
        reward: reward.map(Value::from),
        done: terminated || truncated,
    }
}

fn reward_value(value: Option<&Value>) -> Result<f64, String> {
    match value {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Bool(b)) => Ok(if *b { 1.0 } else { 0.0 }),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(r) if r.is_finite() => Ok(r),
            _ => Err(format!("reward {n} is not a finite number")),
        },
        Some(other) => Err(format!("reward must be a number, got {}", type_name(other))),
    }
}

fn flag(obs: &Map<String, Value>, name: &str, default: bool) -> Result<bool, String> {
    match obs.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!(
            "observation field `{name}` must be true or false, got {}",
            type_name(other)
        )),
    }
}

fn string_list(name: &str, items: &[Value]) -> Result<Vec<String>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!(
                "observation field `{name}`[{i}] must be a string, got {}",
                type_name(other)
            )),
        })
        .collect()
}

fn field_list(obs: &Map<String, Value>) -> String {
    if obs.is_empty() {
        return "none".into();
    }
    obs.keys()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_messages_have_the_openenv_shape() {
        let reset = serde_json::to_value(ClientMessage::reset(7)).unwrap();
        assert_eq!(reset, json!({"type": "reset", "data": {"seed": 7}}));
        let step = serde_json::to_value(ClientMessage::step("action", "up")).unwrap();
        assert_eq!(step, json!({"type": "step", "data": {"action": "up"}}));
        let state = serde_json::to_value(ClientMessage::State).unwrap();
        assert_eq!(state, json!({"type": "state"}));
        let close = serde_json::to_value(ClientMessage::Close).unwrap();
        assert_eq!(close, json!({"type": "close"}));
    }

    #[test]
    fn reads_openenv_replies() {
        let text = r#"{"type":"error","data":{"message":"Invalid message","code":"VALIDATION_ERROR","errors":[1]}}"#;
        let msg: ServerMessage = serde_json::from_str(text).unwrap();
        let ServerMessage::Error { data } = msg else {
            panic!("not an error")
        };
        assert_eq!(data.code, ErrorCode::ValidationError);
        assert_eq!(data.extra["errors"], json!([1]));
        let odd: ServerMessage =
            serde_json::from_str(r#"{"type":"error","data":{"message":"x","code":"NEW_CODE"}}"#)
                .unwrap();
        assert!(matches!(odd, ServerMessage::Error { data } if data.code == ErrorCode::Unknown));
        let state: ServerMessage =
            serde_json::from_str(r#"{"type":"state","data":{"step_count":3}}"#).unwrap();
        assert_eq!(state.kind(), "state");
    }

    #[test]
    fn framed_messages_carry_the_session_id() {
        let framed = Framed {
            id: Some("s1".into()),
            message: ClientMessage::reset(3),
        };
        let value = serde_json::to_value(&framed).unwrap();
        assert_eq!(
            value,
            json!({"id": "s1", "type": "reset", "data": {"seed": 3}})
        );
        let back: Framed<ClientMessage> = serde_json::from_value(value).unwrap();
        assert_eq!(back, framed);
        let close: Framed<ClientMessage> =
            serde_json::from_str(r#"{"id":"s2","type":"close"}"#).unwrap();
        assert_eq!(close.message, ClientMessage::Close);
    }

    fn reply(observation: Value, reward: Value, done: bool) -> ObservationReply {
        serde_json::from_value(json!({"observation": observation, "reward": reward, "done": done}))
            .unwrap()
    }

    #[test]
    fn decodes_default_fields() {
        let r = reply(
            json!({"text": "grid", "anchor": "k", "won": true, "action_valid": false,
                   "admissible_actions": ["up", "down"]}),
            json!(1.5),
            true,
        );
        let d = FieldNames::default().decode(&r).unwrap();
        assert_eq!(d.observation.text, "grid");
        assert_eq!(d.observation.anchor, "k");
        assert_eq!(
            d.observation.admissible_actions,
            Some(vec!["up".into(), "down".into()])
        );
        assert!(d.won && !d.action_valid && d.done && !d.truncated);
        assert_eq!(d.reward, 1.5);
        let outcome = d.into_outcome();
        assert!(outcome.terminated && !outcome.truncated);
    }

    #[test]
    fn missing_anchor_falls_back_to_text_and_null_reward_is_zero() {
        let r = reply(json!({"text": "grid"}), Value::Null, false);
        let d = FieldNames::default().decode(&r).unwrap();
        assert_eq!(d.observation.anchor, "grid");
        assert_eq!(d.reward, 0.0);
        assert!(d.action_valid && !d.won);
    }

    #[test]
    fn truncated_flag_turns_done_into_truncation() {
        let r = reply(json!({"text": "t", "truncated": true}), json!(0), true);
        let o = FieldNames::default().decode(&r).unwrap().into_outcome();
        assert!(o.truncated && !o.terminated);
    }

    #[test]
    fn custom_field_names() {
        let names = FieldNames {
            text: "prompt".into(),
            anchor: "state_id".into(),
            won: "success".into(),
            ..FieldNames::default()
        };
        let r = reply(
            json!({"prompt": "p", "state_id": 12, "success": true}),
            json!(true),
            true,
        );
        let d = names.decode(&r).unwrap();
        assert_eq!(d.observation.text, "p");
        assert_eq!(d.observation.anchor, "12");
        assert!(d.won);
        assert_eq!(d.reward, 1.0);
    }

    #[test]
    fn decode_errors_name_the_field() {
        let names = FieldNames::default();
        let err = names
            .decode(&reply(json!({"prompt": "p"}), Value::Null, false))
            .unwrap_err();
        assert!(err.contains("`text`") && err.contains("`prompt`"), "{err}");
        let err = names
            .decode(&reply(
                json!({"text": "p", "won": "yes"}),
                Value::Null,
                false,
            ))
            .unwrap_err();
        assert!(err.contains("`won`"), "{err}");
        let err = names
            .decode(&reply(
                json!({"text": "p", "admissible_actions": [1]}),
                Value::Null,
                false,
            ))
            .unwrap_err();
        assert!(err.contains("admissible_actions"), "{err}");
        let err = names
            .decode(&reply(json!({"text": "p"}), json!("high"), false))
            .unwrap_err();
        assert!(err.contains("reward"), "{err}");
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let outcome = StepOutcome {
            observation: Observation {
                text: "t".into(),
                anchor: "a".into(),
                admissible_actions: None,
            },
            reward: -0.1,
            terminated: false,
            truncated: true,
            won: false,
            action_valid: false,
        };
        let r = encode_observation(&outcome.observation, Some(outcome.reward), Some(&outcome));
        let back = FieldNames::default().decode(&r).unwrap().into_outcome();
        assert_eq!(back, outcome);
    }

    #[test]
    fn empty_field_name_is_rejected() {
        let names = FieldNames {
            won: String::new(),
            ..FieldNames::default()
        };
        assert!(names.validate().unwrap_err().contains("fields.won"));
    }
}
