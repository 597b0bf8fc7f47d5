//! The agent's prompt (docs/training.md): the task, the last `history_length`
//! observation/action pairs, the current observation and the admissible actions, rendered with
//! the model's chat template when it has one.
//!
//! The user message of a step reads
//!
//! ```text
//! Previous steps:
//! Observation:
//! <grid>
//! Action: up
//! Current observation:
//! <grid>
//! Admissible actions: up, down, left, right
//! ```
//!
//! (the first two parts only when there is history). The instructions are the system message.

use gigpo_env::action::{extract_action, ActionFormat};
use gigpo_model::{ChatMessage, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// What the history of a step prompt shows of each past action (`rollout.history_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryAction {
    /// The action the answer names (inside `<action>…</action>`, or a bare answer), without
    /// the reasoning around it; an answer that names none is shown cut to 64 characters.
    #[default]
    Parsed,
    /// The whole generated text.
    Text,
}

/// How the prompts of an episode are built.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PromptStyle {
    /// `true`: each turn is sampled from the running chat (the trajectory layout); `false`:
    /// from a single-turn prompt with a window of history (the step layout).
    pub chat: bool,
    /// Past observation/action pairs in a single-turn prompt.
    pub history_length: usize,
    /// What the history shows of past actions.
    pub history_action: HistoryAction,
    /// Put the environment's instructions (or `system_prompt`) in the system turn.
    pub instructions: bool,
    /// Text of the system turn in place of the environment's instructions
    /// (`rollout.system_prompt`); `None`: the environment's.
    pub system_prompt: Option<String>,
    /// Text written at the start of the assistant turn of a single-turn prompt, before the
    /// model's answer (`rollout.response_prefix`); empty for none.
    pub response_prefix: String,
}

impl PromptStyle {
    /// The text of the system turn: `system_prompt` when set, else the environment's
    /// instructions (asked for only then); `None` when instructions are off.
    pub fn system_turn(&self, env_instructions: impl FnOnce() -> String) -> Option<String> {
        if !self.instructions {
            return None;
        }
        Some(self.system_prompt.clone().unwrap_or_else(env_instructions))
    }

    /// The text the environment reads for a generated answer: the response prefix, then the
    /// generated text.
    pub fn answer_text(&self, generated: &str) -> String {
        format!("{}{generated}", self.response_prefix)
    }
}

/// The action text a history line shows for a generated answer.
pub fn history_action(text: &str, how: HistoryAction) -> String {
    match how {
        HistoryAction::Text => text.trim().to_string(),
        HistoryAction::Parsed => match extract_action(text, ActionFormat::TaggedOrBare) {
            Some(a) => a.trim().to_string(),
            None => text.trim().chars().take(64).collect(),
        },
    }
}

/// One past step as shown in a prompt.
#[derive(Debug, Clone, Copy)]
pub struct PastStep<'a> {
    /// The observation the action was taken from.
    pub observation: &'a str,
    /// The action as the history shows it ([`history_action`]).
    pub action: &'a str,
}

