//! From step advantages to training sequences: the two sample layouts of SPEC §2.
//!
//! - [`SampleLayout::Step`]: one sample per environment step; tokens = the step's prompt followed
//!   by its response; every response token gets A_t.
//! - [`SampleLayout::Trajectory`]: one sequence per trajectory, the whole chat (instructions as
//!   system turn, observations as user turns, the generated responses as assistant turns);
//!   the mask is 1 on assistant tokens only, and the tokens of turn t get A_t.
//!
//! In both layouts the assistant tokens are exactly the generated ids, so every action token
//! appears once with its step's advantage, in the same order.

use gigpo_core::{compute, AdvantageConfig, Advantages, BatchBuilder, StepInput};
use gigpo_model::{ChatMessage, Tokenizer};

use crate::config::SampleLayout;
use crate::error::{Result, TrainError};
use crate::prompt::user_message;
use crate::rollout::{Rollout, TrajectoryRecord};

/// One training sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The whole token sequence.
    pub tokens: Vec<u32>,
    /// Index of the first scored token (≥ 1); tokens before it are context only.
    pub start: usize,
    /// 1 for trained tokens, per scored position (`tokens.len() − start` entries).
    pub mask: Vec<f32>,
    /// The advantage of each scored position.
    pub advantages: Vec<f32>,
    /// The trajectory (index into `Rollout::trajectories`) it came from.
    pub trajectory: usize,
}

impl Sample {
    /// Number of scored positions.
    pub fn scored_len(&self) -> usize {
        self.tokens.len() - self.start
    }
}

/// The advantages of every step of `rollout`, in trajectory-then-step order over trajectories
/// with at least one step (group = episode group, trajectory = member).
pub fn advantages(rollout: &Rollout, cfg: &AdvantageConfig) -> Result<Advantages> {
    let mut b = BatchBuilder::new();
    for t in rollout.trajectories.iter().filter(|t| !t.steps.is_empty()) {
        let steps = t.steps.iter().map(|s| StepInput {
            anchor: &s.anchor,
            reward: s.reward,
            action_valid: s.action_valid,
        });
        b.push_trajectory(&format!("g{}", t.group), &format!("t{}", t.member), steps)?;
    }
    Ok(compute(&b.build(), cfg)?)
}

/// The samples of `rollout` under `layout`; `advantages` are indexed as [`advantages`] returns
/// them. Steps with an empty response carry no token and give no sample.
pub fn build_samples(
    tok: &Tokenizer,
    rollout: &Rollout,
    advantages: &[f64],
    layout: SampleLayout,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    let mut next = 0;
    for (ti, t) in rollout.trajectories.iter().enumerate() {
        if t.steps.is_empty() {
            continue;
        }
        let adv = advantages
            .get(next..next + t.steps.len())
            .ok_or_else(|| TrainError::config("advantages", "fewer advantages than steps"))?;
        next += t.steps.len();
        match layout {
            SampleLayout::Step => step_samples(t, ti, adv, &mut out),
            SampleLayout::Trajectory => out.push(trajectory_sample(
                tok,
                rollout.instructions.as_deref(),
                t,
                ti,
                adv,
            )?),
        }
    }
    Ok(out)
}

fn step_samples(t: &TrajectoryRecord, ti: usize, adv: &[f64], out: &mut Vec<Sample>) {
    for (s, &a) in t.steps.iter().zip(adv) {
        if s.response.is_empty() || s.prompt.is_empty() {
            continue;
        }
        let n = s.response.len();
        let mut tokens = s.prompt.clone();
        tokens.extend(&s.response);
        out.push(Sample {
            tokens,
            start: s.prompt.len(),
            mask: vec![1.0; n],
            advantages: vec![a as f32; n],
            trajectory: ti,
        });
    }
}

/// Private-use characters that cannot occur in model output (decoded text) of the chat turns.
const MARK_OPEN: char = '\u{F8F0}';
const MARK_CLOSE: char = '\u{F8F1}';

