//! From step advantages to training sequences: the two sample layouts (docs/training.md).
//!
//! - [`SampleLayout::Step`]: one sample per environment step; tokens = the step's prompt followed
//!   by its response; every response token gets A_t.
//! - [`SampleLayout::Trajectory`]: one sequence per trajectory, the running chat the last turn
//!   was sampled from followed by that turn's response; the mask is 1 on the responses only,
//!   and the tokens of turn t get A_t. Each turn's prompt is a prefix of this sequence, so every
//!   token is scored in the context it was sampled in.
//!
//! In both layouts the trained tokens are exactly the generated ids, so every action token
//! appears once with its step's advantage, in the same order. Steps whose environment faulted
//! have no advantage and are not trained on.
//!
//! A [`Sample`] carries everything the loss reads of it: its advantages, the log-probabilities
//! it was sampled with, and, once scored, log π_old and log π_ref.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::rollout::{Rollout, TrajectoryRecord};

/// How steps become training sequences (`sample_layout`, docs/training.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleLayout {
    /// One sample per environment step: its prompt and its response; every response token
    /// gets A_t.
    #[default]
    Step,
    /// One sequence per trajectory; assistant tokens of turn t get A_t, the rest is masked.
    Trajectory,
}

/// One training sequence with everything the loss needs of it. Every per-token vector has one
/// entry per scored position (`tokens.len() − start`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The whole token sequence.
    pub tokens: Vec<u32>,
    /// Index of the first scored token (≥ 1); tokens before it are context only.
    pub start: usize,
    /// 1 for trained tokens, 0 for context.
    pub mask: Vec<f32>,
    /// The advantage of each scored position.
    pub advantages: Vec<f32>,
    /// log π of each scored position under the behaviour policy at sampling time (0 where
    /// `mask` is 0).
    pub behaviour: Vec<f32>,
    /// log π_old of each scored position, the denominator of the ratio: the behaviour
    /// log-probabilities until [`crate::update::score_samples`] recomputes them.
    pub old: Vec<f32>,
    /// log π_ref of each scored position, when the loss has a KL term (set by
    /// [`crate::update::score_samples`]).
    pub reference: Option<Vec<f32>>,
    /// The trajectory (index into `Rollout::trajectories`) it came from.
    pub trajectory: usize,
}

impl Sample {
    /// A sample whose π_old is the behaviour policy; the reference is not scored yet.
    fn new(tokens: Vec<u32>, start: usize, trained: Trained, trajectory: usize) -> Self {
        Self {
            tokens,
            start,
            mask: trained.mask,
            advantages: trained.advantages,
            old: trained.behaviour.clone(),
            behaviour: trained.behaviour,
            reference: None,
            trajectory,
        }
    }

    /// Number of scored positions.
    pub fn scored_len(&self) -> usize {
        self.tokens.len() - self.start
    }

    /// Number of trained tokens.
    pub fn trained_tokens(&self) -> f32 {
        self.mask.iter().sum()
    }

    /// Whether any token is trained.
    pub fn is_trained(&self) -> bool {
        self.mask.iter().any(|&m| m > 0.0)
    }
}

/// The per-position mask, advantages and behaviour log-probabilities of a sample.
struct Trained {
    mask: Vec<f32>,
    advantages: Vec<f32>,
    behaviour: Vec<f32>,
}

impl Trained {
    fn zeros(n: usize) -> Self {
        Self {
            mask: vec![0.0; n],
            advantages: vec![0.0; n],
            behaviour: vec![0.0; n],
        }
    }
}

impl Rollout {
    /// The samples of this rollout under `layout` (advantages assigned by
    /// [`Rollout::assign_advantages`]). Steps with an empty response or no advantage give no
    /// trained token.
    pub fn samples(&self, layout: SampleLayout) -> Result<Vec<Sample>> {
        let mut out = Vec::new();
        for (ti, t) in self.trajectories.iter().enumerate() {
            match layout {
                SampleLayout::Step => out.extend(step_samples(t, ti)),
                SampleLayout::Trajectory => out.extend(trajectory_sample(t, ti)?),
            }
        }
        Ok(out)
    }
}

fn step_samples(t: &TrajectoryRecord, ti: usize) -> impl Iterator<Item = Sample> + '_ {
    t.steps.iter().filter_map(move |s| {
        let a = s.advantage?;
        if s.response.is_empty() || s.prompt.is_empty() {
            return None;
        }
        let n = s.response.len();
        let trained = Trained {
            mask: vec![1.0; n],
            advantages: vec![a as f32; n],
            behaviour: s.logprobs.clone(),
        };
        let tokens = [s.prompt.as_slice(), &s.response].concat();
        Some(Sample::new(tokens, s.prompt.len(), trained, ti))
    })
}

