//! Evaluation on held-out levels (SPEC §4): the policy sampled and greedy, beside a uniformly
//! random policy over the admissible actions and the optimal solver, all on the same levels.
//!
//! The levels are the run's held-out set ([`HeldOut`]): the first `eval.levels` evaluation
//! seeds, which training never resets to (compared by content). Each level is played once per
//! policy mode; success rates carry a 95 % Wilson interval over levels.

use std::path::Path;

use gigpo_env::levels::{optimal_success, random_success, HeldOut};
use gigpo_env::seed::{mix_seed, SeedSplit};
use gigpo_model::{Policy, SamplingParams};
use serde::Serialize;

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::metrics::{names, Record};
use crate::rollout::{collect, RolloutPlan};
use crate::sampler::Sampler;
use crate::trainer::initial_policy;

/// Stream constant of the evaluation sampling seed.
pub const EVAL_STREAM: u64 = 0x6576_616c; // "eval"
/// Stream constant of the random baseline.
pub const RANDOM_STREAM: u64 = 0x7261_6e64; // "rand"

/// A success rate over `n` levels with its 95 % Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// Share of levels won.
    pub rate: f64,
    /// Lower end of the 95 % interval.
    pub low: f64,
    /// Upper end of the 95 % interval.
    pub high: f64,
}

impl Rate {
    /// `wins` of `n` with the Wilson interval (z = 1.96); `n = 0` gives 0 with [0, 1].
    pub fn wilson(wins: usize, n: usize) -> Self {
        if n == 0 {
            return Self {
                rate: 0.0,
                low: 0.0,
                high: 1.0,
            };
        }
        let (p, n) = (wins as f64 / n as f64, n as f64);
        let z2 = 1.96f64 * 1.96;
        let denom = 1.0 + z2 / n;
        let center = (p + z2 / (2.0 * n)) / denom;
        let half = 1.96 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
        Self {
            rate: p,
            low: (center - half).max(0.0),
            high: (center + half).min(1.0),
        }
    }
}

/// How one policy mode did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyEval {
    /// Sampling temperature (0 = greedy).
    pub temperature: f64,
    /// Success over the levels, with its interval.
    pub success: Rate,
    /// Mean undiscounted return.
    pub mean_return: f64,
    /// Mean episode length.
    pub episode_length: f64,
    /// Share of steps whose action could not be parsed.
    pub invalid_action_rate: f64,
}

/// The baselines of a set of levels; computed once per run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baselines {
    /// Mean over levels of the random policy's success (`eval.random_rollouts` episodes per
    /// level); `None` when the environment lists no admissible actions or is remote.
    pub random_success_rate: Option<f64>,
    /// Share of levels the optimal solver wins within the step limit; `None` without a solver.
    pub optimal_success_rate: Option<f64>,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalResult {
    /// Held-out levels played (one episode each per mode).
    pub levels: usize,
    /// The policy sampled at `eval.temperature` (with `eval.top_p` / `eval.top_k`).
    pub sampled: PolicyEval,
    /// The policy at temperature 0, when `eval.greedy` is on.
    pub greedy: Option<PolicyEval>,
    /// The baselines on the same levels.
    pub baselines: Baselines,
}

impl EvalResult {
    /// The sampled policy's success rate.
    pub fn success_rate(&self) -> f64 {
        self.sampled.success.rate
    }

    /// Adds the `eval/*` metrics to a record.
    pub fn insert_into(&self, rec: &mut Record) {
        let mut put = |k: &str, v: f64| {
            rec.insert(k.to_string(), v);
        };
        put(names::EVAL_LEVELS, self.levels as f64);
        let s = &self.sampled;
        put(names::EVAL_SUCCESS, s.success.rate);
        put(names::EVAL_SUCCESS_LOW, s.success.low);
        put(names::EVAL_SUCCESS_HIGH, s.success.high);
        put(names::EVAL_RETURN, s.mean_return);
        put(names::EVAL_LENGTH, s.episode_length);
        put(names::EVAL_INVALID, s.invalid_action_rate);
        if let Some(g) = &self.greedy {
            put(names::EVAL_GREEDY_SUCCESS, g.success.rate);
            put(names::EVAL_GREEDY_SUCCESS_LOW, g.success.low);
            put(names::EVAL_GREEDY_SUCCESS_HIGH, g.success.high);
            put(names::EVAL_GREEDY_RETURN, g.mean_return);
            put(names::EVAL_GREEDY_INVALID, g.invalid_action_rate);
        }
        if let Some(r) = self.baselines.random_success_rate {
            put(names::EVAL_RANDOM_SUCCESS, r);
        }
        if let Some(o) = self.baselines.optimal_success_rate {
            put(names::EVAL_OPTIMAL_SUCCESS, o);
        }
    }

    /// One line for people: policy sampled and greedy with intervals, and the baselines.
    pub fn summary(&self) -> String {
        let r = |p: &PolicyEval| {
            format!(
                "{:.3} [{:.3}, {:.3}]",
                p.success.rate, p.success.low, p.success.high
            )
        };
        let mut s = format!("levels {}  sampled {}", self.levels, r(&self.sampled));
        if let Some(g) = &self.greedy {
            s.push_str(&format!("  greedy {}", r(g)));
        }
        let opt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
        s.push_str(&format!(
            "  random {}  optimal {}",
            opt(self.baselines.random_success_rate),
            opt(self.baselines.optimal_success_rate)
        ));
        s
    }
}