/// The user message of one step.
pub fn user_message(
    history: &[PastStep<'_>],
    observation: &str,
    admissible: Option<&[String]>,
) -> String {
    let mut s = String::new();
    if !history.is_empty() {
        s.push_str("Previous steps:\n");
        for h in history {
            s.push_str("Observation:\n");
            s.push_str(h.observation);
            s.push_str("\nAction: ");
            s.push_str(h.action.trim());
            s.push('\n');
        }
    }
    s.push_str("Current observation:\n");
    s.push_str(observation);
    if let Some(actions) = admissible {
        s.push_str("\nAdmissible actions: ");
        s.push_str(&actions.join(", "));
    }
    s
}

/// The prompt text of one step: chat template with a generation prompt when the tokenizer has
/// one, else plain text ending in `Action: `.
pub fn step_prompt_text(tok: &Tokenizer, instructions: Option<&str>, user: &str) -> Result<String> {
    if tok.has_chat_template() {
        let mut messages = Vec::with_capacity(2);
        if let Some(i) = instructions {
            messages.push(ChatMessage::new("system", i));
        }
        messages.push(ChatMessage::new("user", user));
        Ok(tok.apply_chat(&messages, true)?)
    } else {
        let mut s = String::new();
        if let Some(i) = instructions {
            s.push_str(i);
            s.push_str("\n\n");
        }
        s.push_str(user);
        s.push_str("\nAction: ");
        Ok(s)
    }
}

/// The prompt token ids of one step.
pub fn step_prompt(
    tok: &Tokenizer,
    instructions: Option<&str>,
    history: &[PastStep<'_>],
    observation: &str,
    admissible: Option<&[String]>,
) -> Result<Vec<u32>> {
    let user = user_message(history, observation, admissible);
    Ok(tok.encode(&step_prompt_text(tok, instructions, &user)?)?)
}

/// One finished turn of a running chat: the user message and the generated ids.
#[derive(Debug, Clone, Copy)]
pub struct ChatTurn<'a> {
    /// The user message of the turn.
    pub user: &'a str,
    /// The generated ids (EOS included when drawn).
    pub response: &'a [u32],
}

/// Private-use characters that cannot occur in model output (decoded text) of the chat turns.
const MARK_OPEN: char = '\u{F8F0}';
const MARK_CLOSE: char = '\u{F8F1}';

/// The token ids of a running chat: the system turn, the finished `turns` with their generated
/// ids spliced in verbatim, and, when `next_user` is given, that user message with the
/// generation prompt. Returns the ids and where each turn's response starts.
///
/// The chat is rendered with a marker in place of each assistant turn; the text between markers
/// is tokenized and each marker replaced by the turn's ids. When a response ends with an EOS id
/// and the template writes that end-of-turn token right after the turn, the template's copy is
/// dropped. Segments are tokenized on their own, so the ids of a chat are a prefix of the ids
/// of the same chat with more turns: each turn is sampled from the tokens training scores.
pub fn chat_tokens(
    tok: &Tokenizer,
    instructions: Option<&str>,
    turns: &[ChatTurn<'_>],
    next_user: Option<&str>,
) -> Result<(Vec<u32>, Vec<usize>)> {
    let mut messages = Vec::new();
    if let Some(i) = instructions {
        messages.push(ChatMessage::new("system", i));
    }
    for (k, t) in turns.iter().enumerate() {
        messages.push(ChatMessage::new("user", t.user));
        messages.push(ChatMessage::new(
            "assistant",
            format!("{MARK_OPEN}{k}{MARK_CLOSE}"),
        ));
    }
    if let Some(u) = next_user {
        messages.push(ChatMessage::new("user", u));
    }
    let generation = next_user.is_some();
    let text = if tok.has_chat_template() {
        tok.apply_chat(&messages, generation)?
    } else {
        plain_chat(&messages, generation)
    };
    let mut ids: Vec<u32> = Vec::new();
    let mut starts = Vec::with_capacity(turns.len());
    let mut rest = text.as_str();
    let mut drop_prefix: Option<String> = None;
    for (k, t) in turns.iter().enumerate() {
        let marker = format!("{MARK_OPEN}{k}{MARK_CLOSE}");
        let at = rest.find(&marker).ok_or_else(|| {
            TrainError::config(
                "chat template",
                "an assistant turn was not rendered verbatim",
            )
        })?;
        let mut before = &rest[..at];
        if let Some(p) = drop_prefix.take() {
            before = before.strip_prefix(p.as_str()).unwrap_or(before);
        }
        ids.extend(tok.encode(before)?);
        starts.push(ids.len());
        ids.extend_from_slice(t.response);
        if let Some(&last) = t.response.last() {
            if tok.eos_ids().contains(&last) {
                drop_prefix = Some(tok.decode_raw(&[last])?);
            }
        }
        rest = &rest[at + marker.len()..];
    }
    let mut tail = rest;
    if let Some(p) = drop_prefix.take() {
        tail = tail.strip_prefix(p.as_str()).unwrap_or(tail);
    }
    ids.extend(tok.encode(tail)?);
    Ok((ids, starts))
}

/// A chat as plain text for tokenizers without a template.
fn plain_chat(messages: &[ChatMessage], generation: bool) -> String {
    let mut s = String::new();
    for m in messages {
        match m.role.as_str() {
            "assistant" => {
                s.push_str("Action: ");
                s.push_str(&m.content);
                s.push('\n');
            }
            _ => {
                s.push_str(&m.content);
                s.push('\n');
            }
        }
    }
    if generation {
        s.push_str("Action: ");
    }
    s
}

/// A finished turn as the next prompt needs it.
#[derive(Debug, Clone, Copy)]
pub struct PastTurn<'a> {
    /// The user message of the turn.
    pub user: &'a str,
    /// The generated token ids.
    pub response: &'a [u32],
    /// The observation text the action was taken from.
    pub observation: &'a str,
    /// The generated text.
    pub action_text: &'a str,
}

/// The user message and prompt ids of the next turn after `past` from `obs`.
pub fn next_prompt(
    tok: &Tokenizer,
    style: &PromptStyle,
    instructions: Option<&str>,
    past: &[PastTurn<'_>],
    obs: &gigpo_env::Observation,
) -> Result<(String, Vec<u32>)> {
    let admissible = obs.admissible_actions.as_deref();
    if style.chat {
        let user = user_message(&[], &obs.text, admissible);
        let turns: Vec<ChatTurn<'_>> = past
            .iter()
            .map(|s| ChatTurn {
                user: s.user,
                response: s.response,
            })
            .collect();
        let (ids, _) = chat_tokens(tok, instructions, &turns, Some(&user))?;
        return Ok((user, ids));
    }
    let window = &past[past.len().saturating_sub(style.history_length)..];
    let shown: Vec<String> = window
        .iter()
        .map(|s| history_action(s.action_text, style.history_action))
        .collect();
    let history: Vec<PastStep<'_>> = window
        .iter()
        .zip(&shown)
        .map(|(s, a)| PastStep {
            observation: s.observation,
            action: a,
        })
        .collect();
    let user = user_message(&history, &obs.text, admissible);
    let mut text = step_prompt_text(tok, instructions, &user)?;
    text.push_str(&style.response_prefix);
    let ids = tok.encode(&text)?;
    Ok((user, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_admissible_actions_appear_in_order() {
        let h = [
            PastStep {
                observation: "A",
                action: " up\n",
            },
            PastStep {
                observation: "B",
                action: "left",
            },
        ];
        let acts = vec!["up".to_string(), "down".to_string()];
        let m = user_message(&h, "C", Some(&acts));
        assert_eq!(
            m,
            "Previous steps:\nObservation:\nA\nAction: up\nObservation:\nB\nAction: left\nCurrent observation:\nC\nAdmissible actions: up, down"
        );
        assert_eq!(user_message(&[], "C", None), "Current observation:\nC");
    }

    #[test]
    fn chat_template_wraps_system_and_user() {
        let tok = Tokenizer::tiny().unwrap();
        let text = step_prompt_text(&tok, Some("Play."), "Current observation:\nC").unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nPlay.<|im_end|>\n<|im_start|>user\nCurrent observation:\nC<|im_end|>\n<|im_start|>assistant\n"
        );
        let ids = step_prompt(&tok, None, &[], "C", None).unwrap();
        assert_eq!(
            tok.decode_raw(&ids).unwrap(),
            "<|im_start|>user\nCurrent observation:\nC<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
