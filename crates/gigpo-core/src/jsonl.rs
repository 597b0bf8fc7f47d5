//! Reading trajectory files: JSON lines, one trajectory a line (`docs/formats.md`).
//!
//! The reader takes the file's bytes, so that every fault is named by its line: a line that is
//! not UTF-8, not JSON, or lacks a field. A UTF-8 byte order mark at the start of the file is
//! skipped; blank lines are skipped; other fields are ignored.

use serde::Deserialize;
use serde_json::Value;

/// A trajectory file that cannot be read, naming the file and, where there is one, the line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrajectoryFileError {
    /// One line is wrong.
    #[error("{name} line {line}: {message}")]
    Line {
        /// The file, as the user named it.
        name: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The file holds no trajectory.
    #[error("{name}: no trajectories")]
    Empty {
        /// The file, as the user named it.
        name: String,
    },
}

/// One trajectory as read.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajectoryLine {
    /// The line it came from, from 1.
    pub line: usize,
    /// `group`, as given (a string or a number).
    pub group: Value,
    /// `trajectory`, as given (a string or a number).
    pub trajectory: Value,
    /// The steps in time order.
    pub steps: Vec<StepLine>,
}

impl TrajectoryLine {
    /// The group's name: its string, or its number as text.
    pub fn group_name(&self) -> String {
        id_text(&self.group).unwrap_or_default()
    }

    /// The trajectory's name: its string, or its number as text.
    pub fn trajectory_name(&self) -> String {
        id_text(&self.trajectory).unwrap_or_default()
    }
}

/// One step as read.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StepLine {
    /// The state the action was taken from.
    pub anchor: String,
    /// The environment's reward.
    pub reward: f64,
    /// Whether the action could be parsed (default true).
    #[serde(default = "yes")]
    pub action_valid: bool,
    /// The action taken, as a key for the diagnostics (optional; absent in older files).
    #[serde(default)]
    pub action: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct RawLine {
    group: Value,
    trajectory: Value,
    steps: Vec<StepLine>,
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads the trajectories of a file's bytes; `name` names the file in errors.
pub fn read_trajectories(
    name: &str,
    bytes: &[u8],
) -> Result<Vec<TrajectoryLine>, TrajectoryFileError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let fail = |message: String| TrajectoryFileError::Line {
            name: name.to_string(),
            line,
            message,
        };
        let text = std::str::from_utf8(raw).map_err(|e| {
            fail(format!(
                "not UTF-8 text (invalid byte at column {})",
                e.valid_up_to() + 1
            ))
        })?;
        if text.trim().is_empty() {
            continue;
        }
        let l: RawLine = serde_json::from_str(text).map_err(|e| fail(json_message(&e)))?;
        for (field, v) in [("group", &l.group), ("trajectory", &l.trajectory)] {
            if id_text(v).is_none() {
                return Err(fail(format!(
                    "field `{field}` must be a string or a number, got {v}"
                )));
            }
        }
        out.push(TrajectoryLine {
            line,
            group: l.group,
            trajectory: l.trajectory,
            steps: l.steps,
        });
    }
    if out.is_empty() {
        return Err(TrajectoryFileError::Empty {
            name: name.to_string(),
        });
    }
    Ok(out)
}

/// serde_json's message with its position given as the column only (the line is the file's).
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&position) {
        Some(message) if e.column() > 0 => format!("column {}: {message}", e.column()),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"group":"g","trajectory":"t","steps":[{"anchor":"s","reward":1}]}"#;

    fn error(bytes: &[u8]) -> String {
        read_trajectories("in.jsonl", bytes)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_lines_skipping_blanks_and_a_byte_order_mark() {
        let text = format!("\u{feff}{LINE}\n\n{LINE}\r\n");
        let read = read_trajectories("in.jsonl", text.as_bytes()).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!((read[0].line, read[1].line), (1, 3));
        assert_eq!(read[0].group_name(), "g");
        assert!(read[0].steps[0].action_valid);
        assert_eq!(read[0].steps[0].action, None);
    }

    #[test]
    fn reads_the_optional_action() {
        let line =
            r#"{"group":"g","trajectory":"t","steps":[{"anchor":"s","reward":1,"action":"up"}]}"#;
        let read = read_trajectories("in.jsonl", line.as_bytes()).unwrap();
        assert_eq!(read[0].steps[0].action.as_deref(), Some("up"));
    }

    #[test]
    fn bad_bytes_are_named_by_line_and_column() {
        let mut bytes = format!("{LINE}\n{LINE}\n").into_bytes();
        bytes.extend_from_slice(b"{\"group\": \"\xff\"}\n");
        assert_eq!(
            error(&bytes),
            "in.jsonl line 3: not UTF-8 text (invalid byte at column 12)"
        );
    }

    #[test]
    fn json_errors_name_the_line_once() {
        let text = format!("{LINE}\n{{\"group\": }}\n");
        assert_eq!(
            error(text.as_bytes()),
            "in.jsonl line 2: column 11: expected value"
        );
        let text = r#"{"group":"g","trajectory":[],"steps":[]}"#;
        let e = error(text.as_bytes());
        assert!(e.starts_with("in.jsonl line 1: field `trajectory`"), "{e}");
        assert_eq!(error(b"\n \n"), "in.jsonl: no trajectories");
        let e = error(br#"{"group":"g","trajectory":"t","steps":[{"anchor":"s"}]}"#);
        assert!(e.contains("line 1") && e.contains("reward"), "{e}");
    }
}
