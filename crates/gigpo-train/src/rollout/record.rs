//! What a rollout records: every step of every episode, and what the trainer derives from it
//! (statistics, the advantage batch, each step's advantage).

use gigpo_core::{compute, AdvantageConfig, Advantages, Batch, BatchBuilder, StepInput, TrajId};
use gigpo_env::action::{extract_action, ActionFormat};
use serde::Serialize;

use crate::error::Result;
use crate::prompt::PastTurn;

/// One environment step as the trainer records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRecord {
    /// The prompt token ids the action was sampled from (with the chat style: the running
    /// chat so far, so each step's prompt is a prefix of the next one's).
    pub prompt: Vec<u32>,
    /// The user message of this turn (the observation, admissible actions and history).
    pub user: String,
    /// The generated token ids (EOS included when drawn).
    pub response: Vec<u32>,
    /// log π_old of each response token at sampling time.
    pub logprobs: Vec<f32>,
    /// The observation text the action was taken from.
    pub observation: String,
    /// The admissible actions listed in the prompt.
    pub admissible: Option<Vec<String>>,
    /// The generated text (special tokens left out), as given to the environment.
    pub action_text: String,
    /// The anchor key of the state the action was taken from (docs/advantages.md).
    pub anchor: String,
    /// The environment's reward.
    pub reward: f64,
    /// Whether the environment could parse the action.
    pub action_valid: bool,
    /// The episode was won with this step.
    pub won: bool,
    /// The episode reached a terminal state with this step.
    pub terminated: bool,
    /// The episode was cut off after this step (environment limit, trainer limit or a fault of
    /// the environment or the sampler).
    pub truncated: bool,
    /// An environment fault during this step, or a sampler fault (`sampler: …`, then the step
    /// has no response); the step is left out of advantages and loss.
    pub fault: Option<String>,
    /// The step's advantage, once computed ([`Rollout::assign_advantages`]); `None` for a
    /// faulted step.
    pub advantage: Option<f64>,
}

/// One episode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrajectoryRecord {
    /// The episode group (all members started from `seed`).
    pub group: usize,
    /// The member within the group.
    pub member: usize,
    /// The level seed.
    pub seed: u64,
    /// The steps, in order.
    pub steps: Vec<StepRecord>,
}

impl StepRecord {
    /// Whether the step takes part in advantages and loss: neither its environment nor the
    /// sampler faulted.
    pub fn counted(&self) -> bool {
        self.fault.is_none()
    }

    /// The step's action as a key for the diagnostics (docs/metrics.md): when the environment
    /// parsed it, the action the answer names (inside `<action>…</action>`, or the bare
    /// answer), trimmed and in lower case, as the environment applied it; else the whole
    /// generated text, so two unparsable answers are one action only when they are one text.
    pub fn action_key(&self) -> String {
        match extract_action(&self.action_text, ActionFormat::TaggedOrBare) {
            Some(action) if self.action_valid => action.trim().to_ascii_lowercase(),
            _ => self.action_text.clone(),
        }
    }
}

impl TrajectoryRecord {
    /// The steps that take part in advantages and loss.
    pub fn counted_steps(&self) -> impl Iterator<Item = &StepRecord> {
        self.steps.iter().filter(|s| s.counted())
    }

    fn counted_steps_mut(&mut self) -> impl Iterator<Item = &mut StepRecord> {
        self.steps.iter_mut().filter(|s| s.counted())
    }

    /// Whether a step won the episode.
    pub fn won(&self) -> bool {
        self.steps.iter().any(|s| s.won)
    }

    /// Undiscounted sum of the environment's rewards.
    pub fn total_reward(&self) -> f64 {
        self.steps.iter().map(|s| s.reward).sum()
    }
}

