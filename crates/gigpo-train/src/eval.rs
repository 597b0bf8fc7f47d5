//! Evaluation on held-out levels (docs/environments.md): the policy sampled and greedy, beside
//! a uniformly random policy over the admissible actions and the optimal solver, all on the
//! same levels.
//!
//! The levels are the run's held-out set ([`HeldOut`]): the first `eval.levels` evaluation
//! seeds, which training never resets to (compared by content). Each level is played once per
//! policy mode; success rates carry a 95 % Wilson interval over levels.

use gigpo_env::levels::{optimal_success, random_success, HeldOut};
use gigpo_env::seed::{mix_seed, SeedSplit};
use gigpo_env::spec::EnvSpec;
use gigpo_model::SamplingParams;
use serde::{Deserialize, Serialize};

use crate::checks::{self, at_least_one, at_most};
use crate::error::{Result, TrainError};
use crate::metrics::{names, Record};
use crate::prompt::PromptStyle;
use crate::rollout::{collect, EpisodeStats, RolloutPlan, MAX_EPISODES};
use crate::sampler::Sampler;

/// Stream constant of the evaluation sampling seed.
pub const EVAL_STREAM: u64 = 0x6576_616c; // "eval"
/// Stream constant of the random baseline.
pub const RANDOM_STREAM: u64 = 0x7261_6e64; // "rand"

/// Evaluation on held-out levels (`[eval]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate before the first update and every this many iterations (and after the last);
    /// 0 = never. Default 20.
    pub every: usize,
    /// Held-out levels: the first this many evaluation seeds; training never resets to one of
    /// their levels (compared by content). Every evaluation plays each once. Default 256.
    pub levels: usize,
    /// Temperature of the sampled evaluation. Default 1.0.
    pub temperature: f64,
    /// Nucleus threshold of the sampled evaluation (1.0 = off). Default 1.0.
    pub top_p: f64,
    /// Top-k of the sampled evaluation (0 = off). Default 0.
    pub top_k: usize,
    /// Also play every level greedily (temperature 0). Default true.
    pub greedy: bool,
    /// Episodes of the random baseline per level. Default 32.
    pub random_rollouts: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: 20,
            levels: 256,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            greedy: true,
            random_rollouts: 32,
        }
    }
}

impl EvalConfig {
    /// Checks ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        at_least_one("eval.levels", self.levels)?;
        at_most("eval.levels", self.levels, MAX_EPISODES)?;
        checks::sampling("eval", self.temperature, self.top_p)
    }

    /// The sampling parameters of an evaluation at `temperature` (0 = greedy), with the
    /// answers' length and stop strings of training.
    pub fn sampling(
        &self,
        temperature: f64,
        max_new_tokens: usize,
        stop: &[String],
    ) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            max_new_tokens,
            stop_strings: stop.to_vec(),
        }
    }
}

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
    /// Return, length and invalid actions of the episodes.
    #[serde(flatten)]
    pub stats: EpisodeStats,
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
        put(names::EVAL_RETURN, s.stats.mean_return);
        put(names::EVAL_LENGTH, s.stats.episode_length);
        put(names::EVAL_INVALID, s.stats.invalid_action_rate);
        if let Some(g) = &self.greedy {
            put(names::EVAL_GREEDY_SUCCESS, g.success.rate);
            put(names::EVAL_GREEDY_SUCCESS_LOW, g.success.low);
            put(names::EVAL_GREEDY_SUCCESS_HIGH, g.success.high);
            put(names::EVAL_GREEDY_RETURN, g.stats.mean_return);
            put(names::EVAL_GREEDY_INVALID, g.stats.invalid_action_rate);
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

/// What an evaluation reads of the configuration, with the defaults that depend on the
/// model's profile resolved ([`crate::TrainConfig::eval_plan`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPlan {
    /// The environment.
    pub env: EnvSpec,
    /// The run's base seed (the held-out levels and the evaluation's sampling derive from it).
    pub seed: u64,
    /// The `[eval]` section.
    pub eval: EvalConfig,
    /// Most steps of an episode (`rollout.max_steps`).
    pub max_steps: usize,
    /// Most tokens of one answer (`rollout.max_new_tokens`).
    pub max_new_tokens: usize,
    /// How prompts are built, as in training.
    pub prompt: PromptStyle,
    /// Stop strings of answers, as in training (`rollout.stop`).
    pub stop: Vec<String>,
}

/// The held-out levels of a run and their baselines.
#[derive(Debug, Clone)]
pub struct Evaluator {
    plan: EvalPlan,
    held_out: HeldOut,
    baselines: Baselines,
}

impl Evaluator {
    /// The run's held-out set (`eval.levels` levels) with its baselines.
    pub fn new(plan: EvalPlan) -> Result<Self> {
        let held_out = HeldOut::new(&plan.env, SeedSplit::new(plan.seed), plan.eval.levels)?;
        let baselines = baselines(&plan, held_out.seeds())?;
        Ok(Self {
            plan,
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
    pub fn evaluate(&self, sampler: &dyn Sampler) -> Result<EvalResult> {
        self.evaluate_first(sampler, self.held_out.seeds().len())
    }

    /// [`Evaluator::evaluate`] on the first `levels` held-out levels only (at most all of them).
    pub fn evaluate_first(&self, sampler: &dyn Sampler, levels: usize) -> Result<EvalResult> {
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
        let e = &self.plan.eval;
        let sampled = play(sampler, &self.plan, seeds, e.temperature)?;
        let greedy = e
            .greedy
            .then(|| play(sampler, &self.plan, seeds, 0.0))
            .transpose()?;
        let baselines = if levels == self.held_out.seeds().len() {
            self.baselines.clone()
        } else {
            baselines(&self.plan, seeds)?
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
pub fn baselines(plan: &EvalPlan, seeds: &[u64]) -> Result<Baselines> {
    let steps = plan.max_steps;
    let rollouts = plan.eval.random_rollouts;
    let rng = mix_seed(plan.seed ^ RANDOM_STREAM, 0);
    let mut random = Some(0.0);
    let mut optimal = Some(0usize);
    for &s in seeds {
        random = match (random, random_success(&plan.env, s, steps, rollouts, rng)?) {
            (Some(acc), Some(r)) => Some(acc + r),
            _ => None,
        };
        optimal = match (optimal, optimal_success(&plan.env, s, steps)?) {
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
    plan: &EvalPlan,
    seeds: &[u64],
    temperature: f64,
) -> Result<PolicyEval> {
    let sampling = plan
        .eval
        .sampling(temperature, plan.max_new_tokens, &plan.stop);
    let rollout_plan = RolloutPlan {
        env: &plan.env,
        seeds,
        group_size: 1,
        max_steps: plan.max_steps,
        prompt: plan.prompt.clone(),
        sampling: &sampling,
        sample_seed: mix_seed(plan.seed ^ EVAL_STREAM, 0),
    };
    let rollout = collect(sampler, &rollout_plan)?;
    Ok(PolicyEval {
        temperature,
        success: Rate::wilson(rollout.wins(), seeds.len()),
        stats: rollout.stats(),
    })
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
