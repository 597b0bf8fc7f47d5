//! From step advantages to training sequences: the two sample layouts of SPEC §2.
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

use gigpo_core::{compute, AdvantageConfig, Advantages, BatchBuilder, StepInput};

use crate::config::SampleLayout;
use crate::error::{Result, TrainError};
use crate::rollout::{Rollout, StepRecord, TrajectoryRecord};

/// One training sequence with everything the loss needs of it.
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
    /// log π of each scored position under the behaviour policy at sampling time (0 where
    /// `mask` is 0).
    pub behaviour: Vec<f32>,
    /// The trajectory (index into `Rollout::trajectories`) it came from.
    pub trajectory: usize,
}

impl Sample {
    /// Number of scored positions.
    pub fn scored_len(&self) -> usize {
        self.tokens.len() - self.start
    }
}

/// Whether a step takes part in advantages and loss: its environment did not fault.
fn counted(s: &StepRecord) -> bool {
    s.fault.is_none()
}

/// Computes the advantages of every step of `rollout` whose environment did not fault (group =
/// episode group, trajectory = member) and stores each in its step's `advantage`.
pub fn assign_advantages(rollout: &mut Rollout, cfg: &AdvantageConfig) -> Result<Advantages> {
    let mut b = BatchBuilder::new();
    let kept = |t: &TrajectoryRecord| t.steps.iter().any(counted);
    for t in rollout.trajectories.iter().filter(|t| kept(t)) {
        let steps = t.steps.iter().filter(|s| counted(s)).map(|s| StepInput {
            anchor: &s.anchor,
            reward: s.reward,
            action_valid: s.action_valid,
        });
        b.push_trajectory(&format!("g{}", t.group), &format!("t{}", t.member), steps)?;
    }
    let adv = compute(&b.build(), cfg)?;
    let mut values = adv.steps.iter().map(|s| s.advantage);
    for t in rollout.trajectories.iter_mut().filter(|t| kept(t)) {
        for s in t.steps.iter_mut().filter(|s| counted(s)) {
            s.advantage =
                Some(values.next().ok_or_else(|| {
                    TrainError::config("advantages", "fewer advantages than steps")
                })?);
        }
    }
    Ok(adv)
}

/// The samples of `rollout` under `layout` (advantages assigned by [`assign_advantages`]).
/// Steps with an empty response or no advantage give no trained token.
pub fn build_samples(rollout: &Rollout, layout: SampleLayout) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (ti, t) in rollout.trajectories.iter().enumerate() {
        match layout {
            SampleLayout::Step => step_samples(t, ti, &mut out),
            SampleLayout::Trajectory => {
                if let Some(s) = trajectory_sample(t, ti)? {
                    out.push(s);
                }
            }
        }
    }
    Ok(out)
}

fn step_samples(t: &TrajectoryRecord, ti: usize, out: &mut Vec<Sample>) {
    for s in &t.steps {
        let Some(a) = s.advantage else { continue };
        if s.response.is_empty() || s.prompt.is_empty() {
            continue;
        }
        let n = s.response.len();
        out.push(Sample {
            tokens: [s.prompt.as_slice(), &s.response].concat(),
            start: s.prompt.len(),
            mask: vec![1.0; n],
            advantages: vec![a as f32; n],
            behaviour: s.logprobs.clone(),
            trajectory: ti,
        });
    }
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
    let n = tokens.len() - start;
    let (mut mask, mut advantages, mut behaviour) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for (k, s) in t.steps.iter().enumerate() {
        let end = s.prompt.len() + s.response.len();
        if end > tokens.len() || tokens[..end] != [s.prompt.as_slice(), &s.response].concat() {
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
            mask[at] = 1.0;
            advantages[at] = a as f32;
            behaviour[at] = lp;
        }
    }
    if !mask.iter().any(|&m| m > 0.0) {
        return Ok(None);
    }
    Ok(Some(Sample {
        tokens,
        start,
        mask,
        advantages,
        behaviour,
        trajectory: ti,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{HistoryAction, PromptStyle};
    use crate::rollout::{next_prompt, PastTurn};
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
        let adv = assign_advantages(&mut step_rollout, &cfg).unwrap();
        assign_advantages(&mut chat_rollout, &cfg).unwrap();
        let a: Vec<f64> = adv.steps.iter().map(|s| s.advantage).collect();
        assert_eq!(a.len(), 5);
        let step = build_samples(&step_rollout, SampleLayout::Step).unwrap();
        let traj = build_samples(&chat_rollout, SampleLayout::Trajectory).unwrap();
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
        assign_advantages(&mut r, &AdvantageConfig::default()).unwrap();
        let traj = build_samples(&r, SampleLayout::Trajectory).unwrap();
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
        let adv = assign_advantages(&mut r, &AdvantageConfig::default()).unwrap();
        assert_eq!(adv.steps.len(), 4);
        assert_eq!(r.trajectories[1].steps[2].advantage, None);
        let step = build_samples(&r, SampleLayout::Step).unwrap();
        assert_eq!(step.len(), 4);
        // The faulted step's reward 0 did not enter the episode return of trajectory 1.
        let mut clean = rollout(&tok, false, &plan());
        clean.trajectories[1].steps.pop();
        let adv_clean = assign_advantages(&mut clean, &AdvantageConfig::default()).unwrap();
        let a: Vec<f64> = adv.steps.iter().map(|s| s.advantage).collect();
        let b: Vec<f64> = adv_clean.steps.iter().map(|s| s.advantage).collect();
        assert_eq!(a, b);
    }
}
