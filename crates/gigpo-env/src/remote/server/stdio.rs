//! Serving over standard input/output, many sessions multiplexed by their `id`.

use super::super::protocol::{ClientMessage, EnvMetadata, ErrorCode, Framed, ServerMessage};
use super::lines::{LimitedLines, Line};
use super::session::{from_value, parse_json, Session};
use super::{metadata_of, EnvFactory};
use crate::env::EnvError;
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, Write};

/// Serve over standard input/output ([`crate::remote::stdio`] framing): read one message per
/// line from `input`, answer on `output`, until `input` ends. Sessions are created on their
/// first message and dropped on `close`.
pub fn serve_stdio(
    factory: EnvFactory,
    input: impl BufRead,
    mut output: impl Write,
    max_message_bytes: usize,
) -> Result<(), EnvError> {
    let metadata = metadata_of(&factory)?;
    let mut sessions: HashMap<String, Session> = Default::default();
    let mut lines = LimitedLines::new(input, max_message_bytes);
    while let Some(line) = lines
        .next_line()
        .map_err(|e| EnvError::Io(format!("reading standard input: {e}")))?
    {
        let reply = match line {
            Line::TooLong(n) => Some(Framed {
                id: None,
                message: ServerMessage::error(
                    ErrorCode::ValidationError,
                    format!("message of {n} bytes is over the limit of {max_message_bytes}"),
                ),
            }),
            Line::Text(text) if text.trim().is_empty() => None,
            Line::Text(text) => stdio_answer(&text, &mut sessions, &factory, &metadata),
        };
        if let Some(reply) = reply {
            let mut text = serde_json::to_string(&reply).unwrap_or_default();
            text.push('\n');
            output
                .write_all(text.as_bytes())
                .and_then(|_| output.flush())
                .map_err(|e| EnvError::Io(format!("writing standard output: {e}")))?;
        }
    }
    Ok(())
}

/// The reply to one line: an error reply when it is no message, none for `close`.
fn stdio_answer(
    text: &str,
    sessions: &mut HashMap<String, Session>,
    factory: &EnvFactory,
    metadata: &EnvMetadata,
) -> Option<Framed<ServerMessage>> {
    let (id, message) = match read_framed(text) {
        Ok(framed) => framed,
        Err((id, message)) => return Some(Framed { id, message }),
    };
    let reply = match message {
        ClientMessage::Close => {
            sessions.remove(&id);
            return None;
        }
        ClientMessage::Health => ServerMessage::healthy(),
        ClientMessage::Metadata => ServerMessage::Metadata {
            data: Box::new(metadata.clone()),
        },
        other => match session_for(sessions, &id, factory) {
            Ok(session) => session.handle(other, metadata)?,
            Err(e) => ServerMessage::error(ErrorCode::FactoryError, e.to_string()),
        },
    };
    Some(Framed {
        id: Some(id),
        message: reply,
    })
}

/// The session id and the message of one line, or the error reply to it with the id when the
/// line names one.
fn read_framed(text: &str) -> Result<(String, ClientMessage), (Option<String>, ServerMessage)> {
    let value = parse_json(text).map_err(|reply| (None, reply))?;
    let Some(Value::String(id)) = value.get("id") else {
        let message = ServerMessage::error(
            ErrorCode::ValidationError,
            "every message needs a string `id` naming its session",
        );
        return Err((None, message));
    };
    let id = id.clone();
    match from_value(value) {
        Ok(message) => Ok((id, message)),
        Err(reply) => Err((Some(id), reply)),
    }
}

fn session_for<'a>(
    sessions: &'a mut HashMap<String, Session>,
    id: &str,
    factory: &EnvFactory,
) -> Result<&'a mut Session, EnvError> {
    if !sessions.contains_key(id) {
        let env = factory()?;
        sessions.insert(id.to_string(), Session::new(id.to_string(), env));
    }
    Ok(sessions.get_mut(id).expect("session was just inserted"))
}