/// The held-out levels of a run and their baselines.
#[derive(Debug, Clone)]
pub struct Evaluator {
    held_out: HeldOut,
    baselines: Baselines,
}

impl Evaluator {
    /// The run's held-out set (`eval.levels` levels) with its baselines.
    pub fn new(cfg: &TrainConfig) -> Result<Self> {
        let held_out = HeldOut::new(&cfg.env, SeedSplit::new(cfg.seed), cfg.eval.levels)?;
        let baselines = baselines(cfg, held_out.seeds())?;
        Ok(Self {
            held_out,
            baselines,
        })
    }

    /// The held-out set.
    pub fn held_out(&self) -> &HeldOut {
        &self.held_out
    }

    /// The baselines.
    pub fn baselines(&self) -> &Baselines {
        &self.baselines
    }

    /// Plays every held-out level with `sampler` (the policy, or the inference servers
    /// serving it): sampled, and greedy when `eval.greedy`.
    pub fn evaluate(&self, sampler: &dyn Sampler, cfg: &TrainConfig) -> Result<EvalResult> {
        self.evaluate_first(sampler, cfg, self.held_out.seeds().len())
    }

    /// [`Evaluator::evaluate`] on the first `levels` held-out levels only (at most all of them).
    pub fn evaluate_first(
        &self,
        sampler: &dyn Sampler,
        cfg: &TrainConfig,
        levels: usize,
    ) -> Result<EvalResult> {
        let seeds = self.held_out.seeds();
        if levels > seeds.len() {
            return Err(TrainError::config(
                "eval.levels",
                format!(
                    "{levels} levels asked for, the run holds out {} (levels beyond them may have been trained on)",
                    seeds.len()
                ),
            ));
        }
        let seeds = &seeds[..levels];
        let e = &cfg.eval;
        let sampled = play(sampler, cfg, seeds, e.temperature)?;
        let greedy = e
            .greedy
            .then(|| play(sampler, cfg, seeds, 0.0))
            .transpose()?;
        let baselines = if levels == self.held_out.seeds().len() {
            self.baselines.clone()
        } else {
            baselines(cfg, seeds)?
        };
        Ok(EvalResult {
            levels,
            sampled,
            greedy,
            baselines,
        })
    }
}

/// The random and optimal baselines on the levels of `seeds`.
pub fn baselines(cfg: &TrainConfig, seeds: &[u64]) -> Result<Baselines> {
    let steps = cfg.rollout.max_steps;
    let rollouts = cfg.eval.random_rollouts;
    let rng = mix_seed(cfg.seed ^ RANDOM_STREAM, 0);
    let mut random = Some(0.0);
    let mut optimal = Some(0usize);
    for &s in seeds {
        random = match (random, random_success(&cfg.env, s, steps, rollouts, rng)?) {
            (Some(acc), Some(r)) => Some(acc + r),
            _ => None,
        };
        optimal = match (optimal, optimal_success(&cfg.env, s, steps)?) {
            (Some(acc), Some(won)) => Some(acc + usize::from(won)),
            _ => None,
        };
    }
    let n = seeds.len().max(1) as f64;
    Ok(Baselines {
        random_success_rate: random.map(|r| r / n),
        optimal_success_rate: optimal.map(|o| o as f64 / n),
    })
}

/// Plays one episode on each level of `seeds` at `temperature` (0 = greedy).
fn play(
    sampler: &dyn Sampler,
    cfg: &TrainConfig,
    seeds: &[u64],
    temperature: f64,
) -> Result<PolicyEval> {
    let sampling = SamplingParams {
        temperature,
        top_p: cfg.eval.top_p,
        top_k: cfg.eval.top_k,
        max_new_tokens: cfg.max_new_tokens(),
        ..SamplingParams::default()
    };
    let plan = RolloutPlan {
        env: &cfg.env,
        seeds,
        group_size: 1,
        max_steps: cfg.rollout.max_steps,
        prompt: cfg.prompt_style(),
        sampling: &sampling,
        sample_seed: mix_seed(cfg.seed ^ EVAL_STREAM, 0),
    };
    let rollout = collect(sampler, &plan)?;
    let stats = rollout.stats();
    let wins = rollout.trajectories.iter().filter(|t| t.won()).count();
    Ok(PolicyEval {
        temperature,
        success: Rate::wilson(wins, seeds.len()),
        mean_return: stats.mean_return,
        episode_length: stats.episode_length,
        invalid_action_rate: stats.invalid_action_rate,
    })
}

/// Loads the policy of a checkpoint directory (`run_dir/checkpoints/iter-N`) with its
/// configuration.
pub fn load_checkpoint(dir: &Path) -> Result<(Policy, TrainConfig)> {
    let cfg = TrainConfig::from_file(&dir.join("config.toml"))?;
    let policy = initial_policy(&cfg)?;
    checkpoint::load_trainable(dir, &policy)?;
    Ok((policy, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_hand_numbers() {
        // 50 of 100: 0.5 ± 0.0962 (Wilson, z = 1.96), centred at 0.5.
        let r = Rate::wilson(50, 100);
        assert!(
            (r.low - 0.4038).abs() < 1e-3 && (r.high - 0.5962).abs() < 1e-3,
            "{r:?}"
        );
        // 0 of 256 still has a positive upper end.
        let r = Rate::wilson(0, 256);
        assert_eq!((r.rate, r.low), (0.0, 0.0));
        assert!((r.high - 0.0148).abs() < 1e-3, "{r:?}");
        assert_eq!(Rate::wilson(0, 0).high, 1.0);
    }
}