/// One sequence for the whole trajectory: the last turn's prompt (the running chat) and
/// response. Every earlier turn's prompt must be a prefix of it; its response follows the
/// prefix. `None` when no step is trained.
fn trajectory_sample(t: &TrajectoryRecord, ti: usize) -> Result<Option<Sample>> {
    let Some(last) = t.steps.last() else {
        return Ok(None);
    };
    let tokens = [last.prompt.as_slice(), &last.response].concat();
    let Some(first) = t.steps.iter().find(|s| !s.response.is_empty()) else {
        return Ok(None);
    };
    let start = first.prompt.len().max(1);
    let mut trained = Trained::zeros(tokens.len() - start);
    for (k, s) in t.steps.iter().enumerate() {
        let (p, end) = (s.prompt.len(), s.prompt.len() + s.response.len());
        if end > tokens.len() || tokens[..p] != s.prompt[..] || tokens[p..end] != s.response[..] {
            return Err(TrainError::config(
                "sample_layout",
                format!(
                    "trajectory {ti}, step {k}: its prompt and response are not a prefix of the last turn's chat (the chat template renders earlier turns differently)"
                ),
            ));
        }
        let Some(a) = s.advantage else { continue };
        for (j, &lp) in s.logprobs.iter().enumerate() {
            let at = s.prompt.len() + j - start;
            trained.mask[at] = 1.0;
            trained.advantages[at] = a as f32;
            trained.behaviour[at] = lp;
        }
    }
    let sample = Sample::new(tokens, start, trained, ti);
    Ok(sample.is_trained().then_some(sample))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{next_prompt, PastTurn};
    use crate::prompt::{HistoryAction, PromptStyle};
    use crate::rollout::StepRecord;
    use gigpo_core::AdvantageConfig;
    use gigpo_env::Observation;
    use gigpo_model::Tokenizer;

    /// (observation, response text, EOS drawn, reward) of each step of each trajectory.
    type Plan = Vec<Vec<(&'static str, &'static str, bool, f64)>>;

    fn plan() -> Plan {
        vec![
            vec![("s0", "up", true, -0.1), ("s1", "left", true, 10.0)],
            vec![
                ("s0", "down", false, -0.1),
                ("s2", "<action>right</action>", true, -0.1),
                ("s0", "up", true, -0.1),
            ],
            vec![],
        ]
    }

    /// The rollout of `plan` with prompts built in `chat` style, as `collect` builds them.
    fn rollout(tok: &Tokenizer, chat: bool, plan: &Plan) -> Rollout {
        let style = PromptStyle {
            chat,
            history_length: 0,
            history_action: HistoryAction::Parsed,
            instructions: true,
            system_prompt: None,
            response_prefix: String::new(),
        };
        let mut trajectories = Vec::new();
        for (member, steps) in plan.iter().enumerate() {
            let mut records: Vec<StepRecord> = Vec::new();
            for &(obs, text, eos, reward) in steps {
                let o = Observation {
                    text: obs.into(),
                    anchor: obs.into(),
                    admissible_actions: None,
                };
                let past: Vec<PastTurn<'_>> = records.iter().map(Into::into).collect();
                let (user, prompt) = next_prompt(tok, &style, Some("Play."), &past, &o).unwrap();
                let mut ids = tok.encode(text).unwrap();
                if eos {
                    ids.push(tok.eos_ids()[0]);
                }
                records.push(StepRecord {
                    prompt,
                    user,
                    logprobs: (0..ids.len()).map(|j| -(j as f32) - 0.5).collect(),
                    response: ids,
                    observation: obs.into(),
                    admissible: None,
                    action_text: text.into(),
                    anchor: obs.into(),
                    reward,
                    action_valid: true,
                    won: false,
                    terminated: false,
                    truncated: false,
                    fault: None,
                    advantage: None,
                });
            }
            trajectories.push(TrajectoryRecord {
                group: 0,
                member,
                seed: 1,
                steps: records,
            });
        }
        Rollout {
            trajectories,
            instructions: Some("Play.".into()),
            faults: 0,
            sampler_faults: 0,
            generated_tokens: 0,
            prompt_tokens: 0,
            seconds: 0.0,
        }
    }

    /// (token, advantage, behaviour log-probability) of every trained token, per trajectory.
    fn trained(samples: &[Sample]) -> Vec<Vec<(u32, f32, f32)>> {
        let mut out: Vec<Vec<(u32, f32, f32)>> = vec![Vec::new(); 3];
        for s in samples {
            for (k, &m) in s.mask.iter().enumerate() {
                if m > 0.0 {
                    let t = (s.tokens[s.start + k], s.advantages[k], s.behaviour[k]);
                    out[s.trajectory].push(t);
                }
            }
        }
        out
    }

    #[test]
    fn both_layouts_give_every_action_token_the_same_advantage() {
        let tok = Tokenizer::tiny().unwrap();
        let mut step_rollout = rollout(&tok, false, &plan());
        let mut chat_rollout = rollout(&tok, true, &plan());
        let cfg = AdvantageConfig::default();
        let adv = step_rollout.assign_advantages(&cfg).unwrap();
        chat_rollout.assign_advantages(&cfg).unwrap();
        let a: Vec<f64> = adv.steps.iter().map(|s| s.advantage).collect();
        assert_eq!(a.len(), 5);
        let step = step_rollout.samples(SampleLayout::Step).unwrap();
        let traj = chat_rollout.samples(SampleLayout::Trajectory).unwrap();
        assert_eq!(step.len(), 5);
        assert_eq!(traj.len(), 2);
        let (ts, tt) = (trained(&step), trained(&traj));
        assert_eq!(ts, tt);
        // Every response token is there, with its step's advantage and sampling log-prob.
        let expect: Vec<(u32, f32, f32)> = step_rollout.trajectories[1]
            .steps
            .iter()
            .zip(&a[2..])
            .flat_map(|(s, &v)| {
                s.response
                    .iter()
                    .zip(&s.logprobs)
                    .map(move |(&id, &lp)| (id, v as f32, lp))
            })
            .collect();
        assert_eq!(ts[1], expect);
        // The step advantage distinguishes the two visits of s0 that led to different returns.
        assert_ne!(a[0], a[2]);
    }

    #[test]
    fn trajectory_sample_is_the_chat_each_turn_was_sampled_from() {
        let tok = Tokenizer::tiny().unwrap();
        let mut r = rollout(&tok, true, &plan());
        r.assign_advantages(&AdvantageConfig::default()).unwrap();
        let traj = r.samples(SampleLayout::Trajectory).unwrap();
        let text = tok.decode_raw(&traj[0].tokens).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nPlay.<|im_end|>\n<|im_start|>user\nCurrent observation:\ns0<|im_end|>\n<|im_start|>assistant\nup<|im_end|>\n<|im_start|>user\nCurrent observation:\ns1<|im_end|>\n<|im_start|>assistant\nleft<|im_end|>"
        );
        // Each turn's prompt is a prefix of the sample: it was sampled from these tokens.
        for s in &r.trajectories[1].steps {
            assert!(traj[1].tokens.starts_with(&s.prompt));
        }
        // A response cut off without EOS keeps the template's end-of-turn token (untrained).
        let text = tok.decode_raw(&traj[1].tokens).unwrap();
        assert!(
            text.contains("assistant\ndown<|im_end|>\n<|im_start|>user"),
            "{text}"
        );
        assert_eq!(traj[0].mask[0], 1.0);
    }

    #[test]
    fn faulted_steps_get_no_advantage_and_no_sample() {
        let tok = Tokenizer::tiny().unwrap();
        let mut r = rollout(&tok, false, &plan());
        r.trajectories[1].steps[2].fault = Some("timeout".into());
        r.trajectories[1].steps[2].reward = 0.0;
        let adv = r.assign_advantages(&AdvantageConfig::default()).unwrap();
        assert_eq!(adv.steps.len(), 4);
        assert_eq!(r.trajectories[1].steps[2].advantage, None);
        let step = r.samples(SampleLayout::Step).unwrap();
        assert_eq!(step.len(), 4);
        // The faulted step's reward 0 did not enter the episode return of trajectory 1.
        let mut clean = rollout(&tok, false, &plan());
        clean.trajectories[1].steps.pop();
        let adv_clean = clean
            .assign_advantages(&AdvantageConfig::default())
            .unwrap();
        let a: Vec<f64> = adv.steps.iter().map(|s| s.advantage).collect();
        let b: Vec<f64> = adv_clean.steps.iter().map(|s| s.advantage).collect();
        assert_eq!(a, b);
    }
}
