//! Evaluation on held-out levels: one episode on each of the first `episodes` evaluation seeds
//! (a range disjoint from the training seeds, see [`gigpo_env::seed`]).

use std::path::Path;

use gigpo_env::seed::{mix_seed, SeedSplit};
use gigpo_model::{Policy, SamplingParams};
use serde::Serialize;

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::error::Result;
use crate::metrics::{names, Record};
use crate::rollout::{collect, EpisodeStats, RolloutPlan};
use crate::trainer::initial_policy;

/// Stream constant of the evaluation sampling seed.
pub const EVAL_STREAM: u64 = 0x6576_616c; // "eval"

/// The outcome of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalResult {
    /// Held-out episodes played.
    pub episodes: usize,
    /// Share of episodes won.
    pub success_rate: f64,
    /// Mean undiscounted return.
    pub mean_return: f64,
    /// Mean episode length.
    pub episode_length: f64,
    /// Share of steps whose action could not be parsed.
    pub invalid_action_rate: f64,
}

impl From<EpisodeStats> for EvalResult {
    fn from(s: EpisodeStats) -> Self {
        Self {
            episodes: s.episodes,
            success_rate: s.success_rate,
            mean_return: s.mean_return,
            episode_length: s.episode_length,
            invalid_action_rate: s.invalid_action_rate,
        }
    }
}

impl EvalResult {
    /// Adds the `eval/*` metrics to a record.
    pub fn insert_into(&self, rec: &mut Record) {
        rec.insert(names::EVAL_SUCCESS.into(), self.success_rate);
        rec.insert(names::EVAL_RETURN.into(), self.mean_return);
        rec.insert(names::EVAL_LENGTH.into(), self.episode_length);
        rec.insert(names::EVAL_INVALID.into(), self.invalid_action_rate);
    }
}

/// Plays one episode on each of `episodes` held-out levels with `temperature` (0 = greedy).
pub fn evaluate(
    policy: &Policy,
    cfg: &TrainConfig,
    episodes: usize,
    temperature: f64,
) -> Result<EvalResult> {
    let seeds = SeedSplit::new(cfg.seed).eval_seeds(episodes);
    let sampling = SamplingParams {
        temperature,
        max_new_tokens: cfg.max_new_tokens(),
        ..SamplingParams::default()
    };
    let plan = RolloutPlan {
        env: &cfg.env,
        seeds: &seeds,
        group_size: 1,
        max_steps: cfg.rollout.max_steps,
        history_length: cfg.history_length(),
        instructions: cfg.instructions(),
        sampling: &sampling,
        sample_seed: mix_seed(cfg.seed ^ EVAL_STREAM, 0),
    };
    Ok(collect(policy, &plan)?.stats().into())
}

/// Loads the policy of a checkpoint directory (`run_dir/checkpoints/iter-N`) with its
/// configuration.
pub fn load_checkpoint(dir: &Path) -> Result<(Policy, TrainConfig)> {
    let cfg = TrainConfig::from_file(&dir.join("config.toml"))?;
    let policy = initial_policy(&cfg)?;
    checkpoint::load_trainable(dir, &policy)?;
    Ok((policy, cfg))
}
