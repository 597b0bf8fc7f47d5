//! The agent's prompt (SPEC §2): the task, the last `history_length` observation/action pairs,
//! the current observation and the admissible actions, rendered with the model's chat template
//! when it has one.
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

use gigpo_model::{ChatMessage, Tokenizer};

use crate::error::Result;

/// One past step as shown in a prompt.
#[derive(Debug, Clone, Copy)]
pub struct PastStep<'a> {
    /// The observation the action was taken from.
    pub observation: &'a str,
    /// The action text the model produced.
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