/// The episodes of one collection and what it cost.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// Trajectories in group-then-member order (a trajectory whose reset faulted has no steps).
    pub trajectories: Vec<TrajectoryRecord>,
    /// The instructions at the top of every prompt, if any.
    pub instructions: Option<String>,
    /// Environment faults during the collection.
    pub faults: u64,
    /// Episodes ended because the sampler could not answer their prompt (an inference server
    /// that failed).
    pub sampler_faults: u64,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Summary statistics of a set of episodes (training rollouts and evaluations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EpisodeStats {
    /// Episodes with at least one step.
    pub episodes: usize,
    /// Share of those episodes that were won.
    pub success_rate: f64,
    /// Mean undiscounted return.
    pub mean_return: f64,
    /// Mean episode length.
    pub episode_length: f64,
    /// Share of steps whose action could not be parsed.
    pub invalid_action_rate: f64,
}

impl Rollout {
    /// Success rate, mean return, mean length and invalid-action rate over trajectories with at
    /// least one step.
    pub fn stats(&self) -> EpisodeStats {
        let eps: Vec<&TrajectoryRecord> = self
            .trajectories
            .iter()
            .filter(|t| !t.steps.is_empty())
            .collect();
        let n = eps.len().max(1) as f64;
        let steps: usize = eps.iter().map(|t| t.steps.len()).sum();
        let invalid = eps
            .iter()
            .flat_map(|t| &t.steps)
            .filter(|s| !s.action_valid)
            .count();
        EpisodeStats {
            episodes: eps.len(),
            success_rate: self.wins() as f64 / n,
            mean_return: eps.iter().map(|t| t.total_reward()).sum::<f64>() / n,
            episode_length: steps as f64 / n,
            invalid_action_rate: if steps == 0 {
                0.0
            } else {
                invalid as f64 / steps as f64
            },
        }
    }

    /// Episodes won.
    pub fn wins(&self) -> usize {
        self.trajectories.iter().filter(|t| t.won()).count()
    }

    /// Environment steps taken (faulted ones included).
    pub fn steps(&self) -> usize {
        self.trajectories.iter().map(|t| t.steps.len()).sum()
    }

    /// Steps whose environment or sampler faulted.
    pub fn faulted_steps(&self) -> usize {
        self.trajectories
            .iter()
            .flat_map(|t| &t.steps)
            .filter(|s| !s.counted())
            .count()
    }

    /// The advantage batch of the steps that count (group = episode group, trajectory =
    /// member, each step with its [`StepRecord::action_key`]), with each trajectory's id in it
    /// (`None` for one without a counted step).
    pub fn to_batch(&self) -> Result<(Batch, Vec<Option<TrajId>>)> {
        let mut b = BatchBuilder::new();
        let mut ids = Vec::with_capacity(self.trajectories.len());
        for t in &self.trajectories {
            if !t.steps.iter().any(StepRecord::counted) {
                ids.push(None);
                continue;
            }
            let keyed: Vec<(&StepRecord, String)> =
                t.counted_steps().map(|s| (s, s.action_key())).collect();
            let steps = keyed.iter().map(|(s, action)| StepInput {
                anchor: &s.anchor,
                reward: s.reward,
                action_valid: s.action_valid,
                action: Some(action),
            });
            ids.push(Some(b.push_numbered(t.group, t.member, steps)?));
        }
        Ok((b.build(), ids))
    }

    /// Computes the advantages of every step that counts and stores each in its step's
    /// `advantage`.
    pub fn assign_advantages(&mut self, cfg: &AdvantageConfig) -> Result<Advantages> {
        let (batch, ids) = self.to_batch()?;
        let adv = compute(&batch, cfg)?;
        for (t, id) in self.trajectories.iter_mut().zip(ids) {
            let Some(id) = id else { continue };
            let values = &adv.steps[batch.trajectories()[id.index()].steps.clone()];
            for (s, v) in t.counted_steps_mut().zip(values) {
                s.advantage = Some(v.advantage);
            }
        }
        Ok(adv)
    }
}

impl<'a> From<&'a StepRecord> for PastTurn<'a> {
    fn from(s: &'a StepRecord) -> Self {
        Self {
            user: &s.user,
            response: &s.response,
            observation: &s.observation,
            action_text: &s.action_text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step from `anchor` whose answer was `text`.
    fn step(anchor: &str, text: &str, valid: bool, reward: f64) -> StepRecord {
        StepRecord {
            prompt: vec![1],
            user: anchor.into(),
            response: vec![2],
            logprobs: vec![-0.5],
            observation: anchor.into(),
            admissible: None,
            action_text: text.into(),
            anchor: anchor.into(),
            reward,
            action_valid: valid,
            won: false,
            terminated: false,
            truncated: false,
            fault: None,
            advantage: None,
        }
    }

    #[test]
    fn the_action_key_is_the_applied_action_or_the_raw_answer() {
        assert_eq!(step("s", " Up\n", true, 0.0).action_key(), "up");
        let tagged = step("s", "think <action>LEFT</action>", true, 0.0);
        assert_eq!(tagged.action_key(), "left");
        let raw = "jump <action>high";
        assert_eq!(step("s", raw, false, 0.0).action_key(), raw);
    }

    #[test]
    fn the_batch_carries_action_keys_into_the_diagnostics() {
        let trajectory = |member, steps| TrajectoryRecord {
            group: 0,
            member,
            seed: 1,
            steps,
        };
        let mut rollout = Rollout {
            trajectories: vec![
                trajectory(0, vec![step("s", "up", true, 1.0)]),
                trajectory(1, vec![step("s", "<action>Up</action>", true, 0.0)]),
                trajectory(2, vec![step("t", "up", true, 0.0)]),
                trajectory(3, vec![step("t", "down", true, 0.0)]),
            ],
            instructions: None,
            faults: 0,
            sampler_faults: 0,
            generated_tokens: 0,
            prompt_tokens: 0,
            seconds: 0.0,
        };
        let adv = rollout
            .assign_advantages(&AdvantageConfig::default())
            .unwrap();
        let (batch, _) = rollout.to_batch().unwrap();
        let keys: Vec<&str> = batch
            .steps()
            .iter()
            .map(|s| batch.actions().text(s.action.unwrap()))
            .collect();
        assert_eq!(keys, ["up", "up", "up", "down"]);
        // s: one action twice (distinct returns); t: two actions (equal returns).
        let d = &adv.diagnostics;
        assert_eq!(d.distinct_action_step_group_share, Some(0.5));
        assert_eq!(d.distinct_return_step_group_share, 0.5);
    }
}