/// One sequence for the whole trajectory. The chat is rendered with a marker in place of each
/// assistant turn; the text between markers is tokenized, and each marker is replaced by the
/// generated ids of its turn. When a response ends with an EOS id and the template writes that
/// end-of-turn token right after the turn, the template's copy is dropped.
fn trajectory_sample(
    tok: &Tokenizer,
    instructions: Option<&str>,
    t: &TrajectoryRecord,
    ti: usize,
    adv: &[f64],
) -> Result<Sample> {
    let mut messages = Vec::new();
    if let Some(i) = instructions {
        messages.push(ChatMessage::new("system", i));
    }
    for (k, s) in t.steps.iter().enumerate() {
        messages.push(ChatMessage::new(
            "user",
            user_message(&[], &s.observation, s.admissible.as_deref()),
        ));
        messages.push(ChatMessage::new(
            "assistant",
            format!("{MARK_OPEN}{k}{MARK_CLOSE}"),
        ));
    }
    let text = if tok.has_chat_template() {
        tok.apply_chat(&messages, false)?
    } else {
        plain_chat(&messages)
    };
    let mut tokens: Vec<u32> = Vec::new();
    let mut mask: Vec<f32> = Vec::new();
    let mut advantages: Vec<f32> = Vec::new();
    let mut push = |ids: &[u32], m: f32, a: f32, tokens: &mut Vec<u32>| {
        tokens.extend_from_slice(ids);
        mask.extend(std::iter::repeat_n(m, ids.len()));
        advantages.extend(std::iter::repeat_n(a, ids.len()));
    };
    let mut rest = text.as_str();
    let mut drop_prefix: Option<String> = None;
    for (k, s) in t.steps.iter().enumerate() {
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
        push(&tok.encode(before)?, 0.0, 0.0, &mut tokens);
        push(&s.response, 1.0, adv[k] as f32, &mut tokens);
        if let Some(&last) = s.response.last() {
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
    push(&tok.encode(tail)?, 0.0, 0.0, &mut tokens);
    // Score from the first assistant token on; context before it is not trained.
    let start = mask
        .iter()
        .position(|&m| m > 0.0)
        .unwrap_or(tokens.len())
        .max(1);
    Ok(Sample {
        mask: mask[start..].to_vec(),
        advantages: advantages[start..].to_vec(),
        tokens,
        start,
        trajectory: ti,
    })
}

/// A chat as plain text for tokenizers without a template.
fn plain_chat(messages: &[ChatMessage]) -> String {
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
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::step_prompt_text;
    use crate::rollout::StepRecord;

    fn step(tok: &Tokenizer, obs: &str, response: &str, eos: bool, reward: f64) -> StepRecord {
        let mut ids = tok.encode(response).unwrap();
        if eos {
            ids.push(tok.eos_ids()[0]);
        }
        let user = user_message(&[], obs, None);
        let prompt = tok
            .encode(&step_prompt_text(tok, Some("Play."), &user).unwrap())
            .unwrap();
        StepRecord {
            prompt,
            logprobs: vec![0.0; ids.len()],
            response: ids,
            observation: obs.into(),
            admissible: None,
            action_text: response.into(),
            anchor: obs.into(),
            reward,
            action_valid: true,
            won: false,
            terminated: false,
            truncated: false,
            fault: None,
        }
    }

    fn rollout(tok: &Tokenizer) -> Rollout {
        let t = |member, steps| TrajectoryRecord {
            group: 0,
            member,
            seed: 1,
            steps,
        };
        Rollout {
            trajectories: vec![
                t(
                    0,
                    vec![
                        step(tok, "s0", "up", true, -0.1),
                        step(tok, "s1", "left", true, 10.0),
                    ],
                ),
                t(
                    1,
                    vec![
                        step(tok, "s0", "down", false, -0.1),
                        step(tok, "s2", "<action>right</action>", true, -0.1),
                        step(tok, "s0", "up", true, -0.1),
                    ],
                ),
                t(2, vec![]),
            ],
            instructions: Some("Play.".into()),
            faults: 0,
            generated_tokens: 0,
            prompt_tokens: 0,
            seconds: 0.0,
        }
    }

    /// (token, advantage) of every trained token, per trajectory, in order.
    fn trained(samples: &[Sample]) -> Vec<Vec<(u32, f32)>> {
        let mut out: Vec<Vec<(u32, f32)>> = vec![Vec::new(); 3];
        for s in samples {
            for (k, (&m, &a)) in s.mask.iter().zip(&s.advantages).enumerate() {
                if m > 0.0 {
                    out[s.trajectory].push((s.tokens[s.start + k], a));
                }
            }
        }
        out
    }

    #[test]
    fn both_layouts_give_every_action_token_the_same_advantage() {
        let tok = Tokenizer::tiny().unwrap();
        let r = rollout(&tok);
        let adv = advantages(&r, &AdvantageConfig::default()).unwrap();
        let a: Vec<f64> = adv.steps.iter().map(|s| s.advantage).collect();
        assert_eq!(a.len(), 5);
        let step = build_samples(&tok, &r, &a, SampleLayout::Step).unwrap();
        let traj = build_samples(&tok, &r, &a, SampleLayout::Trajectory).unwrap();
        assert_eq!(step.len(), 5);
        assert_eq!(traj.len(), 2);
        let (ts, tt) = (trained(&step), trained(&traj));
        assert_eq!(ts, tt);
        // Every response token is there, with its step's advantage.
        let expect: Vec<(u32, f32)> = r.trajectories[1]
            .steps
            .iter()
            .zip(&a[2..])
            .flat_map(|(s, &v)| s.response.iter().map(move |&id| (id, v as f32)))
            .collect();
        assert_eq!(ts[1], expect);
        // The step advantage distinguishes the two visits of s0 that led to different returns.
        assert_ne!(a[0], a[2]);
    }

    #[test]
    fn trajectory_layout_is_the_rendered_chat_without_duplicate_end_of_turn() {
        let tok = Tokenizer::tiny().unwrap();
        let r = rollout(&tok);
        let a = vec![0.0; 5];
        let traj = build_samples(&tok, &r, &a, SampleLayout::Trajectory).unwrap();
        let text = tok.decode_raw(&traj[0].tokens).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nPlay.<|im_end|>\n<|im_start|>user\nCurrent observation:\ns0<|im_end|>\n<|im_start|>assistant\nup<|im_end|>\n<|im_start|>user\nCurrent observation:\ns1<|im_end|>\n<|im_start|>assistant\nleft<|im_end|>\n"
        );
        // A response cut off without EOS keeps the template's end-of-turn token (untrained).
        let text = tok.decode_raw(&traj[1].tokens).unwrap();
        assert!(
            text.contains("assistant\ndown<|im_end|>\n<|im_start|>user"),
            "{text}"
        );
        // Context before the first assistant token is not scored.
        assert_eq!(traj[0].mask[0], 1.0);
    }
}
