//! The `/schema` body of the OpenEnv server.

use serde_json::{json, Value};

/// JSON schemas of the action, the observation and the state.
pub(super) fn schema() -> Value {
    json!({
        "action": {
            "title": "Action",
            "type": "object",
            "properties": {
                "action": {"type": "string", "description": "The model's text; the action is read from <action>…</action>"},
                "metadata": {"type": "object"}
            },
            "required": ["action"]
        },
        "observation": {
            "title": "Observation",
            "type": "object",
            "properties": {
                "text": {"type": "string", "description": "The text shown to the model"},
                "anchor": {"type": "string", "description": "Canonical state key (no history)"},
                "won": {"type": "boolean"},
                "action_valid": {"type": "boolean"},
                "admissible_actions": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
                "truncated": {"type": "boolean", "description": "The episode was cut off (step limit)"},
                "done": {"type": "boolean"},
                "reward": {"anyOf": [{"type": "number"}, {"type": "null"}]}
            },
            "required": ["text", "anchor"]
        },
        "state": {
            "title": "State",
            "type": "object",
            "properties": {
                "episode_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "step_count": {"type": "integer", "minimum": 0},
                "seed": {"anyOf": [{"type": "integer"}, {"type": "null"}]}
            }
        }
    })
}
